package server

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
)

func TestIntegrationCallback(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	p := &promoteBundle{testBundle: b}
	ctx := context.Background()
	res, err := b.builds.EnqueueTrigger(ctx, slipway.Trigger{Forge: "github", DeliveryID: "d-1", Event: "push",
		Owner: "acme", Name: "app", CloneURL: "https://github.com/acme/app.git", Ref: "refs/heads/main",
		Commit: strings.Repeat("ab", 20)}, testRegistry+"/acme/app")
	require.NoError(t, err)
	id := res.Build.ID
	path := "/api/v1/builds/" + strconv.FormatInt(id, 10) + "/tests"
	integrations := postgres.NewIntegrationService(b.db)
	secret := slipway.NewTokenSecret()

	resp, out := p.send(t, http.MethodPost, path, secret, map[string]any{"passed": true})
	requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)

	require.NoError(t, integrations.StartIntegration(ctx, id, secret, time.Now().Add(time.Minute)))
	for name, tc := range map[string]struct {
		token  string
		body   any
		status int
		code   string
	}{
		"NoToken":     {"", map[string]any{"passed": true}, http.StatusUnauthorized, slipway.EUNAUTHORIZED},
		"WrongToken":  {slipway.NewTokenSecret(), map[string]any{"passed": true}, http.StatusUnauthorized, slipway.EUNAUTHORIZED},
		"AdminToken":  {testToken, map[string]any{"passed": true}, http.StatusUnauthorized, slipway.EUNAUTHORIZED},
		"UnknownKey":  {secret, map[string]any{"passed": true, "verdict": "ok"}, http.StatusBadRequest, slipway.EINVALID},
		"NamelessRun": {secret, map[string]any{"passed": true, "tests": []any{map[string]any{"passed": true}}}, http.StatusBadRequest, slipway.EINVALID},
	} {
		t.Run(name, func(t *testing.T) {
			resp, out := p.send(t, http.MethodPost, path, tc.token, tc.body)
			requireError(t, resp, out, tc.status, tc.code)
		})
	}
	got, err := integrations.FindIntegrationResult(ctx, id)
	require.NoError(t, err)
	require.Nil(t, got, "nothing recorded by refused calls")

	resp, out = p.send(t, http.MethodPost, path, secret, map[string]any{"passed": false, "message": "checkout flow broken"})
	require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
	got, err = integrations.FindIntegrationResult(ctx, id)
	require.NoError(t, err)
	require.Equal(t, &slipway.IntegrationResult{Passed: false, Message: "checkout flow broken"}, got)

	resp, out = p.send(t, http.MethodPost, path, secret, map[string]any{"passed": true})
	require.Contains(t, requireError(t, resp, out, http.StatusConflict, slipway.ECONFLICT), "once")

	// An expired callback no longer opens.
	late := slipway.NewTokenSecret()
	require.NoError(t, integrations.StartIntegration(ctx, id, late, time.Now().Add(-time.Second)))
	resp, out = p.send(t, http.MethodPost, path, late, map[string]any{"passed": true})
	require.Contains(t, requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED), "expired")
	require.NotContains(t, b.logs.String(), secret, "the callback token is never logged")
}
