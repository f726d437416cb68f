package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/devstack"
	"github.com/slipway-ci/slipway/test/testenv"
)

// Scale-out numbers (issue 7): one server, three worker processes, two
// buildkitd, one PostgreSQL; 30 pushes across 5 repositories.
const (
	scaleRepos       = 5
	scalePushes      = 30
	scaleWorkers     = 3
	scaleConcurrency = 2 // builds per worker process
	scaleMaxRunning  = 1 // repos.max_running of every repository
)

// TestScaleOut runs 30 pushes of 5 repositories on three worker processes fed
// by two buildkitd, kills one worker with SIGKILL once half the builds are
// done, and checks that every push was built exactly once, that the others
// finished the dead worker's builds, and that no repository ever ran more
// builds at once than its max_running. It logs the wall time and each
// worker's share (grep MEASURE).
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("scale-out test: skipped with -short")
	}
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	bkA := requireEnv(t, "BUILDKIT_HOST")
	bkB := startScaleBuildkitd(t, registryHost)
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)

	s := newStack(t)
	finished := newFinishLog()
	s.onLine = finished.line

	// Every push is its own commit on its own branch: a second push to one
	// branch would supersede (cancel) the first, and this test counts builds.
	r := newRepos(t)
	type pushed struct {
		repo, ref, commit string
		id                int64
	}
	var pushes []*pushed
	for i := range scalePushes {
		repo := fmt.Sprintf("scale%d", i%scaleRepos)
		dir := filepath.Join(r.base, repo+".git")
		files := map[string]string{"Dockerfile": fmt.Sprintf("FROM %s\nRUN echo push-%d-%d\n", base, i, time.Now().UnixNano())}
		var commit string
		if i < scaleRepos {
			commit = testenv.NewGitRepo(t, dir, files)
		} else {
			commit, err = testenv.CommitFiles(ctx, dir, files, fmt.Sprintf("push %d", i))
			require.NoError(t, err)
		}
		pushes = append(pushes, &pushed{repo: repo, ref: fmt.Sprintf("refs/heads/scale-%d", i), commit: commit})
	}
	for i, p := range pushes {
		body := push(t, testenv.PushParams{Owner: "scale", Name: p.repo, CloneURL: r.url + p.repo + ".git", Ref: p.ref, After: p.commit})
		code, resp := s.webhook("push", fmt.Sprintf("scale-%d", i), body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", resp)
		p.id = int64(resp["build_id"].(float64))
	}
	_, err = s.db.Pool().Exec(ctx, `UPDATE repos SET max_running = $1`, scaleMaxRunning)
	require.NoError(t, err)
	require.Equal(t, scalePushes, s.count("builds"))

	// Workers 1 and 3 share the test's buildkitd, worker 2 has its own.
	started := time.Now()
	workers := map[string]*exec.Cmd{}
	for i := 1; i <= scaleWorkers; i++ {
		id := fmt.Sprintf("scale-w%d", i)
		bk := bkA
		if i == 2 {
			bk = bkB
		}
		workers[id] = s.start("worker", "SLIPWAY_WORKER_ID="+id, "SLIPWAY_BUILDKIT_ADDR="+bk,
			fmt.Sprintf("SLIPWAY_WORKER_CONCURRENCY=%d", scaleConcurrency))
	}

	// Halfway, kill the worker that holds the most running builds right then
	// (it must hold at least one, so that there is something to take over).
	var victim string
	var orphaned []int64
	deadline := time.Now().Add(10 * time.Minute)
	for victim == "" {
		require.True(t, time.Now().Before(deadline), "not half of the builds done after 10 minutes")
		if done := s.count("builds WHERE state IN ('succeeded','failed','canceled')"); done >= scalePushes/2 {
			rows, err := s.db.Pool().Query(ctx, `SELECT claimed_by, array_agg(build_id ORDER BY build_id)
				FROM jobs WHERE state = 'running' AND claimed_by LIKE 'scale-w%' GROUP BY claimed_by ORDER BY count(*) DESC, claimed_by LIMIT 1`)
			require.NoError(t, err)
			type holder struct {
				Worker string  `db:"claimed_by"`
				Builds []int64 `db:"array_agg"`
			}
			hs, err := pgx.CollectRows(rows, pgx.RowToStructByName[holder])
			require.NoError(t, err)
			if len(hs) == 1 {
				victim, orphaned = hs[0].Worker, hs[0].Builds
				require.NoError(t, workers[victim].Process.Signal(syscall.SIGKILL))
				t.Logf("MEASURE scale-out: killed %s with SIGKILL after %s, %d builds done, holding builds %v",
					victim, time.Since(started).Round(time.Millisecond), done, orphaned)
				break
			}
		}
		time.Sleep(100 * time.Millisecond) // bounded poll of other processes
	}

	// Every push ends succeeded.
	for _, p := range pushes {
		b := s.waitDone(p.id)
		require.Equal(t, slipway.BuildSucceeded, b.State, "build %d (%s %s): %s\nlog:\n%s", p.id, p.repo, p.ref, b.Error, s.logs(p.id))
		require.Equal(t, s.image("scale", p.repo)+":"+slipway.CommitTag(p.commit), b.ImageRef)
		require.Equal(t, []string{strings.TrimPrefix(p.ref, "refs/heads/")}, b.Tags)
	}
	wall := time.Since(started)

	// Exactly once: one build per push, and each finished by exactly one
	// worker, never by the dead one after it died.
	require.Equal(t, scalePushes, s.count("builds"))
	byBuild := finished.byBuild()
	for _, p := range pushes {
		require.Len(t, byBuild[p.id], 1, "build %d finished %d times: %v", p.id, len(byBuild[p.id]), byBuild[p.id])
	}
	for _, id := range orphaned {
		w := byBuild[id][0]
		require.NotEqual(t, victim, w, "build %d, orphaned by %s, was finished by another worker", id, victim)
		require.GreaterOrEqual(t, s.build(id).Attempt, 2, "build %d ran again after its worker died", id)
	}

	share := map[string]int{}
	for _, ws := range byBuild {
		share[ws[0]]++
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for w := range workers {
			if !yield(w) {
				return
			}
		}
	})
	var parts []string
	for _, w := range names {
		note := ""
		if w == victim {
			note = " (killed)"
		}
		parts = append(parts, fmt.Sprintf("%s %d%s", w, share[w], note))
	}
	t.Logf("MEASURE scale-out: %d builds of %d repositories on %d workers x %d, 2 buildkitd: wall time %s (first worker start to last build done); builds finished per worker: %s",
		scalePushes, scaleRepos, scaleWorkers, scaleConcurrency, wall.Round(time.Millisecond), strings.Join(parts, ", "))
	for _, w := range names {
		if w != victim {
			require.Positive(t, share[w], "%s built nothing", w)
		}
	}

	t.Run("LimitNeverExceeded", func(t *testing.T) {
		checkRepoLimit(t, s, scaleMaxRunning)
	})
}

// checkRepoLimit checks from the attempts' time ranges that no repository ever
// had more than limit attempts running at once. The ranges come from the
// build_attempts table (an attempt runs from its claim to its end or rescue)
// that the queue's per-repository limit (issue 3b) writes.
func checkRepoLimit(t *testing.T, s *stack, limit int) {
	rows, err := s.db.Pool().Query(context.Background(), `
		SELECT r.owner || '/' || r.name, a.build_id, a.attempt, a.started_at, coalesce(a.finished_at, now())
		FROM build_attempts a JOIN builds b ON b.id = a.build_id JOIN repos r ON r.id = b.repo_id`)
	require.NoError(t, err)
	type event struct {
		at    time.Time
		delta int // +1 start, -1 end
		what  string
	}
	byRepo := map[string][]event{}
	var attempts int
	for rows.Next() {
		var repo string
		var build int64
		var attempt int
		var from, to time.Time
		require.NoError(t, rows.Scan(&repo, &build, &attempt, &from, &to))
		what := fmt.Sprintf("build %d attempt %d", build, attempt)
		byRepo[repo] = append(byRepo[repo], event{from, +1, what}, event{to, -1, what})
		attempts++
	}
	require.NoError(t, rows.Err())
	require.GreaterOrEqual(t, attempts, scalePushes)
	for repo, evs := range byRepo {
		// Ends sort before starts at the same instant: a claim that sees the
		// room a completion made commits after it.
		sort.Slice(evs, func(i, j int) bool {
			if !evs[i].at.Equal(evs[j].at) {
				return evs[i].at.Before(evs[j].at)
			}
			return evs[i].delta < evs[j].delta
		})
		running, peak := 0, 0
		var live []string
		for _, e := range evs {
			running += e.delta
			if e.delta > 0 {
				live = append(live, e.what)
			} else {
				live = slices.DeleteFunc(live, func(w string) bool { return w == e.what })
			}
			require.LessOrEqual(t, running, limit, "%s ran %d builds at once at %s (max_running %d): %v", repo, running, e.at, limit, live)
			peak = max(peak, running)
		}
		require.Equal(t, limit, peak, "%s never reached its limit: the check would prove nothing", repo)
	}
}

// finishLog collects the "Build finished" lines of the workers' JSON logs.
type finishLog struct {
	mu       sync.Mutex
	finishes map[int64][]string // build id -> worker ids, in order
}

func newFinishLog() *finishLog { return &finishLog{finishes: map[int64][]string{}} }

func (f *finishLog) line(_ *exec.Cmd, line string) {
	var l struct {
		Message  string `json:"message"`
		BuildID  int64  `json:"build_id"`
		WorkerID string `json:"worker_id"`
	}
	if json.Unmarshal([]byte(line), &l) != nil || l.Message != "Build finished" {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finishes[l.BuildID] = append(f.finishes[l.BuildID], l.WorkerID)
}

func (f *finishLog) byBuild() map[int64][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[int64][]string, len(f.finishes))
	for k, v := range f.finishes {
		out[k] = slices.Clone(v)
	}
	return out
}

// startScaleBuildkitd starts a second buildkitd (bin/buildkitd, built by make deps)
// with its own state and socket, stopped when the test ends, and returns its
// address. It trusts the test's plain-HTTP registry as the stack's buildkitd
// does (devstack.BuildkitdConfig) and must offer linux/arm64.
func startScaleBuildkitd(t *testing.T, registryHost string) string {
	t.Helper()
	binDir, err := devstack.BinDir()
	require.NoError(t, err)
	bin := filepath.Join(binDir, "buildkitd")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no %s: run make deps", bin)
	}
	if os.Geteuid() != 0 {
		t.Skip("a second buildkitd needs root")
	}
	// A unix socket path must fit in 108 bytes: keep it short.
	dir, err := os.MkdirTemp("/tmp", "slipway-bk2-")
	require.NoError(t, err)
	state := t.TempDir()
	logf, err := os.Create(filepath.Join(state, "buildkitd.log"))
	require.NoError(t, err)
	defer logf.Close() // the process has its own copy
	addr := "unix://" + filepath.Join(dir, "bk.sock")
	p, err := devstack.StartBuildkitd(context.Background(), devstack.BuildkitdConfig{
		Bin: bin, Root: filepath.Join(state, "root"), Dir: dir, Addr: addr,
		PlainHTTP: []string{registryHost}, Platforms: []string{"linux/arm64"},
	}, devstack.ProcOptions{Log: logf})
	if err != nil {
		log, _ := os.ReadFile(logf.Name())
		_ = os.RemoveAll(dir)
		t.Fatalf("second buildkitd: %v\nlog:\n%s", err, log)
	}
	t.Cleanup(func() {
		p.Stop(30 * time.Second)
		// buildkitd leaves its state's mounts behind only when killed; the
		// state folder is the test's and goes with it.
		os.RemoveAll(dir)
	})
	return addr
}
