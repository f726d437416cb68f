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

const testRegistryPassword = "the-repos-own-registry-password"

// TestRegistryAuthAPI: an admin sets, lists and deletes a repository's own
// registry credentials; answers show hosts and usernames only, and no
// answer or log line holds the password.
func TestRegistryAuthAPI(t *testing.T) {
	t.Parallel()
	sealer, err := slipway.NewSealer(strings.Repeat("ab", 32))
	require.NoError(t, err)
	b := setup(t, &setupOpts{withDB: func(db *postgres.DB, c *Config) {
		c.Secrets = postgres.NewSecretService(db, sealer)
		c.RegistryAuths = postgres.NewSecretService(db, sealer)
	}})
	t.Cleanup(func() { require.NotContains(t, b.logs.String(), testRegistryPassword, "never in the log") })
	_, err = b.builds.EnqueueTrigger(context.Background(), slipway.Trigger{Forge: "gitea", DeliveryID: "d1", Event: "push",
		Owner: "acme", Name: "app", CloneURL: "https://git.example.com/acme/app.git", Ref: "refs/heads/main",
		Commit: strings.Repeat("a", 40)}, "reg/acme/app")
	require.NoError(t, err)
	const path = "/api/v1/repos/acme/app/registry-auth"

	resp, out := b.send(t, http.MethodPut, path, `{"registry": "https://GHCR.io", "username": "team-bot", "password": "`+testRegistryPassword+`"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
	require.Equal(t, "ghcr.io", out["registry"])
	require.Equal(t, "team-bot", out["username"])
	require.NotContains(t, out["_raw"], testRegistryPassword)

	resp, out = b.get(t, path)
	require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
	require.NotContains(t, out["_raw"], testRegistryPassword)
	list := out["registry_auths"].([]any)
	require.Len(t, list, 1)
	require.Equal(t, "ghcr.io", list[0].(map[string]any)["registry"])
	require.Equal(t, "team-bot", list[0].(map[string]any)["username"])
	_, hasPassword := list[0].(map[string]any)["password"]
	require.False(t, hasPassword)
	resp, out = b.get(t, "/api/v1/repos/acme/app")
	require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
	require.Equal(t, []any{"ghcr.io"}, out["registry_auths"], "the repository's JSON lists the hosts only")
	require.NotContains(t, out["_raw"], "team-bot")

	for _, bad := range []string{
		`{"registry": "ghcr.io", "username": "x"}`,
		`{"registry": "gh cr.io", "username": "x", "password": "` + testRegistryPassword + `"}`,
		`{"registry": "ghcr.io", "password": "` + testRegistryPassword + `", "auths": {}}`,
		`{"registry": "ghcr.io", "password": "short pw ` + testRegistryPassword + `"}`,
	} {
		resp, out = b.send(t, http.MethodPut, path, bad)
		requireError(t, resp, out, http.StatusBadRequest, "invalid")
		require.NotContains(t, out["_raw"], testRegistryPassword, bad)
	}
	resp, out = b.send(t, http.MethodPut, "/api/v1/repos/acme/nope/registry-auth", `{"registry": "ghcr.io", "password": "`+testRegistryPassword+`"}`)
	requireError(t, resp, out, http.StatusNotFound, "not_found")

	resp, out = b.send(t, http.MethodDelete, path+"/ghcr.io", "")
	require.Equal(t, http.StatusNoContent, resp.StatusCode, out["_raw"])
	resp, out = b.send(t, http.MethodDelete, path+"/ghcr.io", "")
	requireError(t, resp, out, http.StatusNotFound, "not_found")
	resp, out = b.get(t, path)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, out["registry_auths"])
	resp, out = b.get(t, "/api/v1/repos/acme/app")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, []any{}, out["registry_auths"])

	t.Run("not configured", func(t *testing.T) {
		plain := setup(t, nil)
		resp, out := plain.send(t, http.MethodPut, path, `{"registry": "ghcr.io", "password": "`+testRegistryPassword+`"}`)
		requireError(t, resp, out, http.StatusServiceUnavailable, "unavailable")
	})
}
