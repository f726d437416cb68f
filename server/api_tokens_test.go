package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

func TestTokensAndRoles(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	p := &promoteBundle{testBundle: b}

	t.Run("CreateShowsTheSecretOnceAndStoresItsHash", func(t *testing.T) {
		resp, out := p.send(t, http.MethodPost, "/api/v1/tokens", testToken, map[string]any{"name": "ci-bot", "role": "developer"})
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		secret := out["token"].(string)
		require.True(t, strings.HasPrefix(secret, slipway.TokenPrefix))
		require.Equal(t, "ci-bot", out["name"])
		require.Equal(t, "developer", out["role"])

		var stored []byte
		require.NoError(t, b.db.Pool().QueryRow(context.Background(), `SELECT token_sha256 FROM api_tokens WHERE name = 'ci-bot'`).Scan(&stored))
		require.Equal(t, slipway.HashToken(secret), stored, "only the SHA-256 is stored")
		var n int
		require.NoError(t, b.db.Pool().QueryRow(context.Background(),
			`SELECT count(*) FROM api_tokens WHERE position($1::bytea IN token_sha256) > 0`, []byte(secret)).Scan(&n))
		require.Zero(t, n)

		resp, out = p.send(t, http.MethodGet, "/api/v1/tokens", testToken, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.NotContains(t, out["_raw"], secret, "the list never shows secrets")
		require.Nil(t, out["tokens"].([]any)[0].(map[string]any)["last_used_at"])

		// A use records the time.
		resp, out = p.send(t, http.MethodGet, "/api/v1/builds", secret, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		resp, out = p.send(t, http.MethodGet, "/api/v1/tokens", testToken, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.NotNil(t, out["tokens"].([]any)[0].(map[string]any)["last_used_at"])

		resp, out = p.send(t, http.MethodPost, "/api/v1/tokens", testToken, map[string]any{"name": "CI-bot", "role": "viewer"})
		require.Contains(t, requireError(t, resp, out, http.StatusConflict, slipway.ECONFLICT), "CI-bot")
	})

	t.Run("BadInputWritesNothing", func(t *testing.T) {
		var before int
		require.NoError(t, b.db.Pool().QueryRow(context.Background(), `SELECT count(*) FROM api_tokens`).Scan(&before))
		for _, body := range []map[string]any{
			{"name": "x", "role": "root"},
			{"name": "", "role": "viewer"},
			{"name": "has space", "role": "viewer"},
			{"name": "ok", "role": "viewer", "extra": true},
		} {
			resp, out := p.send(t, http.MethodPost, "/api/v1/tokens", testToken, body)
			requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
		}
		var after int
		require.NoError(t, b.db.Pool().QueryRow(context.Background(), `SELECT count(*) FROM api_tokens`).Scan(&after))
		require.Equal(t, before, after)
	})

	t.Run("EveryRouteChecksItsRole", func(t *testing.T) {
		tokens := map[slipway.Role]string{}
		for _, r := range slipway.Roles {
			resp, out := p.send(t, http.MethodPost, "/api/v1/tokens", testToken, map[string]any{"name": "role-" + string(r), "role": r})
			require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
			tokens[r] = out["token"].(string)
		}
		routes := []struct {
			method, path string
			need         slipway.Role
		}{
			{http.MethodGet, "/api/v1/builds", slipway.RoleViewer},
			{http.MethodGet, "/api/v1/builds/1", slipway.RoleViewer},
			{http.MethodGet, "/api/v1/builds/1/logs", slipway.RoleViewer},
			{http.MethodGet, "/api/v1/promotions", slipway.RoleViewer},
			{http.MethodGet, "/api/v1/tokens", slipway.RoleAdmin},
			{http.MethodPost, "/api/v1/tokens", slipway.RoleAdmin},
			{http.MethodDelete, "/api/v1/tokens/999", slipway.RoleAdmin},
			{http.MethodPut, "/api/v1/repos/acme/app/clone-token", slipway.RoleAdmin},
			{http.MethodDelete, "/api/v1/repos/acme/app/clone-token", slipway.RoleAdmin},
			{http.MethodPut, "/api/v1/repos/acme/app/deploy-key", slipway.RoleAdmin},
			{http.MethodDelete, "/api/v1/repos/acme/app/deploy-key", slipway.RoleAdmin},
		}
		for _, rt := range routes {
			resp, out := p.send(t, rt.method, rt.path, "", nil)
			msg := requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
			require.Contains(t, msg, string(rt.need), "%s %s", rt.method, rt.path)
			resp, out = p.send(t, rt.method, rt.path, "slw_unknown", nil)
			msg = requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
			require.Contains(t, msg, string(rt.need))
			for _, r := range slipway.Roles {
				resp, out := p.send(t, rt.method, rt.path, tokens[r], nil)
				if r.Allows(rt.need) {
					require.NotContains(t, []int{401, 403}, resp.StatusCode, "%s %s as %s: %s", rt.method, rt.path, r, out["_raw"])
				} else {
					msg := requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN)
					require.Contains(t, msg, "needs the "+string(rt.need)+" role", "%s %s as %s", rt.method, rt.path, r)
				}
			}
		}
	})

	t.Run("DeletedTokenStopsWorking", func(t *testing.T) {
		resp, out := p.send(t, http.MethodPost, "/api/v1/tokens", testToken, map[string]any{"name": "short-lived", "role": "admin"})
		require.Equal(t, http.StatusCreated, resp.StatusCode)
		secret := out["token"].(string)
		id := int64(out["id"].(float64))
		resp, _ = p.send(t, http.MethodGet, "/api/v1/tokens", secret, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		resp, out = p.send(t, http.MethodDelete, "/api/v1/tokens/"+strconv.FormatInt(id, 10), testToken, nil)
		require.Equal(t, http.StatusNoContent, resp.StatusCode, out["_raw"])
		resp, out = p.send(t, http.MethodGet, "/api/v1/builds", secret, nil)
		requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
		resp, out = p.send(t, http.MethodDelete, "/api/v1/tokens/"+strconv.FormatInt(id, 10), testToken, nil)
		requireError(t, resp, out, http.StatusNotFound, slipway.ENOTFOUND)
		var list struct{ Tokens []slipway.Token }
		resp, out = p.send(t, http.MethodGet, "/api/v1/tokens", testToken, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.NoError(t, json.Unmarshal([]byte(out["_raw"].(string)), &list))
		for _, tk := range list.Tokens {
			require.NotEqual(t, "short-lived", tk.Name)
		}
	})
}
