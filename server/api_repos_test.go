package server

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
)

// send sends an API request with the admin token.
func (b *testBundle) send(t *testing.T, method, path, body string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, b.srv.URL+path, bytes.NewBufferString(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	return do(t, b.srv.Client(), req)
}

func TestReposAPI(t *testing.T) {
	t.Parallel()
	const create = `{"forge": "gitlab", "owner": "mike", "name": "diaspora", "clone_url": "https://gitlab.example/mike/diaspora.git",
		"webhook_secret": "` + testRepoSecret + `", "platforms": ["linux/amd64"], "allowed_branches": ["main", "release/*"],
		"max_running": 3, "supersede": false}`

	t.Run("Lifecycle", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		resp, out := b.send(t, http.MethodPost, "/api/v1/repos", create)
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		require.Equal(t, testPublic+"/api/v1/repos/mike/diaspora", resp.Header.Get("Location"))
		require.Equal(t, true, out["has_webhook_secret"])
		require.Equal(t, testRegistry+"/mike/diaspora", out["image"])
		require.Equal(t, []any{"linux/amd64"}, out["platforms"])
		require.Equal(t, []any{"main", "release/*"}, out["allowed_branches"])
		require.Equal(t, float64(3), out["max_running"])
		require.Equal(t, false, out["supersede"])

		var sealed []byte
		require.NoError(t, b.db.Pool().QueryRow(t.Context(), "SELECT webhook_secret_enc FROM repos").Scan(&sealed))
		require.NotContains(t, string(sealed), testRepoSecret, "the secret is stored sealed")

		resp, out = b.send(t, http.MethodPost, "/api/v1/repos", create)
		requireError(t, resp, out, http.StatusConflict, slipway.ECONFLICT)

		resp, out = b.send(t, http.MethodGet, "/api/v1/repos/Mike/Diaspora", "")
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.Equal(t, "diaspora", out["name"])

		resp, out = b.send(t, http.MethodPatch, "/api/v1/repos/mike/diaspora",
			`{"image": "registry.test:5000/other/img", "platforms": [], "max_running": 1, "webhook_secret": ""}`)
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.Equal(t, "registry.test:5000/other/img", out["image"])
		require.Equal(t, []any{}, out["platforms"])
		require.Equal(t, []any{"main", "release/*"}, out["allowed_branches"], "absent fields stay")
		require.Equal(t, float64(1), out["max_running"])
		require.Equal(t, false, out["has_webhook_secret"])

		resp, out = b.send(t, http.MethodGet, "/api/v1/repos", "")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Len(t, out["repos"], 1)

		resp, _ = b.send(t, http.MethodDelete, "/api/v1/repos/mike/diaspora", "")
		require.Equal(t, http.StatusNoContent, resp.StatusCode)
		resp, out = b.send(t, http.MethodGet, "/api/v1/repos/mike/diaspora", "")
		requireError(t, resp, out, http.StatusNotFound, slipway.ENOTFOUND)
		resp, out = b.send(t, http.MethodDelete, "/api/v1/repos/mike/diaspora", "")
		requireError(t, resp, out, http.StatusNotFound, slipway.ENOTFOUND)
		// No answer and no log line ever held the secret.
		require.NotContains(t, b.logs.String(), testRepoSecret)
	})
	t.Run("SameNameOnTwoForges", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		for _, f := range []string{"github", "gitea"} {
			resp, out := b.send(t, http.MethodPost, "/api/v1/repos",
				`{"forge": "`+f+`", "owner": "o", "name": "n", "clone_url": "https://x.example/o/n.git"}`)
			require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		}
		resp, out := b.send(t, http.MethodGet, "/api/v1/repos/o/n", "")
		msg := requireError(t, resp, out, http.StatusConflict, slipway.ECONFLICT)
		require.Contains(t, msg, "?forge=")
		resp, out = b.send(t, http.MethodGet, "/api/v1/repos/o/n?forge=gitea", "")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "gitea", out["forge"])
	})
	t.Run("SCPLikeCloneURL", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		resp, out := b.send(t, http.MethodPost, "/api/v1/repos", `{"forge": "github", "owner": "acme", "name": "app", "clone_url": "git@github.com:acme/app.git"}`)
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		require.Equal(t, "ssh://git@github.com/acme/app.git", out["clone_url"], "stored as the same address in ssh:// form")
		resp, out = b.send(t, http.MethodPost, "/api/v1/repos", `{"forge": "github", "owner": "acme", "name": "abs", "clone_url": "git@github.com:/srv/abs.git"}`)
		requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
	})
	t.Run("DerivedCloneURLAndGeneratedSecret", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		resp, out := b.send(t, http.MethodPost, "/api/v1/repos", `{"forge": "gitlab", "owner": "grp/sub", "name": "app", "generate_webhook_secret": true}`)
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		require.Equal(t, "https://gitlab.example.com/grp/sub/app.git", out["clone_url"], "from SLIPWAY_GITLAB_URL")
		require.Equal(t, "http://slipway.test:8080/webhooks/gitlab", out["webhook_url"])
		secret, _ := out["webhook_secret"].(string)
		require.Regexp(t, `^[0-9a-f]{64}$`, secret)
		require.Equal(t, true, out["has_webhook_secret"])
		// Shown once: reading the repository never shows it again.
		resp, out = b.send(t, http.MethodGet, "/api/v1/repos/grp%2Fsub/app", "")
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.NotContains(t, out["_raw"], secret)
		_, stored, err := b.repos.FindRepoWebhookSecret(context.Background(), "gitlab", "grp/sub", "app")
		require.NoError(t, err)
		require.Equal(t, secret, stored)
		// A PATCH that generates one replaces it.
		resp, out = b.send(t, http.MethodPatch, "/api/v1/repos/grp%2Fsub/app", `{"generate_webhook_secret": true}`)
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.NotEqual(t, secret, out["webhook_secret"])
		require.NotContains(t, b.logs.String(), secret, "no secret in the log")

		// Registered ahead, it can be built through the API before any push.
		resp, out = b.send(t, http.MethodPost, "/api/v1/repos/grp%2Fsub/app/builds", `{"ref": "main"}`)
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		build, err := b.builds.FindBuildByID(context.Background(), int64(out["build_id"].(float64)))
		require.NoError(t, err)
		require.Equal(t, "https://gitlab.example.com/grp/sub/app.git", build.CloneURL)
		require.Equal(t, "gitlab", build.Forge)
	})
	t.Run("BadInputWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		tests := map[string]string{
			`{`: "Malformed JSON",
			``:  "JSON object",
			`{"forge": "svn", "owner": "o", "name": "n", "clone_url": "https://x/o/n"}`:                                                           "forge must be one of",
			`{"forge": "github", "owner": "o/x", "name": "n", "clone_url": "https://x/o/n"}`:                                                      "owner must be",
			`{"forge": "github", "owner": "o", "name": "n", "webhook_secret": "mine", "generate_webhook_secret": true}`:                           "not both",
			`{"forge": "github", "owner": "o", "name": "n", "clone_url": "ext::sh"}`:                                                              "clone_url",
			`{"forge": "github", "owner": "o", "name": "n", "clone_url": "https://x/o/n", "image": "Bad:tag"}`:                                    "image must be",
			`{"forge": "github", "owner": "o", "name": "n", "clone_url": "https://x/o/n", "platforms": ["linux"]}`:                                "platforms[0]",
			`{"forge": "github", "owner": "o", "name": "n", "clone_url": "https://x/o/n", "allowed_branches": ["[bad"]}`:                          "allowed_branches[0]",
			`{"forge": "github", "owner": "o", "name": "n", "clone_url": "https://x/o/n", "max_running": 0}`:                                      "max_running",
			`{"forge": "github", "owner": "o", "name": "n", "clone_url": "https://x/o/n", "webhok_secret": "typo"}`:                               "unknown field",
			`{"forge": "github", "owner": "o", "name": "n", "clone_url": "https://x/o/n"} {}`:                                                     "one JSON object",
			`{"forge": "github", "owner": "o", "name": "n", "clone_url": "https://x/o/n", "webhook_secret": "` + strings.Repeat("s", 1025) + `"}`: "webhook_secret",
		}
		for body, want := range tests {
			resp, out := b.send(t, http.MethodPost, "/api/v1/repos", body)
			msg := requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
			require.Contains(t, msg, want, "body %s", body)
		}
		resp, out := b.send(t, http.MethodPost, "/api/v1/repos", `{"forge":"github","owner":"o","name":"n","clone_url":"https://x/o/n","image":"`+strings.Repeat("a", 70<<10)+`"}`)
		requireError(t, resp, out, http.StatusRequestEntityTooLarge, slipway.ETOOLARGE)
		resp, out = b.send(t, http.MethodPatch, "/api/v1/repos/o/n", `{"owner": "x"}`)
		requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
		b.requireNoRows(t)
	})
	t.Run("SecretNeedsKey", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		// The same database, served without SLIPWAY_SECRET_KEY.
		srv := httptest.NewServer(New(zerolog.New(zerolog.NewTestWriter(t)), Config{AdminToken: testToken, Registry: testRegistry},
			b.builds, nil, Services{Repos: postgres.NewRepoService(b.db, nil)}))
		t.Cleanup(srv.Close)
		b.srv = srv
		resp, out := b.send(t, http.MethodPost, "/api/v1/repos", create)
		msg := requireError(t, resp, out, http.StatusServiceUnavailable, slipway.EUNAVAILABLE)
		require.Contains(t, msg, "SLIPWAY_SECRET_KEY")
		b.requireNoRows(t)
	})
	t.Run("NeedsToken", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			req, err := http.NewRequest(m, b.srv.URL+"/api/v1/repos", strings.NewReader(create))
			require.NoError(t, err)
			resp, out := do(t, b.srv.Client(), req)
			requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
		}
		for _, m := range []string{http.MethodGet, http.MethodPatch, http.MethodDelete} {
			req, err := http.NewRequest(m, b.srv.URL+"/api/v1/repos/mike/diaspora", strings.NewReader(`{}`))
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer wrong-token")
			resp, out := do(t, b.srv.Client(), req)
			requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
		}
		b.requireNoRows(t)
	})
}
