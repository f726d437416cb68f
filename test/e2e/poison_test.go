package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// TestPoisonCheckoutFiles pushes what issue 12 found: a .slipway.yml
// committed as a symlink to /dev/zero (once read until the worker died of
// memory, then the next worker), and a context: that is a symlink to a folder
// of the worker's machine (once uploaded to BuildKit, its root-only file came
// back out of the image). Each build fails at once as the author's error,
// not retried, with nothing pushed; the same worker then builds a good commit.
func TestPoisonCheckoutFiles(t *testing.T) {
	ctx := context.Background()
	base := pushBase(t)
	s := newStack(t)
	s.start("worker", "SLIPWAY_RETRY_BACKOFF=1s", "SLIPWAY_MAX_ATTEMPTS=5")
	r := newRepos(t)

	// commitLinks commits symlinks (name → target) to the repository name.
	commitLinks := func(name string, links map[string]string) string {
		t.Helper()
		dir := filepath.Join(r.base, name+".git")
		for link, target := range links {
			require.NoError(t, os.Symlink(target, filepath.Join(dir, link)))
		}
		commit, err := testenv.CommitFiles(ctx, dir, nil, "links")
		require.NoError(t, err)
		return commit
	}
	failsAsUserError := func(name, commit, wantErr string) {
		t.Helper()
		id := s.send(name+"-1", "acme", name, r.url+name+".git", "refs/heads/main", commit)
		b := s.waitDone(id)
		require.Equal(t, slipway.BuildFailed, b.State, "%s\n%s", b.Error, s.logs(b.ID))
		require.Contains(t, b.Error, wantErr)
		require.Len(t, b.Attempts, 1, "the author's error is not retried")
		require.False(t, b.Attempts[0].Infra)
		_, err := remote.Head(mustRef(t, s.image("acme", name)+":"+slipway.CommitTag(commit)))
		require.Error(t, err, "nothing was pushed")
	}

	t.Run("ConfigSymlinkToDevZero", func(t *testing.T) {
		r.add("devzero", map[string]string{"Dockerfile": dockerfile(base, "")})
		commit := commitLinks("devzero", map[string]string{".slipway.yml": "/dev/zero"})
		failsAsUserError("devzero", commit, ".slipway.yml is a symlink to /dev/zero; slipway reads it only as a regular file")
	})

	t.Run("ContextSymlinkOutside", func(t *testing.T) {
		outside := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(outside, "Dockerfile"), []byte(dockerfile(base, "COPY secret /secret\n")), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("worker's own file\n"), 0o600))
		r.add("ctxout", map[string]string{"Dockerfile": dockerfile(base, ""), ".slipway.yml": "context: ctx\n"})
		commit := commitLinks("ctxout", map[string]string{"ctx": outside})
		failsAsUserError("ctxout", commit, "build context: ctx is a symlink to "+outside+", outside the repository")
	})

	t.Run("WorkerStillBuilds", func(t *testing.T) {
		url, commit := r.add("good", map[string]string{"Dockerfile": dockerfile(base, "")})
		b := s.waitDone(s.send("good-1", "acme", "good", url, "refs/heads/main", commit))
		require.Equal(t, slipway.BuildSucceeded, b.State, "%s\n%s", b.Error, s.logs(b.ID))
	})
}
