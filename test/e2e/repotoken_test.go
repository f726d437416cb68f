package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// TestGiteaRepoCloneToken: a private Gitea repository is cloned with ONLY
// its own sealed clone token (the workers have no SLIPWAY_GITEA_TOKEN); the
// token is in no log, API answer or test container environment. A token
// the forge refuses fails the next build once, naming the repository's
// clone token.
func TestGiteaRepoCloneToken(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	g := testenv.StartGitea(t)
	s := newStack(t, "SLIPWAY_GITEA_WEBHOOK_SECRET="+giteaSecret, "SLIPWAY_GITEA_API_URL="+g.URL+"api/v1",
		"SLIPWAY_SECRET_KEY=0000000000000000000000000000000000000000000000000000000000000001")
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-gitea-repo-token")
	cloneURL := g.CreateRepo("token-app", true)
	code, out := s.post("/repos", adminToken, map[string]any{"forge": "gitea", "owner": g.User, "name": "token-app",
		"clone_url": cloneURL, "platforms": []string{"linux/amd64"}})
	require.Equal(t, http.StatusCreated, code, out["_raw"])
	code, out = s.sendJSON(http.MethodPut, "/repos/"+g.User+"/token-app/clone-token", adminToken, map[string]string{"token": g.Token})
	require.Equal(t, http.StatusNoContent, code, out["_raw"])
	code, raw := s.api("/repos/"+g.User+"/token-app", nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(raw), `"has_clone_token":true`)
	require.NotContains(t, string(raw), g.Token)
	g.AddWebhook("token-app", s.url+"/webhooks/gitea", giteaSecret)

	stop, leaks := make(chan struct{}), make(chan string, 1)
	go func() { leaks <- watchCmdlines(stop, g.Token) }()
	g.Push("token-app", "main", map[string]string{
		"Dockerfile":   dockerfile(base, "COPY . /src\n"),
		".slipway.yml": "tests:\n  - name: environment\n    run: env\n",
	})
	id := s.firstBuild(g, "token-app")
	b := s.waitDone(id)
	close(stop)
	leaked := <-leaks
	log := s.logs(id)
	require.Equal(t, slipway.BuildSucceeded, b.State, "%s\n%s", b.Error, log)
	require.Contains(t, log, "PATH=", "the environment test printed its environment")
	require.NotContains(t, log, g.Token, "the token is not in the log (nor in the test container's env)")
	require.Empty(t, leaked, "the token was on a command line")
	_, raw = s.api(fmt.Sprintf("/builds/%d", id), nil)
	require.NotContains(t, string(raw), g.Token)
	img, err := remote.Image(mustRef(t, b.Image+"@"+b.IndexDigest), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	require.NoError(t, err)
	files := imageFiles(t, img, "src/")
	require.Contains(t, files, "src/.git/config", "the checkout's .git/config is in the image (COPY . /src)")
	for name, content := range files {
		require.NotContains(t, content, g.Token, "%s of the checkout", name)
	}

	// A token the forge refuses: a user error, once, naming the setting.
	code, out = s.sendJSON(http.MethodPut, "/repos/"+g.User+"/token-app/clone-token", adminToken,
		map[string]string{"token": "0123456789abcdef0123456789abcdef01234567"})
	require.Equal(t, http.StatusNoContent, code, out["_raw"])
	g.Push("token-app", "refused", map[string]string{"Dockerfile": dockerfile(base, "")})
	var second int64
	for deadline := time.Now().Add(2 * time.Minute); second == 0; {
		var list struct{ Builds []slipway.Build }
		s.api("/builds?repo="+g.User+"/token-app", &list)
		for _, lb := range list.Builds {
			if lb.ID != id {
				second = lb.ID
			}
		}
		require.True(t, time.Now().Before(deadline), "no second build after the push")
		time.Sleep(250 * time.Millisecond) // bounded poll of another process
	}
	b = s.waitDone(second)
	require.Equal(t, slipway.BuildFailed, b.State)
	require.Contains(t, b.Error, "checkout failed")
	require.Contains(t, b.Error, "the repository's clone token")
	require.Equal(t, 1, b.Attempt, "a refused credential is not retried")
}
