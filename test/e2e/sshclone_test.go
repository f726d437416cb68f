package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// TestSSHCloneDeployKey: a repository registered through the API with an
// ssh:// clone URL (a real sshd) and its deploy key set through the API
// builds; the key is in no log (nor the test container's environment), no
// API answer, no file of the checkout (its .git/config is in the image) and
// on no command line during the build.
func TestSSHCloneDeployKey(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	sshd := testenv.StartSSHD(t)
	key, pub := testenv.NewSSHKey(t)
	sshd.Authorize(t, pub)
	repoDir := filepath.Join(t.TempDir(), "sshapp.git")
	testenv.NewGitRepo(t, repoDir, map[string]string{
		"Dockerfile":   dockerfile(base, "COPY . /src\n"),
		".slipway.yml": "tests:\n  - name: environment\n    run: env\n",
	})
	cloneURL := sshd.URL(repoDir)
	keyLines := strings.Split(strings.TrimSpace(string(key)), "\n")
	keyBody := keyLines[1] // a line of the key's base64

	s := newStack(t, "SLIPWAY_SECRET_KEY=0000000000000000000000000000000000000000000000000000000000000001")
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-ssh-clone", "SLIPWAY_SSH_KNOWN_HOSTS="+sshd.KnownHosts)
	code, out := s.post("/repos", adminToken, map[string]any{"forge": "github", "owner": "acme", "name": "sshapp",
		"clone_url": cloneURL, "platforms": []string{"linux/amd64"}})
	require.Equal(t, http.StatusCreated, code, out["_raw"])
	code, out = s.sendJSON(http.MethodPut, "/repos/acme/sshapp/deploy-key", adminToken, map[string]string{"private_key": string(key)})
	require.Equal(t, http.StatusOK, code, out["_raw"])
	require.Equal(t, strings.Join(strings.Fields(pub)[:2], " "), fmt.Sprint(out["public_key"]), "the answer names the public key to add to the forge")
	require.NotContains(t, fmt.Sprint(out), keyBody)
	code, raw := s.api("/repos/acme/sshapp", nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(raw), `"has_deploy_key":true`)
	require.NotContains(t, string(raw), keyBody)

	stop, leaks := make(chan struct{}), make(chan string, 1)
	go func() { leaks <- watchCmdlines(stop, keyBody) }()
	code, out = s.post("/repos/acme/sshapp/builds", adminToken, map[string]any{"ref": "main"})
	require.Equal(t, http.StatusCreated, code, out["_raw"])
	id := int64(out["build_id"].(float64))
	b := s.waitDone(id)
	close(stop)
	leaked := <-leaks
	log := s.logs(id)
	require.Equal(t, slipway.BuildSucceeded, b.State, "%s\n%s", b.Error, log)
	require.Equal(t, cloneURL, b.CloneURL)
	require.Contains(t, log, "PATH=", "the environment test printed its environment")
	for _, l := range keyLines {
		require.NotContains(t, log, l, "the key is not in the log (nor in the test container's env)")
	}
	require.NotContains(t, log, "GIT_SSH_COMMAND", "the test container does not get git's ssh command")
	require.Empty(t, leaked, "the key was on a command line")
	_, raw = s.api(fmt.Sprintf("/builds/%d", id), nil)
	require.NotContains(t, string(raw), keyBody)
	img, err := remote.Image(mustRef(t, b.Image+"@"+b.IndexDigest), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	require.NoError(t, err)
	files := imageFiles(t, img, "src/")
	require.Contains(t, files, "src/.git/config", "the checkout's .git/config is in the image (COPY . /src)")
	for name, content := range files {
		require.NotContains(t, content, keyBody, "%s of the checkout", name)
		require.NotContains(t, content, "deploy_key", "%s of the checkout names no key file", name)
	}
}
