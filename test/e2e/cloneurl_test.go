package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// TestSignedPushCannotRepointRepository is the attack of issue 12 for real: a
// correctly signed push for acme/app whose clone_url names mallory's
// repository. slipway clones acme/app from the forge's base URL
// (SLIPWAY_GITHUB_URL, here the tests' git daemon) and builds acme/app's
// code; a push naming mallory's commit fails at checkout; the repository's
// clone URL never changes.
func TestSignedPushCannotRepointRepository(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	r := newRepos(t)
	victimCommit := testenv.NewGitRepo(t, filepath.Join(r.base, "acme", "app.git"), map[string]string{
		"Dockerfile": dockerfile(base, "RUN echo victim > /whose\n")})
	evilURL, evilCommit := r.add("mallory-evil", map[string]string{"Dockerfile": dockerfile(base, "RUN echo mallory > /whose\n")})

	s := newStack(t, "SLIPWAY_DEV_CLONE_URL_FROM_PAYLOAD=false", "SLIPWAY_GITHUB_URL="+r.url)
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-repoint")
	deliver := func(id, commit string) *slipway.Build {
		t.Helper()
		body := push(t, testenv.PushParams{Owner: "acme", Name: "app", CloneURL: evilURL, Ref: "refs/heads/main", After: commit})
		code, out := s.webhook("push", id, body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		return s.waitDone(int64(out["build_id"].(float64)))
	}

	b := deliver("repoint-1", victimCommit)
	require.Equal(t, slipway.BuildSucceeded, b.State, "%s\n%s", b.Error, s.logs(b.ID))
	require.Equal(t, r.url+"acme/app.git", b.CloneURL, "cloned from the forge's URL, not the payload's")
	img, err := remote.Image(mustRef(t, b.Image+"@"+b.IndexDigest), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	require.NoError(t, err)
	require.Equal(t, "victim\n", readFile(t, img, "whose"))

	b = deliver("repoint-2", evilCommit)
	require.Equal(t, slipway.BuildFailed, b.State, "mallory's commit is not in acme/app")
	require.Contains(t, b.Error, "checkout failed")
	require.Equal(t, r.url+"acme/app.git", b.CloneURL)

	code, body := s.api("/repos/acme/app", nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.Contains(t, string(body), `"clone_url":"`+r.url+`acme/app.git"`, "no delivery changes the setting")
}
