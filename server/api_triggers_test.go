package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

func TestTriggerAndRetry(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	p := &promoteBundle{testBundle: b}
	// The repository's clone URL is an HTTP server that records every request:
	// the server must never run git against it (issue 12, high 1: a
	// developer-role trigger made the server run git ls-remote on any URL).
	var gitRequests atomic.Int32
	gitServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gitRequests.Add(1)
		http.Error(w, "no git here", http.StatusNotFound)
	}))
	t.Cleanup(gitServer.Close)
	commit := strings.Repeat("c0", 20)
	ctx := context.Background()
	first, err := b.builds.EnqueueTrigger(ctx, slipway.Trigger{Forge: "github", DeliveryID: "d-1", Event: "push",
		Owner: "Acme", Name: "App", CloneURL: gitServer.URL + "/acme/app.git", Ref: "refs/heads/main", Commit: commit}, testRegistry+"/acme/app")
	require.NoError(t, err)
	// The triggers below push to main too; with superseding on they would cancel
	// the first build, which the retry case needs still queued.
	_, err = b.db.Pool().Exec(ctx, `UPDATE repos SET supersede = false`)
	require.NoError(t, err)
	dev := p.token(t, "dev-1", slipway.RoleDeveloper)
	viewer := p.token(t, "viewer-1", slipway.RoleViewer)

	t.Run("QueuesTheRefUnresolved", func(t *testing.T) {
		resp, out := p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, map[string]any{"ref": "main"})
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		build := out["build"].(map[string]any)
		require.Equal(t, "", build["commit"], "the worker resolves the commit")
		require.Equal(t, "main", build["ref"], "a short name may be a branch or a tag: the worker decides")
		require.Equal(t, "queued", build["state"])
		require.Equal(t, "token dev-1", build["sender"], "the build names the token that triggered it")
		require.NotContains(t, build, "message", "the worker records the commit's subject")
		require.Equal(t, testPublic+"/api/v1/builds/"+strconv.Itoa(int(out["build_id"].(float64))), out["url"])
		got, err := b.builds.FindBuildByID(ctx, int64(out["build_id"].(float64)))
		require.NoError(t, err)
		require.False(t, got.VerifyRef, "a commit the worker resolves needs no check")

		resp, out = p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", testToken, map[string]any{"ref": "refs/tags/v1.0.0"})
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		build = out["build"].(map[string]any)
		require.Equal(t, "refs/tags/v1.0.0", build["ref"])
		require.Equal(t, "admin token (SLIPWAY_ADMIN_TOKEN)", build["sender"])
		require.Zero(t, gitRequests.Load(), "the server ran no git against the clone URL")
	})

	t.Run("TakesACommit", func(t *testing.T) {
		other := strings.Repeat("1", 40)
		resp, out := p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, map[string]any{"ref": "release", "commit": other})
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		require.Equal(t, other, out["build"].(map[string]any)["commit"])
		require.Equal(t, "refs/heads/release", out["build"].(map[string]any)["ref"])
		got, err := b.builds.FindBuildByID(ctx, int64(out["build_id"].(float64)))
		require.NoError(t, err)
		require.True(t, got.VerifyRef, "the worker checks that a user's commit is on the ref")
		require.Zero(t, gitRequests.Load())
	})

	t.Run("AllowedBranches", func(t *testing.T) {
		_, err := b.db.Pool().Exec(ctx, `UPDATE repos SET allowed_branches = '{main,release/*}'`)
		require.NoError(t, err)
		t.Cleanup(func() { _, _ = b.db.Pool().Exec(ctx, `UPDATE repos SET allowed_branches = '{}'`) })
		before := b.count(t, "builds")
		for _, body := range []map[string]any{
			{"ref": "feature"},
			{"ref": "refs/heads/feature"},
			{"ref": "feature", "commit": commit},
			{"ref": "refs/heads/releases", "commit": commit},
		} {
			resp, out := p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, body)
			msg := requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN)
			require.Contains(t, msg, "allowed_branches (main, release/*)", body)
			require.Contains(t, msg, "build one of those branches", body)
		}
		resp, out := p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, map[string]any{"ref": "feature"})
		require.Contains(t, requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN), "refs/tags/feature",
			"a short name may be a tag: the answer says how to ask for one")
		require.Equal(t, before, b.count(t, "builds"), "refusals write nothing")

		for _, ref := range []string{"main", "refs/heads/release/2", "refs/tags/v2.0.0"} {
			resp, out := p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, map[string]any{"ref": ref})
			require.Equal(t, http.StatusCreated, resp.StatusCode, ref, out["_raw"])
		}
	})

	t.Run("Refusals", func(t *testing.T) {
		before := b.count(t, "builds")
		resp, out := p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", viewer, map[string]any{"ref": "main"})
		require.Contains(t, requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN), "developer")
		resp, out = p.send(t, http.MethodPost, "/api/v1/repos/acme/nothing/builds", dev, map[string]any{"ref": "main"})
		require.Contains(t, requireError(t, resp, out, http.StatusNotFound, slipway.ENOTFOUND), "acme/nothing")
		resp, out = p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, map[string]any{"ref": "main", "commit": "abc"})
		require.Contains(t, requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID), "40")
		resp, out = p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, map[string]any{})
		require.Contains(t, requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID), "ref")
		for _, ref := range []string{"a..b", "-uhelp", "main@{1}", "refs/heads/", "x\x00y", strings.Repeat("a", 1001)} {
			resp, out = p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, map[string]any{"ref": ref})
			requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
		}
		require.Equal(t, before, b.count(t, "builds"), "refusals write nothing")
	})

	t.Run("Retry", func(t *testing.T) {
		path := "/api/v1/builds/" + strconv.FormatInt(first.Build.ID, 10) + "/retry"
		resp, out := p.send(t, http.MethodPost, path, dev, nil)
		require.Contains(t, requireError(t, resp, out, http.StatusConflict, slipway.ECONFLICT), "queued")
		_, err := b.db.Pool().Exec(ctx, `UPDATE builds SET state = 'failed', finished_at = $2 WHERE id = $1`, first.Build.ID, time.Now())
		require.NoError(t, err)
		resp, out = p.send(t, http.MethodPost, path, viewer, nil)
		requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN)
		resp, out = p.send(t, http.MethodPost, path, dev, nil)
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		build := out["build"].(map[string]any)
		require.NotEqual(t, float64(first.Build.ID), out["build_id"])
		require.Equal(t, commit, build["commit"])
		require.Equal(t, "refs/heads/main", build["ref"])
		require.Equal(t, "token dev-1", build["sender"])
		resp, out = p.send(t, http.MethodPost, "/api/v1/builds/99999/retry", dev, nil)
		requireError(t, resp, out, http.StatusNotFound, slipway.ENOTFOUND)

		// A branch taken out of allowed_branches since is not built again.
		_, err = b.db.Pool().Exec(ctx, `UPDATE repos SET allowed_branches = '{release/*}'`)
		require.NoError(t, err)
		before := b.count(t, "builds")
		resp, out = p.send(t, http.MethodPost, path, dev, nil)
		require.Contains(t, requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN), `Branch "main" is not in`)
		require.Equal(t, before, b.count(t, "builds"))
	})
}
