package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/devstack"
	"github.com/slipway-ci/slipway/test/testenv"
)

// send pushes commit of the repository at url as owner/name ref and returns the
// build's id.
func (s *stack) send(delivery, owner, name, url, ref, commit string) int64 {
	s.t.Helper()
	body := push(s.t, testenv.PushParams{Owner: owner, Name: name, CloneURL: url, Ref: ref, After: commit})
	code, resp := s.webhook("push", delivery, body, testenv.Sign(webhookSecret, body))
	require.Equal(s.t, http.StatusAccepted, code, "%v", resp)
	return int64(resp["build_id"].(float64))
}

// pushBase pushes the two-platform busybox base image and returns its reference.
func pushBase(t *testing.T) string {
	t.Helper()
	base, err := testenv.PushBaseImage(context.Background(), requireEnv(t, "TEST_REGISTRY"))
	require.NoError(t, err)
	return base
}

// markerPIDs returns the processes on this machine whose command line holds
// marker: the RUN steps of the tests' builds, run by buildkitd under runc.
func markerPIDs(marker string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), marker) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitUntil polls cond (another process's state) until it holds or timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond) // bounded poll of another process
	}
}

// endlessStep is a RUN step that runs until it is killed, in a process whose
// command line holds marker. The sleep is bounded so that a process left behind
// by a failed test still ends.
func endlessStep(marker string) string {
	return fmt.Sprintf("RUN echo %s-started && /bin/sh -c 'i=0; while [ $i -lt 600 ]; do sleep 1; i=$((i+1)); done' %s\n", marker, marker)
}

// killMarkers ends processes a failed test left behind.
func killMarkers(t *testing.T, markers ...string) {
	t.Cleanup(func() {
		for _, m := range markers {
			for _, pid := range markerPIDs(m) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

func TestPushesSupersedeOlderBuilds(t *testing.T) {
	ctx, base := context.Background(), pushBase(t)
	s := newStack(t)
	s.start("worker", "SLIPWAY_WORKER_CONCURRENCY=2", "SLIPWAY_WORKER_ID=supersede")
	r := newRepos(t)

	nonce := time.Now().UnixNano()
	m1, m2 := fmt.Sprintf("first-%d", nonce), fmt.Sprintf("second-%d", nonce)
	killMarkers(t, m1, m2)
	dir := r.base + "/app.git"
	url, c1 := r.add("app", map[string]string{"Dockerfile": dockerfile(base, endlessStep(m1))})
	c2, err := testenv.CommitFiles(ctx, dir, map[string]string{"Dockerfile": dockerfile(base, endlessStep(m2))}, "second")
	require.NoError(t, err)
	c3, err := testenv.CommitFiles(ctx, dir, map[string]string{"Dockerfile": dockerfile(base, "")}, "third")
	require.NoError(t, err)

	first := s.send("sup-1", "acme", "app", url, "refs/heads/main", c1)
	s.waitFor(first, 5*time.Minute, "the first build's RUN step", func(*slipway.Build) bool {
		return len(markerPIDs(m1)) > 0
	})
	second := s.send("sup-2", "acme", "app", url, "refs/heads/main", c2)
	third := s.send("sup-3", "acme", "app", url, "refs/heads/main", c3)

	b3 := s.waitDone(third)
	require.Equal(t, slipway.BuildSucceeded, b3.State, "error %s\nlog:\n%s", b3.Error, s.logs(third))
	b1, b2 := s.waitDone(first), s.waitDone(second)
	require.Equal(t, slipway.BuildCanceled, b1.State)
	require.Equal(t, fmt.Sprintf("superseded by build %d", second), b1.Error)
	require.Equal(t, slipway.BuildCanceled, b2.State)
	require.Equal(t, fmt.Sprintf("superseded by build %d", third), b2.Error)
	require.Contains(t, s.logs(first), "Build canceled: superseded by build")

	// The canceled solves no longer run in buildkitd: their RUN processes are gone.
	waitUntil(t, 30*time.Second, "the canceled builds' RUN processes to end", func() bool {
		return len(markerPIDs(m1)) == 0 && len(markerPIDs(m2)) == 0
	})
	t.Logf("MEASURE first build canceled %s after the second push", b1.FinishedAt.Sub(b2.CreatedAt))
}

func TestRepoLimitLetsOtherRepoFirst(t *testing.T) {
	ctx, base := context.Background(), pushBase(t)
	s := newStack(t)
	r := newRepos(t)
	files := map[string]string{"Dockerfile": dockerfile(base, "RUN sleep 2\n")}
	aURL, aCommit := r.add("a", files)
	bURL, bCommit := r.add("b", files)

	var as []int64
	for i := range 5 {
		// Five branches: pushes of one branch would supersede each other.
		as = append(as, s.send(fmt.Sprint("a-", i), "acme", "a", aURL, fmt.Sprint("refs/heads/f", i), aCommit))
	}
	bID := s.send("b-0", "acme", "b", bURL, "refs/heads/main", bCommit)
	_, err := s.db.Pool().Exec(ctx, "UPDATE repos SET max_running = 1 WHERE name = 'a'")
	require.NoError(t, err)
	s.start("worker", "SLIPWAY_WORKER_CONCURRENCY=2", "SLIPWAY_WORKER_ID=limits")

	builds := map[int64]*slipway.Build{}
	for _, id := range append(slices.Clone(as), bID) {
		b := s.waitDone(id)
		require.Equal(t, slipway.BuildSucceeded, b.State, "build %d: %s", id, b.Error)
		builds[id] = b
	}
	aBuilds := make([]*slipway.Build, 0, len(as))
	for _, id := range as {
		aBuilds = append(aBuilds, builds[id])
	}
	slices.SortFunc(aBuilds, func(x, y *slipway.Build) int { return x.StartedAt.Compare(*y.StartedAt) })
	b := builds[bID]
	require.True(t, b.StartedAt.Before(*aBuilds[1].StartedAt), "B started %s, A's second %s", b.StartedAt, aBuilds[1].StartedAt)
	require.True(t, b.StartedAt.Before(*aBuilds[0].FinishedAt), "two builds ran at once (SLIPWAY_WORKER_CONCURRENCY=2)")
	for i := 1; i < len(aBuilds); i++ {
		require.False(t, aBuilds[i].StartedAt.Before(*aBuilds[i-1].FinishedAt), "A's builds never overlap (max_running 1)")
	}
}

func TestWorkerShutdown(t *testing.T) {
	base := pushBase(t)
	r := newRepos(t)

	t.Run("RunningBuildFinishesWithinGrace", func(t *testing.T) {
		s := newStack(t)
		marker := fmt.Sprintf("grace-%d", time.Now().UnixNano())
		url, commit := r.add("grace", map[string]string{"Dockerfile": dockerfile(base, "RUN echo "+marker+" && sleep 4\n")})
		w := s.start("worker", "SLIPWAY_WORKER_ID=graceful", "SLIPWAY_SHUTDOWN_GRACE=5m")
		id := s.send("grace-1", "acme", "grace", url, "refs/heads/main", commit)
		s.waitFor(id, 5*time.Minute, "the RUN step", func(*slipway.Build) bool { return strings.Contains(s.logs(id), marker) })
		require.NoError(t, w.Process.Signal(syscall.SIGTERM))
		b := s.waitDone(id)
		require.Equal(t, slipway.BuildSucceeded, b.State, "%s\n%s", b.Error, s.logs(id))
		require.Len(t, b.Attempts, 1)
		require.Equal(t, "graceful", b.Attempts[0].Worker)
	})

	t.Run("GraceOverHandsBuildBack", func(t *testing.T) {
		s := newStack(t)
		marker := fmt.Sprintf("handback-%d", time.Now().UnixNano())
		killMarkers(t, marker)
		url, commit := r.add("handback", map[string]string{"Dockerfile": dockerfile(base, "RUN echo "+marker+" && sleep 10\n")})
		w := s.start("worker", "SLIPWAY_WORKER_ID=leaving", "SLIPWAY_SHUTDOWN_GRACE=1s")
		id := s.send("handback-1", "acme", "handback", url, "refs/heads/main", commit)
		s.waitFor(id, 5*time.Minute, "the RUN step", func(*slipway.Build) bool { return strings.Contains(s.logs(id), marker) })
		require.NoError(t, w.Process.Signal(syscall.SIGTERM))
		b := s.waitFor(id, time.Minute, "the build to go back to the queue", func(b *slipway.Build) bool {
			return b.State == slipway.BuildQueued
		})
		require.Empty(t, b.Error, "handed back, not failed")
		require.Len(t, b.Attempts, 1)
		require.Contains(t, b.Attempts[0].Error, "shut down")
		require.False(t, b.Attempts[0].Infra)

		s.start("worker", "SLIPWAY_WORKER_ID=next", "SLIPWAY_MAX_ATTEMPTS=1")
		b = s.waitDone(id)
		require.Equal(t, slipway.BuildSucceeded, b.State, "the hand-back did not use up the only attempt: %s", b.Error)
		require.Len(t, b.Attempts, 2)
		require.Equal(t, "next", b.Attempts[1].Worker)
	})
}

// buildkitd is a buildkitd of the test's own, which it may kill.
type buildkitd struct {
	t    *testing.T
	cfg  devstack.BuildkitdConfig
	dir  string
	addr string
	proc *devstack.Process
	n    int
}

func startBuildkitd(t *testing.T) *buildkitd {
	t.Helper()
	binDir, err := devstack.BinDir()
	require.NoError(t, err)
	bin := filepath.Join(binDir, "buildkitd")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s missing: run make deps", bin)
	}
	// A unix socket path must be short: not under t.TempDir.
	dir, err := os.MkdirTemp("/tmp", "slipway-bk-e2e-")
	require.NoError(t, err)
	b := &buildkitd{t: t, dir: dir, addr: "unix://" + dir + "/bk.sock", cfg: devstack.BuildkitdConfig{
		Bin: bin, Dir: dir, Addr: "unix://" + dir + "/bk.sock",
		PlainHTTP: []string{strings.SplitN(requireEnv(t, "TEST_REGISTRY"), "/", 2)[0]},
	}}
	t.Cleanup(func() {
		b.kill()
		// A killed buildkitd leaves its containers' mounts behind.
		mounts, _ := os.ReadFile("/proc/mounts")
		lines := strings.Split(string(mounts), "\n")
		slices.Reverse(lines)
		for _, l := range lines {
			if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
				_ = syscall.Unmount(f[1], syscall.MNT_DETACH)
			}
		}
		_ = os.RemoveAll(dir)
	})
	b.start()
	return b
}

// start runs buildkitd on a fresh state folder and waits until it answers.
func (b *buildkitd) start() {
	b.t.Helper()
	b.n++
	_ = os.Remove(strings.TrimPrefix(b.addr, "unix://"))
	logf, err := os.Create(filepath.Join(b.dir, fmt.Sprintf("buildkitd-%d.log", b.n)))
	require.NoError(b.t, err)
	defer logf.Close()
	b.cfg.Root = filepath.Join(b.dir, fmt.Sprint("root", b.n))
	b.proc, err = devstack.StartBuildkitd(context.Background(), b.cfg, devstack.ProcOptions{Log: logf})
	if err != nil {
		log, _ := os.ReadFile(logf.Name())
		b.t.Fatalf("%v\n%s", err, log)
	}
}

// kill ends buildkitd with SIGKILL, as a crash would, and waits for it.
func (b *buildkitd) kill() {
	if b.proc == nil {
		return
	}
	b.proc.Kill()
	b.proc = nil
}

func TestBuildkitdKilledBuildRetried(t *testing.T) {
	base := pushBase(t)
	bk := startBuildkitd(t)
	s := newStack(t)
	r := newRepos(t)
	marker := fmt.Sprintf("crash-%d", time.Now().UnixNano())
	killMarkers(t, marker)
	url, commit := r.add("crash", map[string]string{"Dockerfile": dockerfile(base, "RUN echo "+marker+" && sleep 5\n")})
	s.start("worker", "SLIPWAY_WORKER_ID=crashy", "SLIPWAY_BUILDKIT_ADDR="+bk.addr,
		"SLIPWAY_RETRY_BACKOFF=1s", "SLIPWAY_MAX_ATTEMPTS=5")
	id := s.send("crash-1", "acme", "crash", url, "refs/heads/main", commit)
	s.waitFor(id, 5*time.Minute, "the RUN step", func(*slipway.Build) bool { return strings.Contains(s.logs(id), marker) })

	bk.kill()
	killed := time.Now()
	bk.start()
	t.Logf("MEASURE buildkitd back after %s", time.Since(killed).Round(time.Millisecond))

	b := s.waitDone(id)
	require.Equal(t, slipway.BuildSucceeded, b.State, "%s\n%s", b.Error, s.logs(id))
	require.GreaterOrEqual(t, len(b.Attempts), 2, "%+v", b.Attempts)
	first := b.Attempts[0]
	require.True(t, first.Infra, "%+v", first)
	require.NotEmpty(t, first.Error)
	last := b.Attempts[len(b.Attempts)-1]
	require.Empty(t, last.Error)
	require.Equal(t, last.Attempt, b.Attempt)
	t.Logf("attempts: %+v", b.Attempts)
}

func TestUserErrorNotRetried(t *testing.T) {
	base := pushBase(t)
	s := newStack(t)
	s.start("worker", "SLIPWAY_RETRY_BACKOFF=1s", "SLIPWAY_MAX_ATTEMPTS=5")
	r := newRepos(t)
	url, commit := r.add("usererr", map[string]string{"Dockerfile": dockerfile(base, "RUN exit 7\n")})
	id := s.send("usererr-1", "acme", "usererr", url, "refs/heads/main", commit)
	b := s.waitDone(id)
	require.Equal(t, slipway.BuildFailed, b.State)
	require.Contains(t, b.Error, "exit code: 7")
	require.Len(t, b.Attempts, 1, "a failing Dockerfile is not retried")
	require.False(t, b.Attempts[0].Infra)
}
