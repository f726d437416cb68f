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
	"github.com/slipway-ci/slipway/test/testenv"
)

func TestTriggerAndRetry(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	p := &promoteBundle{testBundle: b}
	base := t.TempDir()
	gitURL := testenv.ServeGit(t, base)
	commit := testenv.NewGitRepo(t, base+"/app.git", map[string]string{"Dockerfile": "FROM scratch\n"})
	ctx := context.Background()
	first, err := b.builds.EnqueueTrigger(ctx, slipway.Trigger{Forge: "github", DeliveryID: "d-1", Event: "push",
		Owner: "Acme", Name: "App", CloneURL: gitURL + "app.git", Ref: "refs/heads/main", Commit: commit}, testRegistry+"/acme/app")
	require.NoError(t, err)
	// The triggers below push to main too; with superseding on they would cancel
	// the first build, which the retry case needs still queued.
	_, err = b.db.Pool().Exec(ctx, `UPDATE repos SET supersede = false`)
	require.NoError(t, err)
	dev := p.token(t, "dev-1", slipway.RoleDeveloper)
	viewer := p.token(t, "viewer-1", slipway.RoleViewer)

	t.Run("ResolvesTheRef", func(t *testing.T) {
		resp, out := p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, map[string]any{"ref": "main"})
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		build := out["build"].(map[string]any)
		require.Equal(t, commit, build["commit"])
		require.Equal(t, "refs/heads/main", build["ref"])
		require.Equal(t, "queued", build["state"])
		require.Equal(t, "dev-1", build["sender"], "the build names who triggered it")
		require.Equal(t, testPublic+"/api/v1/builds/"+strconv.Itoa(int(out["build_id"].(float64))), out["url"])
	})

	t.Run("TakesACommit", func(t *testing.T) {
		other := strings.Repeat("1", 40)
		resp, out := p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, map[string]any{"ref": "release", "commit": other})
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		require.Equal(t, other, out["build"].(map[string]any)["commit"])
		require.Equal(t, "refs/heads/release", out["build"].(map[string]any)["ref"])
	})

	t.Run("Refusals", func(t *testing.T) {
		before := b.count(t, "builds")
		resp, out := p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", viewer, map[string]any{"ref": "main"})
		require.Contains(t, requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN), "developer")
		resp, out = p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, map[string]any{"ref": "no-such-branch"})
		require.Contains(t, requireError(t, resp, out, http.StatusNotFound, slipway.ENOTFOUND), "no-such-branch")
		resp, out = p.send(t, http.MethodPost, "/api/v1/repos/acme/nothing/builds", dev, map[string]any{"ref": "main"})
		require.Contains(t, requireError(t, resp, out, http.StatusNotFound, slipway.ENOTFOUND), "acme/nothing")
		resp, out = p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, map[string]any{"ref": "main", "commit": "abc"})
		require.Contains(t, requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID), "40")
		resp, out = p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, map[string]any{})
		require.Contains(t, requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID), "ref")
		resp, out = p.send(t, http.MethodPost, "/api/v1/repos/acme/app/builds", dev, map[string]any{"ref": "a..b"})
		requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
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
		resp, out = p.send(t, http.MethodPost, "/api/v1/builds/99999/retry", dev, nil)
		requireError(t, resp, out, http.StatusNotFound, slipway.ENOTFOUND)
	})
}
