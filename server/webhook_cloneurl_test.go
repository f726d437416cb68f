package server

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// TestCloneURLIsASetting: a signed delivery never chooses what code a
// repository's builds run. A repository first seen in a delivery is cloned
// from its forge's base URL and its path; a registered one from its stored
// clone URL, which no delivery changes.
func TestCloneURLIsASetting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	evil := func(body []byte) []byte {
		return []byte(strings.Replace(string(body), `"clone_url": "https://github.com/octo-org/hello-app.git"`,
			`"clone_url": "https://evil.example/mallory/backdoor.git"`, 1))
	}
	body := evil(readFixture(t, "push-branch.json"))

	t.Run("NewRepositoryFromTheForgeURL", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		resp, out := b.post(t, delivery{event: "push", id: "d-1", body: body})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		build, err := b.builds.FindBuildByID(ctx, buildIDOf(t, out))
		require.NoError(t, err)
		require.Equal(t, "https://github.com/octo-org/hello-app.git", build.CloneURL)
		repo, err := b.repos.FindRepo(ctx, slipway.RepoKey{Forge: "github", Owner: "octo-org", Name: "hello-app"})
		require.NoError(t, err)
		require.Equal(t, "https://github.com/octo-org/hello-app.git", repo.CloneURL)
	})

	t.Run("RegisteredRepositoryKeepsItsURL", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		_, err := b.repos.CreateRepo(ctx, slipway.RepoCreate{Forge: "github", Owner: "octo-org", Name: "hello-app",
			CloneURL: "https://git.internal.example/mirror/hello-app.git", Image: testRegistry + "/octo-org/hello-app"})
		require.NoError(t, err)
		for i, d := range []delivery{{event: "push", id: "d-evil", body: body}, {event: "push", id: "d-plain", body: readFixture(t, "push-branch.json")}} {
			resp, out := b.post(t, d)
			require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
			build, err := b.builds.FindBuildByID(ctx, buildIDOf(t, out))
			require.NoError(t, err)
			require.Equal(t, "https://git.internal.example/mirror/hello-app.git", build.CloneURL, "delivery %d", i)
		}
		repo, err := b.repos.FindRepo(ctx, slipway.RepoKey{Forge: "github", Owner: "octo-org", Name: "hello-app"})
		require.NoError(t, err)
		require.Equal(t, "https://git.internal.example/mirror/hello-app.git", repo.CloneURL, "no delivery changes the setting")
	})

	t.Run("NoForgeURL", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &setupOpts{config: func(c *Config) { c.GitHubURL = "" }})
		resp, out := b.post(t, delivery{event: "push", id: "d-1", body: body})
		msg := requireError(t, resp, out, http.StatusServiceUnavailable, slipway.EUNAVAILABLE)
		require.Contains(t, msg, "SLIPWAY_GITHUB_URL")
		require.Contains(t, msg, "POST /api/v1/repos")
		b.requireNoRows(t)
	})

	t.Run("DevelopmentTakesThePayloadURL", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &setupOpts{config: func(c *Config) { c.CloneURLFromPayload = true }})
		resp, out := b.post(t, delivery{event: "push", id: "d-1", body: body})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		build, err := b.builds.FindBuildByID(ctx, buildIDOf(t, out))
		require.NoError(t, err)
		require.Equal(t, "https://evil.example/mallory/backdoor.git", build.CloneURL)
		// Even then, a registered repository keeps its URL.
		resp, out = b.post(t, delivery{event: "push", id: "d-2", body: []byte(strings.Replace(string(body), "backdoor", "other", 1))})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		build, err = b.builds.FindBuildByID(ctx, buildIDOf(t, out))
		require.NoError(t, err)
		require.Equal(t, "https://evil.example/mallory/backdoor.git", build.CloneURL)
	})
}
