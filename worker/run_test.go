package worker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/buildkit"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
	"github.com/slipway-ci/slipway/registry"
	"github.com/slipway-ci/slipway/test/testenv"
)

// The tests in this file run the whole worker (Run, runJob, the heartbeat)
// in process on a real PostgreSQL queue and a real git daemon, with a fake
// Builder and Registry, and wait on the worker's test signals instead of
// sleeping.

const signalTimeout = 30 * time.Second

// waitSignal returns the next value of s, failing the test after signalTimeout.
func waitSignal[T any](t *testing.T, s *testSignal[T]) T {
	t.Helper()
	select {
	case v := <-s.ch:
		return v
	case <-time.After(signalTimeout):
		t.Fatalf("no test signal within %s", signalTimeout)
		panic("unreachable")
	}
}

// waitEnd waits for the end of an attempt of build id; ends of other builds'
// attempts are skipped.
func waitEnd(t *testing.T, w *Worker, id int64) endHow {
	t.Helper()
	for {
		if e := waitSignal(t, &w.testSignals.attemptEnded); e.BuildID == id {
			return e.How
		}
	}
}

// fakeDigest is the index digest every fake build pushes.
const fakeDigest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

// fakeBuilder builds nothing. Call n (from 1) of Build first waits while
// hold(n) says so, until release is closed or the build's context ends, and
// then returns fail(n) (nil: success with fakeDigest).
type fakeBuilder struct {
	hold    func(n int) bool
	release chan struct{}
	fail    func(n int) error
	entered chan int // receives n as Build starts, if not nil

	mu sync.Mutex
	n  int
}

func (b *fakeBuilder) Build(ctx context.Context, spec buildkit.BuildSpec, log buildkit.LogFunc) (string, error) {
	b.mu.Lock()
	b.n++
	n := b.n
	b.mu.Unlock()
	log("", "fake build of "+spec.Ref)
	if b.entered != nil {
		b.entered <- n
	}
	if b.hold != nil && b.hold(n) {
		select {
		case <-b.release:
		case <-ctx.Done():
			return "", fmt.Errorf("solving: %w", ctx.Err())
		}
	}
	if b.fail != nil {
		if err := b.fail(n); err != nil {
			return "", err
		}
	}
	return fakeDigest, nil
}

func (b *fakeBuilder) RunTest(ctx context.Context, spec buildkit.TestSpec, log buildkit.LogFunc) (int, error) {
	return 0, nil
}

func (b *fakeBuilder) calls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// fakeRegistry holds every image it is asked about, and records tags. Call n
// (from 1) of Tag fails with tagFail(n) when that is not nil.
type fakeRegistry struct {
	tagFail func(n int) error

	mu    sync.Mutex
	tags  []string
	tagsN int
}

var errFakeRegistry = errors.New("fakeRegistry does not do this")

func (r *fakeRegistry) VerifyIndex(ctx context.Context, ref string, wanted []string) (string, []slipway.PlatformDigest, error) {
	_, digest, _ := strings.Cut(ref, "@")
	var platforms []slipway.PlatformDigest
	for i, p := range wanted {
		platforms = append(platforms, slipway.PlatformDigest{Platform: p, Digest: fmt.Sprintf("sha256:%064d", i+2)})
	}
	return digest, platforms, nil
}

func (r *fakeRegistry) Tag(ctx context.Context, repo, digest string, tags []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tagsN++
	if r.tagFail != nil {
		if err := r.tagFail(r.tagsN); err != nil {
			return err
		}
	}
	for _, t := range tags {
		r.tags = append(r.tags, repo+":"+t+"@"+digest)
	}
	return nil
}

func (r *fakeRegistry) tagged() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.tags...)
}

func (r *fakeRegistry) Resolve(ctx context.Context, spec registry.PromoteSpec) (*registry.Resolved, error) {
	return nil, errFakeRegistry
}

func (r *fakeRegistry) Retag(ctx context.Context, res *registry.Resolved) error {
	return errFakeRegistry
}

func (r *fakeRegistry) PushChart(ctx context.Context, ref string, metadata any, tgz []byte) (string, error) {
	return "", errFakeRegistry
}

func (r *fakeRegistry) Attestations(ctx context.Context, ref string) (map[string]string, error) {
	return nil, errFakeRegistry
}

// runEnv is a queue on a database of its own and a repository served by git
// daemon, with one commit of a Dockerfile on main.
type runEnv struct {
	db       *postgres.DB
	builds   *postgres.BuildService
	jobs     *postgres.JobQueue
	repoDir  string
	cloneURL string
	commit   string
}

func newRunEnv(t *testing.T) *runEnv {
	t.Helper()
	base := t.TempDir()
	e := &runEnv{repoDir: filepath.Join(base, "app.git")}
	e.commit = testenv.NewGitRepo(t, e.repoDir, map[string]string{"Dockerfile": "FROM scratch\n"})
	e.cloneURL = testenv.ServeGit(t, base) + "app.git"
	e.db = pgtest.NewDB(t)
	e.builds = postgres.NewBuildService(e.db)
	e.jobs = postgres.NewJobQueue(e.db, zerolog.Nop())
	return e
}

// push queues a build of main at commit as a push does and returns its id.
func (e *runEnv) push(t *testing.T, commit string) int64 {
	t.Helper()
	res, err := e.builds.EnqueueTrigger(context.Background(), slipway.Trigger{Forge: "github", DeliveryID: "push-" + commit,
		Event: "push", Owner: "acme", Name: "app", CloneURL: e.cloneURL, Ref: "refs/heads/main", Commit: commit, Sender: "dev"},
		"127.0.0.1:1/acme/app")
	require.NoError(t, err)
	require.True(t, res.Created)
	return res.Build.ID
}

func (e *runEnv) build(t *testing.T, id int64) *slipway.Build {
	t.Helper()
	b, err := e.builds.FindBuildByID(context.Background(), id)
	require.NoError(t, err)
	return b
}

func (e *runEnv) jobState(t *testing.T, buildID int64) string {
	t.Helper()
	var state string
	require.NoError(t, e.db.Pool().QueryRow(context.Background(), "SELECT state FROM jobs WHERE build_id = $1", buildID).Scan(&state))
	return state
}

// newWorker returns a worker on e with every test signal on; cfg's zero
// fields get quick test values.
func (e *runEnv) newWorker(t *testing.T, cfg Config, b Builder, r Registry) *Worker {
	t.Helper()
	if cfg.ID == "" {
		cfg.ID = "w-" + t.Name()
	}
	cfg.Git, cfg.WorkspaceDir = devGit, t.TempDir()
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 100 * time.Millisecond
	}
	if cfg.StaleAfter == 0 {
		cfg.StaleAfter = 10 * time.Second
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = 10 * time.Millisecond
	}
	w, err := New(zerolog.New(zerolog.NewTestWriter(t)), cfg, e.builds, e.jobs, b, r)
	require.NoError(t, err)
	w.testSignals.buildStarted.init()
	w.testSignals.leaseLost.init()
	w.testSignals.attemptEnded.init()
	w.testSignals.graceStarted.init()
	return w
}

// start runs w until the returned stop is called (or the test ends); stop
// returns Run's error once Run has returned.
func start(t *testing.T, w *Worker) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// TestRunLeaseLost: when another worker takes a running build over (its
// lease went stale and was rescued and claimed again), the first worker's
// heartbeat notices, stops the build and writes nothing: the new owner's
// attempt stands.
func TestRunLeaseLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newRunEnv(t)
	b := &fakeBuilder{hold: func(int) bool { return true }, release: make(chan struct{}), entered: make(chan int, 10)}
	w := e.newWorker(t, Config{}, b, &fakeRegistry{})
	start(t, w)
	id := e.push(t, e.commit)
	require.Equal(t, id, waitSignal(t, &w.testSignals.buildStarted))
	<-b.entered

	// Another worker takes over: the lease goes stale (the victim's heartbeat
	// may renew it in between, so again until the rescue finds it), is
	// rescued and claimed by the thief.
	policy := slipway.RetryPolicy{MaxAttempts: 3, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}
	require.Eventually(t, func() bool {
		_, err := e.db.Pool().Exec(ctx, "UPDATE jobs SET heartbeat_at = now() - interval '1 hour' WHERE build_id = $1", id)
		require.NoError(t, err)
		n, err := e.jobs.JobRescueStuck(ctx, time.Minute, policy)
		require.NoError(t, err)
		return n == 1
	}, signalTimeout, 10*time.Millisecond)
	var thief *slipway.Job
	require.Eventually(t, func() bool {
		claimed, err := e.jobs.JobClaim(ctx, "thief", 1)
		require.NoError(t, err)
		if len(claimed) == 1 {
			thief = claimed[0]
		}
		return thief != nil
	}, signalTimeout, 10*time.Millisecond)
	require.Equal(t, id, thief.BuildID)

	require.Equal(t, id, waitSignal(t, &w.testSignals.leaseLost))
	require.Equal(t, endAbandoned, waitEnd(t, w, id))
	got := e.build(t, id)
	require.Equal(t, slipway.BuildRunning, got.State, "the thief's attempt is not overwritten")
	require.Equal(t, 2, got.Attempt)
	require.Empty(t, got.Error)
	require.Equal(t, "running", e.jobState(t, id))

	// The thief's result is the build's.
	state := slipway.BuildSucceeded
	require.NoError(t, e.jobs.JobComplete(ctx, thief, slipway.BuildUpdate{State: &state}))
	require.Equal(t, slipway.BuildSucceeded, e.build(t, id).State)
}

// listen runs e's job listener (the NOTIFY path of JobWorkSignal and
// JobWatchCancel) until the test ends, and returns once it listens.
func (e *runEnv) listen(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.jobs.Listen(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Listening once a NOTIFY of new work gets through.
	require.Eventually(t, func() bool {
		wake := e.jobs.JobWorkSignal()
		_, err := e.db.Pool().Exec(ctx, "SELECT pg_notify('slipway_jobs', '0')")
		require.NoError(t, err)
		select {
		case <-wake:
			return true
		case <-time.After(100 * time.Millisecond):
			return false
		}
	}, signalTimeout, time.Millisecond)
}

// TestRunSupersedingCancel: a push of a newer commit to the same branch
// cancels the running build of the older one, which ends canceled saying by
// which build; the newer one then runs and succeeds. The cancel arrives by
// NOTIFY, or by the next heartbeat when the NOTIFY is missed.
func TestRunSupersedingCancel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		notify bool
		cfg    Config
	}{
		// A heartbeat far beyond the signal timeout: only the NOTIFY can be in time.
		{"ByNotify", true, Config{HeartbeatInterval: time.Minute, StaleAfter: 5 * time.Minute}},
		{"ByHeartbeat", false, Config{HeartbeatInterval: 100 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newRunEnv(t)
			if tc.notify {
				e.listen(t)
			}
			b := &fakeBuilder{hold: func(n int) bool { return n == 1 }, release: make(chan struct{}), entered: make(chan int, 10)}
			reg := &fakeRegistry{}
			w := e.newWorker(t, tc.cfg, b, reg)
			start(t, w)
			first := e.push(t, e.commit)
			require.Equal(t, first, waitSignal(t, &w.testSignals.buildStarted))
			require.Equal(t, 1, <-b.entered)

			second, err := testenv.CommitFiles(context.Background(), e.repoDir, map[string]string{"Dockerfile": "FROM scratch\nLABEL v=2\n"}, "Second")
			require.NoError(t, err)
			newer := e.push(t, second)

			require.Equal(t, endCompleted, waitEnd(t, w, first))
			got := e.build(t, first)
			require.Equal(t, slipway.BuildCanceled, got.State)
			require.Equal(t, fmt.Sprintf("superseded by build %d", newer), got.Error)
			require.Equal(t, 1, got.Attempt)
			require.Equal(t, "completed", e.jobState(t, first))

			require.Equal(t, endCompleted, waitEnd(t, w, newer))
			got = e.build(t, newer)
			require.Equal(t, slipway.BuildSucceeded, got.State, got.Error)
			require.Equal(t, fakeDigest, got.IndexDigest)
			require.Contains(t, reg.tagged(), "127.0.0.1:1/acme/app:main@"+fakeDigest)
			require.Equal(t, 2, b.calls())
		})
	}
}

// TestRunShutdownGrace: once Run's context ends, a running build may
// finish within the shutdown grace; one still running after it is handed
// back to the queue without counting as an attempt, and runs again.
func TestRunShutdownGrace(t *testing.T) {
	t.Parallel()

	t.Run("FinishesWithinGrace", func(t *testing.T) {
		t.Parallel()
		e := newRunEnv(t)
		b := &fakeBuilder{hold: func(int) bool { return true }, release: make(chan struct{}), entered: make(chan int, 10)}
		w := e.newWorker(t, Config{ShutdownGrace: time.Minute}, b, &fakeRegistry{})
		stop := start(t, w)
		id := e.push(t, e.commit)
		<-b.entered
		stopped := make(chan error, 1)
		go func() { stopped <- stop() }()
		waitSignal(t, &w.testSignals.graceStarted)
		close(b.release) // the build finishes while the worker stops
		require.Equal(t, endCompleted, waitEnd(t, w, id))
		require.NoError(t, <-stopped)
		got := e.build(t, id)
		require.Equal(t, slipway.BuildSucceeded, got.State, got.Error)
		require.Equal(t, "completed", e.jobState(t, id))
	})

	t.Run("HandedBackAfterGrace", func(t *testing.T) {
		t.Parallel()
		e := newRunEnv(t)
		b := &fakeBuilder{hold: func(n int) bool { return n == 1 }, release: make(chan struct{}), entered: make(chan int, 10)}
		w := e.newWorker(t, Config{ShutdownGrace: 200 * time.Millisecond}, b, &fakeRegistry{})
		stop := start(t, w)
		id := e.push(t, e.commit)
		<-b.entered
		require.NoError(t, stop())
		require.Equal(t, endReleased, waitEnd(t, w, id))
		got := e.build(t, id)
		require.Equal(t, slipway.BuildQueued, got.State)
		require.Equal(t, "available", e.jobState(t, id))

		// Another worker runs it; the handed-back attempt does not count
		// against MaxAttempts: one attempt left is enough.
		w2 := e.newWorker(t, Config{ID: "w2", MaxAttempts: 1}, b, &fakeRegistry{})
		start(t, w2)
		require.Equal(t, endCompleted, waitEnd(t, w2, id))
		got = e.build(t, id)
		require.Equal(t, slipway.BuildSucceeded, got.State, got.Error)
		require.Len(t, got.Attempts, 2)
		require.Equal(t, "w2", got.Attempts[1].Worker)
	})
}

// TestRunInfraRetry: a build whose builder answers Unavailable once runs
// again and succeeds on its second attempt, the first one recorded as the
// infrastructure's; a user error (a failing RUN step) fails the build at
// once, with the message builds have always shown.
func TestRunInfraRetry(t *testing.T) {
	t.Parallel()

	t.Run("UnavailableRetried", func(t *testing.T) {
		t.Parallel()
		e := newRunEnv(t)
		b := &fakeBuilder{fail: func(n int) error {
			if n == 1 {
				return status.Error(codes.Unavailable, "buildkitd restarting")
			}
			return nil
		}}
		w := e.newWorker(t, Config{}, b, &fakeRegistry{})
		start(t, w)
		id := e.push(t, e.commit)
		require.Equal(t, endRetried, waitEnd(t, w, id))
		require.Equal(t, endCompleted, waitEnd(t, w, id))
		got := e.build(t, id)
		require.Equal(t, slipway.BuildSucceeded, got.State, got.Error)
		require.Equal(t, 2, got.Attempt)
		require.Len(t, got.Attempts, 2)
		require.True(t, got.Attempts[0].Infra)
		require.Equal(t, "build failed: rpc error: code = Unavailable desc = buildkitd restarting", got.Attempts[0].Error)
		require.False(t, got.Attempts[1].Infra)
		require.Equal(t, 2, b.calls())
	})

	t.Run("UserErrorNotRetried", func(t *testing.T) {
		t.Parallel()
		e := newRunEnv(t)
		runStep := errors.New(`process "/bin/sh -c exit 3" did not complete successfully: exit code: 3`)
		b := &fakeBuilder{fail: func(int) error { return fmt.Errorf("solving: %w", runStep) }}
		w := e.newWorker(t, Config{}, b, &fakeRegistry{})
		start(t, w)
		id := e.push(t, e.commit)
		require.Equal(t, endCompleted, waitEnd(t, w, id))
		got := e.build(t, id)
		require.Equal(t, slipway.BuildFailed, got.State)
		require.Equal(t, "build failed: solving: "+runStep.Error(), got.Error)
		require.Equal(t, 1, got.Attempt)
		require.Len(t, got.Attempts, 1)
		require.False(t, got.Attempts[0].Infra)
		require.Equal(t, 1, b.calls())
	})

	t.Run("RegistryUnavailableRetried", func(t *testing.T) {
		t.Parallel()
		e := newRunEnv(t)
		reg := &fakeRegistry{tagFail: func(n int) error {
			if n == 1 {
				return slipway.Errorf(slipway.EUNAVAILABLE, "registry answered 503")
			}
			return nil
		}}
		w := e.newWorker(t, Config{}, &fakeBuilder{}, reg)
		start(t, w)
		id := e.push(t, e.commit)
		require.Equal(t, endRetried, waitEnd(t, w, id))
		require.Equal(t, endCompleted, waitEnd(t, w, id))
		got := e.build(t, id)
		require.Equal(t, slipway.BuildSucceeded, got.State, got.Error)
		require.Equal(t, 2, got.Attempt)
		require.True(t, got.Attempts[0].Infra)
		require.Equal(t, "tagging main failed: slipway error: code=unavailable message=registry answered 503", got.Attempts[0].Error)
	})

	t.Run("RegistryRefusalNotRetried", func(t *testing.T) {
		t.Parallel()
		e := newRunEnv(t)
		reg := &fakeRegistry{tagFail: func(int) error { return slipway.Errorf(slipway.EFORBIDDEN, "registry answered 403") }}
		w := e.newWorker(t, Config{}, &fakeBuilder{}, reg)
		start(t, w)
		id := e.push(t, e.commit)
		require.Equal(t, endCompleted, waitEnd(t, w, id))
		got := e.build(t, id)
		require.Equal(t, slipway.BuildFailed, got.State)
		require.Equal(t, 1, got.Attempt)
		require.Equal(t, "tagging main failed: slipway error: code=forbidden message=registry answered 403", got.Error)
	})
}
