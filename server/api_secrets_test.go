package server

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
)

const testSecretValue = "the-build-secret-value"

func TestSecretsAPI(t *testing.T) {
	t.Parallel()
	sealer, err := slipway.NewSealer(strings.Repeat("ab", 32))
	require.NoError(t, err)
	b := setup(t, &setupOpts{withDB: func(db *postgres.DB, c *Config) { c.Secrets = postgres.NewSecretService(db, sealer) }})
	t.Cleanup(func() { require.NotContains(t, b.logs.String(), testSecretValue, "the value never reaches the log") })
	_, err = b.builds.EnqueueTrigger(context.Background(), slipway.Trigger{Forge: "github", DeliveryID: "d1", Event: "push",
		Owner: "Acme", Name: "App", CloneURL: "https://github.com/acme/app.git", Ref: "refs/heads/main",
		Commit: strings.Repeat("a", 40)}, "reg/acme/app")
	require.NoError(t, err)
	const path = "/api/v1/repos/acme/app/secrets"

	t.Run("SetListDelete", func(t *testing.T) {
		resp, out := b.send(t, http.MethodPut, path+"/NPM_TOKEN", `{"value": "`+testSecretValue+`"}`)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%v", out)
		require.Equal(t, "NPM_TOKEN", out["name"])
		require.NotContains(t, out["_raw"], testSecretValue)
		resp, out = b.get(t, path)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, out["_raw"], `"NPM_TOKEN"`)
		require.NotContains(t, out["_raw"], testSecretValue)
		resp, out = b.send(t, http.MethodDelete, path+"/NPM_TOKEN", "")
		require.Equal(t, http.StatusNoContent, resp.StatusCode, "%v", out)
		resp, out = b.send(t, http.MethodDelete, path+"/NPM_TOKEN", "")
		requireError(t, resp, out, http.StatusNotFound, "not_found")
	})

	t.Run("BadInputWritesNothing", func(t *testing.T) {
		for _, tc := range []struct {
			path, body string
			status     int
			code       string
		}{
			{path + "/bad-name", `{"value": "` + testSecretValue + `"}`, http.StatusBadRequest, "invalid"},
			{path + "/OK", `{"value": "abc"}`, http.StatusBadRequest, "invalid"},
			{path + "/OK", `{"valu": "` + testSecretValue + `"}`, http.StatusBadRequest, "invalid"},
			{path + "/OK", `{}`, http.StatusBadRequest, "invalid"},
			{path + "/OK", testSecretValue, http.StatusBadRequest, "invalid"},
			{path + "/OK", `{"value": "` + testSecretValue + `"} {}`, http.StatusBadRequest, "invalid"},
			{path + "/OK", `{"value": "` + strings.Repeat("x", 200<<10) + `"}`, http.StatusRequestEntityTooLarge, "too_large"},
			{"/api/v1/repos/acme/nope/secrets/OK", `{"value": "` + testSecretValue + `"}`, http.StatusNotFound, "not_found"},
			{path + "/OK?forge=svn", `{"value": "` + testSecretValue + `"}`, http.StatusBadRequest, "invalid"},
		} {
			resp, out := b.send(t, http.MethodPut, tc.path, tc.body)
			msg := requireError(t, resp, out, tc.status, tc.code)
			require.NotContains(t, msg, testSecretValue, tc.path)
		}
		require.Zero(t, b.count(t, "build_secrets"))
	})

	t.Run("NoStore", func(t *testing.T) {
		t.Parallel()
		plain := setup(t, nil)
		resp, out := plain.send(t, http.MethodGet, path, "")
		requireError(t, resp, out, http.StatusServiceUnavailable, "unavailable")
	})
}
