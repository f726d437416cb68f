package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

// TestBuildThatKillsItsWorkersTwiceFails: a build whose worker is killed is
// taken over once; when the second worker is killed too, the build fails
// rather than go on to a third (a build that runs its workers out of memory
// would otherwise take them all down in turn).
func TestBuildThatKillsItsWorkersTwiceFails(t *testing.T) {
	base := pushBase(t)
	s := newStack(t)
	r := newRepos(t)
	// The sleep keeps each attempt in BuildKit long enough to kill its worker there.
	url, commit := r.add("killer", map[string]string{"Dockerfile": dockerfile(base, "RUN echo slow-step-started && sleep 20\n")})
	worker := s.start("worker", "SLIPWAY_WORKER_ID=first", "SLIPWAY_MAX_ATTEMPTS=5")
	id := s.send("killer-1", "acme", "killer", url, "refs/heads/main", commit)
	for attempt := 1; attempt <= 2; attempt++ {
		s.waitFor(id, 5*time.Minute, "the build step of this attempt to start", func(b *slipway.Build) bool {
			logs := s.logs(id)
			if attempt > 1 {
				_, logs, _ = strings.Cut(logs, "==> attempt 2")
			}
			return b.Attempt == attempt && strings.Contains(logs, "slow-step-started")
		})
		require.NoError(t, worker.Process.Signal(syscall.SIGKILL))
		worker = s.start("worker", fmt.Sprint("SLIPWAY_WORKER_ID=after-kill-", attempt), "SLIPWAY_MAX_ATTEMPTS=5")
	}
	b := s.waitDone(id)
	require.Equal(t, slipway.BuildFailed, b.State, "%s\n%s", b.Error, s.logs(id))
	require.Equal(t, "The worker running this build stopped twice (killed, out of memory?); it is not retried again. "+
		"Check the build's log and .slipway.yml, then retry it.", b.Error)
	require.Equal(t, 2, b.Attempt, "no third worker ran it, though attempts were left")
	require.Len(t, b.Attempts, 2)
}
