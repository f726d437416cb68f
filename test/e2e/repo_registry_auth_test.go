package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/registry"
	"github.com/slipway-ci/slipway/test/testenv"
)

// TestRepoRegistryAuth: a repository that pushes to a registry needing a
// login (htpasswd, TLS with a CA of its own) builds and tests on two
// platforms with ONLY its own sealed registry credential (PUT
// /api/v1/repos/{owner}/{name}/registry-auth; the stack has no
// SLIPWAY_DOCKER_CONFIG): FROM pull, push, cache, verify, test pulls and
// tags; the server promotes with it too. The index is readable with that
// credential. A fork's pull request of the same repository never gets it
// (the registry refuses the anonymous build). A second repository
// without it fails with the registry named; a third with a wrong password
// fails at once (one attempt) naming the repository's registry credential.
// The password is in no log, no process's stderr and no API answer.
func TestRepoRegistryAuth(t *testing.T) {
	ctx := context.Background()
	const user, pass = "team-bot", "Team-registry-pa55-4d1c"
	sec := testenv.StartSecureRegistry(t, user, pass)
	tr, err := registry.TransportWithCA(sec.CAFile)
	require.NoError(t, err)
	login := remote.WithAuth(&authn.Basic{Username: user, Password: pass})
	base, err := testenv.PushBaseImage(ctx, sec.Host, remote.WithTransport(tr), login)
	require.NoError(t, err)

	// http = false: buildkitd would speak plain http to a loopback host.
	bk := testenv.StartBuildkitdConfig(t, fmt.Sprintf("[registry.%q]\n  http = false\n  ca = [%q]\n", sec.Host, sec.CAFile))
	s := newStack(t, "SLIPWAY_REGISTRY="+sec.Host+"/e2e", "SLIPWAY_BUILDKIT_ADDR="+bk.Addr,
		"SLIPWAY_CA_BUNDLE="+sec.CAFile, "SLIPWAY_DOCKER_CONFIG=", "SLIPWAY_REGISTRY_INSECURE=false",
		"SLIPWAY_SECRET_KEY=0000000000000000000000000000000000000000000000000000000000000002")
	s.registry = sec.Host + "/e2e"
	var mu sync.Mutex
	var stderr strings.Builder
	s.onLine = func(_ *exec.Cmd, line string) {
		mu.Lock()
		stderr.WriteString(line + "\n")
		mu.Unlock()
	}
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-repo-registry-auth")
	r := newRepos(t)
	plats := []string{"linux/amd64", "linux/arm64"}
	commits, urls := map[string]string{}, map[string]string{}
	register := func(name, password string) string {
		t.Helper()
		url, commit := r.add(name, map[string]string{"Dockerfile": dockerfile(base, ""), ".slipway.yml": archTest})
		code, out := s.post("/repos", adminToken, map[string]any{"forge": "github", "owner": "acme", "name": name,
			"clone_url": url, "platforms": plats})
		require.Equal(t, http.StatusCreated, code, out["_raw"])
		commits[name], urls[name] = commit, url
		if password != "" {
			code, out = s.sendJSON(http.MethodPut, "/repos/acme/"+name+"/registry-auth", adminToken,
				map[string]string{"registry": sec.Host, "username": user, "password": password})
			require.Equal(t, http.StatusOK, code, out["_raw"])
			require.NotContains(t, out["_raw"], password)
		}
		return url
	}
	run := func(name, url string) *slipway.Build {
		t.Helper()
		return s.waitDone(s.send("rra-"+name, "acme", name, url, "refs/heads/main", commits[name]))
	}

	t.Run("OwnCredentialOnly", func(t *testing.T) {
		url := register("private", pass)
		code, raw := s.api("/repos/acme/private", nil)
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, string(raw), `"registry_auths":["`+sec.Host+`"]`)
		require.NotContains(t, string(raw), pass)
		b := run("private", url)
		log := s.logs(b.ID)
		require.Equal(t, slipway.BuildSucceeded, b.State, "%s\n%s", b.Error, log)
		require.Len(t, b.Platforms, 2)
		for _, p := range []string{"x86_64", "aarch64"} {
			require.Contains(t, log, "running-on="+p, "the test ran on both platforms")
		}
		require.Contains(t, b.Tags, "main")
		_, raw = s.api(fmt.Sprintf("/builds/%d", b.ID), nil)
		require.NotContains(t, string(raw), pass)
		require.NotContains(t, log, pass)

		// The index is there, readable with the repository's credential only.
		reader := registry.New(registry.WithTransport(tr), registry.WithKeychain(authn.NewMultiKeychain()))
		_, got, err := reader.VerifyIndex(registry.WithRepoAuths(ctx, map[string]slipway.RegistryAuth{
			sec.Host: {Username: user, Password: pass}}), s.image("acme", "private")+":main", plats)
		require.NoError(t, err)
		require.Len(t, got, 2)
		_, _, err = reader.VerifyIndex(ctx, s.image("acme", "private")+":main", plats)
		require.Equal(t, slipway.EFORBIDDEN, slipway.ErrorCode(err), "anonymous: %v", err)
		_, _, err = reader.VerifyIndex(registry.WithRepoAuths(ctx, map[string]slipway.RegistryAuth{
			sec.Host: {Username: user, Password: "Not-the-pa55word"}}), s.image("acme", "private")+":main", plats)
		require.Equal(t, slipway.EFORBIDDEN, slipway.ErrorCode(err), "a wrong repository credential: %v", err)
		require.Contains(t, err.Error(), sec.Host+" refused the repository's registry credential")
		require.NotContains(t, err.Error(), "Not-the-pa55word")

		// The server promotes the build with the same credential.
		code, out := s.post(fmt.Sprintf("/builds/%d/promote", b.ID), adminToken, map[string]any{"tags": []string{"stable"}})
		require.Equal(t, http.StatusOK, code, out["_raw"])
		require.NotContains(t, out["_raw"], pass)
		index, _, err := reader.VerifyIndex(registry.WithRepoAuths(ctx, map[string]slipway.RegistryAuth{
			sec.Host: {Username: user, Password: pass}}), s.image("acme", "private")+":stable", plats)
		require.NoError(t, err)
		require.Equal(t, b.IndexDigest, index, "stable points at the build's index")
	})
	t.Run("PodTestPullsWithOwnCredential", func(t *testing.T) {
		// Pod tests pull the service, the app and the test stage from the
		// login registry behind the private CA with the repository's
		// credential (a build's own podman authfile, SLIPWAY_CA_BUNDLE as
		// --cert-dir): nothing else could read them.
		if _, err := exec.LookPath("podman"); err != nil {
			t.Skip("podman is not installed: run `make deps`")
		}
		df, _ := podAppDockerfile(base)
		url, commit := r.add("podpriv", map[string]string{"Dockerfile": df, "check.sh": podCheck,
			".slipway.yml": "target: app\nplatforms: [linux/amd64]\n" + podServices(base) + `tests:
  - name: integration
    services: [broker, app]
    target: test
    run: ['/bin/sh', '/check.sh']
    env: {MQTT_PORT: "1883", APP_PORT: "8080"}
`})
		code, out := s.post("/repos", adminToken, map[string]any{"forge": "github", "owner": "acme", "name": "podpriv",
			"clone_url": url, "platforms": plats})
		require.Equal(t, http.StatusCreated, code, out["_raw"])
		code, out = s.sendJSON(http.MethodPut, "/repos/acme/podpriv/registry-auth", adminToken,
			map[string]string{"registry": sec.Host, "username": user, "password": pass})
		require.Equal(t, http.StatusOK, code, out["_raw"])
		b := s.waitDone(s.send("rra-podpriv", "acme", "podpriv", url, "refs/heads/main", commit))
		log := s.logs(b.ID)
		require.Equal(t, slipway.BuildSucceeded, b.State, "%s\n%s", b.Error, log)
		require.Contains(t, log, "POD-MARKER arch=x86_64 broker=mqtt-hello", "the runner reached both services")
		require.NotContains(t, log, pass)
	})
	t.Run("ForkPullRequestGetsNone", func(t *testing.T) {
		// The same repository, a fork's pull request: approved, it runs
		// without the repository's credential, so the login registry refuses it.
		head := pullRef(t, filepath.Join(r.base, "private.git"), 1, dockerfile(base, "LABEL pr=1\n"))
		body := prPayload(t, "opened", 1, head, "acme", "private", urls["private"], true)
		code, out := s.webhook("pull_request", "rra-fork", body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		id := int64(out["build_id"].(float64))
		code, out = s.post(fmt.Sprintf("/builds/%d/approve", id), adminToken, nil)
		require.Equal(t, http.StatusOK, code, out["_raw"])
		b := s.waitDone(id)
		require.True(t, b.PullRequest.Fork)
		require.Equal(t, slipway.BuildFailed, b.State, "%s", s.logs(id))
		require.Contains(t, b.Error, sec.Host+" refused the credentials", "anonymous, not the repository's credential")
		require.NotContains(t, b.Error, "the repository's registry credential")
		require.Equal(t, 1, b.Attempt)
	})
	t.Run("NoCredentialFailsClearly", func(t *testing.T) {
		url := register("nocred", "")
		b := run("nocred", url)
		require.Equal(t, slipway.BuildFailed, b.State, "%s", s.logs(b.ID))
		require.Contains(t, b.Error, sec.Host, "the error names the registry")
		require.Contains(t, b.Error, "refused the credentials")
		require.Equal(t, 1, b.Attempt, "a refusal is no infrastructure failure: %s", b.Error)
	})
	t.Run("WrongCredentialNamesIt", func(t *testing.T) {
		const wrong = "Wrong-registry-pa55-0000"
		url := register("wrongcred", wrong)
		b := run("wrongcred", url)
		log := s.logs(b.ID)
		require.Equal(t, slipway.BuildFailed, b.State, "%s", log)
		require.Contains(t, b.Error, sec.Host)
		require.Contains(t, b.Error, "the repository's registry credential")
		require.Equal(t, 1, b.Attempt, "not retried: %s", b.Error)
		require.NotContains(t, log, wrong)
		require.NotContains(t, b.Error, wrong)
	})
	mu.Lock()
	defer mu.Unlock()
	require.NotContains(t, stderr.String(), pass, "the password is in no process's log")
	code, raw := s.api("/repos/acme/private/registry-auth", nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(raw), user)
	require.NotContains(t, string(raw), pass)
}
