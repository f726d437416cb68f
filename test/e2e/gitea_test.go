package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// TestGiteaPrivateRepository is the round trip with a real forge: a private
// repository on a real Gitea, a real `git push` over HTTP, the webhook Gitea
// itself signs and sends, the worker cloning with the Gitea token, a build
// of both platforms whose tests pass (pulled from Gitea's own container
// registry, token auth), pushed there, and the commit status read back from
// Gitea's API. The token is in no log, API answer, command line (every
// process's cmdline is watched during the build), checked-out file in the
// image, or test container environment.
func TestGiteaPrivateRepository(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	g := testenv.StartGitea(t)
	// Images go to Gitea's own container registry, which asks for a login
	// (Bearer tokens from its /v2/token for basic credentials): a Docker
	// config.json as `docker login` writes it.
	giteaHost := strings.TrimSuffix(strings.TrimPrefix(g.URL, "http://"), "/")
	dockerConfig := filepath.Join(t.TempDir(), "config.json")
	auths, err := json.Marshal(map[string]any{"auths": map[string]any{
		giteaHost: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(g.User + ":" + g.Token))},
	}})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dockerConfig, auths, 0o600))
	s := newStack(t, "SLIPWAY_GITEA_WEBHOOK_SECRET="+giteaSecret,
		"SLIPWAY_GITEA_API_URL="+g.URL+"api/v1", "SLIPWAY_GITEA_TOKEN="+g.Token,
		"SLIPWAY_REGISTRY="+giteaHost, "SLIPWAY_DOCKER_CONFIG="+dockerConfig,
		// The real forge: the clone URL comes from its base URL, as in production.
		"SLIPWAY_DEV_CLONE_URL_FROM_PAYLOAD=false")
	giteaAuth := remote.WithAuth(&authn.Basic{Username: g.User, Password: g.Token})
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-gitea")

	cloneURL := g.CreateRepo("private-app", true)
	// Private: git without a credential is refused.
	anon := exec.Command("git", "ls-remote", cloneURL)
	anon.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false")
	out, err := anon.CombinedOutput()
	require.Error(t, err, "an anonymous clone of a private repository must fail: %s", out)

	g.AddWebhook("private-app", s.url+"/webhooks/gitea", giteaSecret)

	// Watch every process's command line while the build runs.
	stop := make(chan struct{})
	var (
		mu     sync.Mutex
		leaked []string
	)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond): // sampling another process's state
			}
			procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range procs {
				b, err := os.ReadFile(p)
				if err == nil && strings.Contains(string(b), g.Token) {
					mu.Lock()
					leaked = append(leaked, strings.ReplaceAll(string(b), "\x00", " "))
					mu.Unlock()
				}
			}
		}
	})

	commit := g.Push("private-app", "main", map[string]string{
		"Dockerfile": dockerfile(base, "COPY . /src\n"),
		".slipway.yml": archTest + `  - name: environment
    run: env
`,
	})

	// Gitea sends the webhook on its own; the build appears.
	id := s.firstBuild(g, "private-app")
	b := s.waitDone(id)
	close(stop)
	wg.Wait()
	log := s.logs(id)
	require.Equal(t, slipway.BuildSucceeded, b.State, "%s\n%s", b.Error, log)
	require.Equal(t, commit, b.Commit)
	require.Equal(t, slipway.ForgeGitea, b.Forge)
	require.Len(t, b.Tests, 4, "two tests on two platforms")
	require.Equal(t, giteaHost+"/"+g.User+"/private-app", b.Image, "pushed to Gitea's registry")
	idx, err := remote.Index(mustRef(t, b.Image+":main"), giteaAuth)
	require.NoError(t, err)
	d, err := idx.Digest()
	require.NoError(t, err)
	require.Equal(t, b.IndexDigest, d.String(), "Gitea's registry has the tested index under main")

	require.Empty(t, leaked, "the token was on a command line")
	require.NotContains(t, log, g.Token, "the token is not in the log")
	require.Contains(t, log, "PATH=", "the environment test ran and printed its environment")
	_, raw := s.api(fmt.Sprintf("/builds/%d", id), nil)
	require.NotContains(t, string(raw), g.Token, "the token is not in the API answer")
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := remote.Image(mustRef(t, b.Image+"@"+b.IndexDigest), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: arch}), giteaAuth)
		require.NoError(t, err)
		files := imageFiles(t, img, "src/")
		require.Contains(t, files, "src/.git/config", "the checkout's .git/config is in the image (COPY . /src)")
		for name, content := range files {
			require.NotContains(t, content, g.Token, "%s of the checkout in the %s image", name, arch)
		}
	}

	// The commit status, as Gitea has it.
	deadline := time.Now().Add(time.Minute)
	for {
		var statuses []giteaStatus
		g.API(http.MethodGet, "repos/"+g.User+"/private-app/statuses/"+commit, nil, &statuses)
		// Gitea lists every status the commit got (pending, then success), in
		// an order its API does not promise: look for the final one.
		if i := slices.IndexFunc(statuses, func(st giteaStatus) bool { return st.State == "success" }); i >= 0 {
			require.Equal(t, "slipway/build", statuses[i].Context)
			require.Contains(t, statuses[i].Target, fmt.Sprintf("/builds/%d", id))
			break
		}
		if time.Now().After(deadline) {
			raw, _ := json.Marshal(statuses)
			t.Fatalf("no success status on %s in Gitea after a minute: %s", commit, raw)
		}
		time.Sleep(250 * time.Millisecond) // bounded poll of another process
	}
}

// giteaStatus is one commit status as Gitea's API lists it.
type giteaStatus struct {
	State   string `json:"status"`
	Context string `json:"context"`
	Target  string `json:"target_url"`
}

// TestGiteaWrongToken: a worker whose Gitea token the forge refuses fails
// the build once, at checkout, with a message naming the setting; it is a
// user error, not retried as an outage.
func TestGiteaWrongToken(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	g := testenv.StartGitea(t)
	s := newStack(t, "SLIPWAY_GITEA_WEBHOOK_SECRET="+giteaSecret,
		"SLIPWAY_GITEA_API_URL="+g.URL+"api/v1", "SLIPWAY_GITEA_TOKEN=0123456789abcdef0123456789abcdef01234567")
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-gitea-denied")
	g.CreateRepo("denied-app", true)
	g.AddWebhook("denied-app", s.url+"/webhooks/gitea", giteaSecret)
	g.Push("denied-app", "main", map[string]string{"Dockerfile": dockerfile(base, "")})

	b := s.waitDone(s.firstBuild(g, "denied-app"))
	require.Equal(t, slipway.BuildFailed, b.State)
	require.Contains(t, b.Error, "checkout failed")
	require.Contains(t, b.Error, "SLIPWAY_GITEA_TOKEN")
	require.Equal(t, 1, b.Attempt, "a refused credential is not retried")
	require.NotContains(t, s.logs(b.ID), "0123456789abcdef0123456789abcdef01234567")
}

// firstBuild waits up to 2 minutes for the first build of the Gitea admin's
// repository name, which Gitea's own webhook delivery makes, and returns its id.
func (s *stack) firstBuild(g *testenv.Gitea, name string) int64 {
	s.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var list struct{ Builds []slipway.Build }
		code, body := s.api("/builds?repo="+url.QueryEscape(g.User+"/"+name), &list)
		require.Equal(s.t, http.StatusOK, code, "%s", body)
		if len(list.Builds) > 0 {
			return list.Builds[0].ID
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no build of %s 2 minutes after the push; gitea log:\n%s", name, g.Log())
		}
		time.Sleep(250 * time.Millisecond) // bounded poll of another process
	}
}
