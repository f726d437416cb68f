package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
)

type testBundle struct {
	db     *postgres.DB
	builds *postgres.BuildService
	jobs   *postgres.JobQueue
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	db := pgtest.NewDB(t)
	return &testBundle{db: db, builds: postgres.NewBuildService(db), jobs: postgres.NewJobQueue(db, zerolog.Nop())}
}

type triggerOpts struct {
	Delivery string
	Owner    string
	Ref      string
}

func newTrigger(o triggerOpts) slipway.Trigger {
	if o.Owner == "" {
		o.Owner = "Acme"
	}
	if o.Ref == "" {
		o.Ref = "refs/heads/main"
	}
	return slipway.Trigger{
		Forge: "github", DeliveryID: o.Delivery, Event: "push", Owner: o.Owner, Name: "App",
		CloneURL: "https://github.com/acme/app.git", Ref: o.Ref,
		Commit: "0123456789abcdef0123456789abcdef01234567", Message: "fix it", Sender: "octocat",
	}
}

func count(t *testing.T, db *postgres.DB, table string) int {
	t.Helper()
	var n int
	require.NoError(t, db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n))
	return n
}

func TestEnqueueTrigger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("CreatesRepoBuildAndJob", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		res, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "d1"}), "reg/acme/app")
		require.NoError(t, err)
		require.True(t, res.Created)
		require.Equal(t, slipway.BuildQueued, res.Build.State)
		require.Equal(t, "Acme/App", res.Build.Repo)
		require.Equal(t, "reg/acme/app", res.Build.Image)
		require.Equal(t, 1, count(t, b.db, "repos"))
		require.Equal(t, 1, count(t, b.db, "jobs"))
		require.Equal(t, 1, count(t, b.db, "webhook_deliveries"))

		// A second push of the same repository (other case) reuses the repository row.
		res2, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "d2", Owner: "acme"}), "reg/other")
		require.NoError(t, err)
		require.True(t, res2.Created)
		require.Equal(t, res.Build.RepoID, res2.Build.RepoID)
		require.Equal(t, "reg/acme/app", res2.Build.Image, "the image is fixed at registration")
	})

	// A caller that found the repository (the webhook, for its secret) passes
	// its id: the build is queued under it without a second lookup by name,
	// the default branch still follows the payload, and a repository deleted
	// in between is ECONFLICT with nothing written (it is not re-registered).
	t.Run("KnownRepository", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		first, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "k1"}), "reg/acme/app")
		require.NoError(t, err)
		tr := newTrigger(triggerOpts{Delivery: "k2", Owner: "acme"})
		tr.RepoID, tr.DefaultBranch = first.Build.RepoID, "trunk"
		res, err := b.builds.EnqueueTrigger(ctx, tr, "reg/other")
		require.NoError(t, err)
		require.True(t, res.Created)
		require.Equal(t, first.Build.RepoID, res.Build.RepoID)
		require.Equal(t, "reg/acme/app", res.Build.Image)
		require.Equal(t, 1, count(t, b.db, "repos WHERE default_branch = 'trunk'"))

		b.exec(t, "DELETE FROM repos")
		tr.DeliveryID = "k3"
		_, err = b.builds.EnqueueTrigger(ctx, tr, "reg/acme/app")
		require.Equal(t, slipway.ECONFLICT, slipway.ErrorCode(err), "%v", err)
		require.Equal(t, 0, count(t, b.db, "repos"))
		require.Equal(t, 0, count(t, b.db, "webhook_deliveries"))
	})

	t.Run("RedeliveryReturnsFirstBuild", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		first, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "same"}), "reg/acme/app")
		require.NoError(t, err)
		again, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "same"}), "reg/acme/app")
		require.NoError(t, err)
		require.False(t, again.Created)
		require.Equal(t, first.Build.ID, again.Build.ID)
		require.Equal(t, 1, count(t, b.db, "builds"))
		require.Equal(t, 1, count(t, b.db, "jobs"))
	})

	t.Run("ConcurrentRedeliveryMakesOneBuild", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const n = 8
		var wg sync.WaitGroup
		start := make(chan struct{})
		ids := make([]int64, n)
		created := make([]bool, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "race"}), "reg/acme/app")
				errs[i] = err
				if err == nil {
					ids[i], created[i] = res.Build.ID, res.Created
				}
			}()
		}
		close(start)
		wg.Wait()
		nCreated := 0
		for i := range n {
			require.NoError(t, errs[i])
			require.Equal(t, ids[0], ids[i])
			if created[i] {
				nCreated++
			}
		}
		require.Equal(t, 1, nCreated)
		require.Equal(t, 1, count(t, b.db, "builds"))
		require.Equal(t, 1, count(t, b.db, "jobs"))
	})

	t.Run("InvalidCommitWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tr := newTrigger(triggerOpts{Delivery: "bad"})
		tr.Commit = "nothex"
		_, err := b.builds.EnqueueTrigger(ctx, tr, "reg/acme/app")
		require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err))
		require.Equal(t, 0, count(t, b.db, "repos"))
		require.Equal(t, 0, count(t, b.db, "builds"))
	})
}

func TestFindBuilds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	for i, ref := range []string{"refs/heads/main", "refs/heads/dev", "refs/tags/v1", "refs/heads/main"} {
		_, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: fmt.Sprint(i), Ref: ref}), "reg/acme/app")
		require.NoError(t, err)
	}
	all, err := b.builds.FindBuilds(ctx, slipway.BuildFilter{})
	require.NoError(t, err)
	require.Len(t, all, 4)
	require.Greater(t, all[0].ID, all[1].ID, "newest first")

	main, err := b.builds.FindBuilds(ctx, slipway.BuildFilter{Ref: "main", Repo: "acme/app"})
	require.NoError(t, err)
	require.Len(t, main, 2)

	tags, err := b.builds.FindBuilds(ctx, slipway.BuildFilter{Ref: "refs/tags/v1", State: slipway.BuildQueued})
	require.NoError(t, err)
	require.Len(t, tags, 1)

	none, err := b.builds.FindBuilds(ctx, slipway.BuildFilter{Repo: "other/app"})
	require.NoError(t, err)
	require.Empty(t, none)

	_, err = b.builds.FindBuilds(ctx, slipway.BuildFilter{State: "bogus"})
	require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err))

	_, err = b.builds.FindBuildByID(ctx, 999999)
	require.Equal(t, slipway.ENOTFOUND, slipway.ErrorCode(err))
}

func TestLogs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	res, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "l"}), "reg/acme/app")
	require.NoError(t, err)
	now := time.Now()
	require.NoError(t, b.builds.AppendLog(ctx, res.Build.ID, []slipway.LogLine{
		{Time: now, Step: "checkout", Text: "fetching"},
		{Time: now, Platform: "linux/arm64", Step: "build", Text: "RUN uname -m\x00"},
	}))
	require.NoError(t, b.builds.AppendLog(ctx, res.Build.ID, []slipway.LogLine{{Time: now, Text: "done"}}))
	require.Equal(t, 2, count(t, b.db, "build_log_chunks"), "one row per batch")
	var sb strings.Builder
	require.NoError(t, b.builds.WriteLog(ctx, res.Build.ID, &sb))
	out := sb.String()
	require.Contains(t, out, " fetching\n")
	require.Contains(t, out, " [linux/arm64] RUN uname -m\n")
	require.Less(t, strings.Index(out, "fetching"), strings.Index(out, "done"))
}

// noBackoff retries at once, up to 3 attempts.
var noBackoff = slipway.RetryPolicy{MaxAttempts: 3}

func TestJobQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("ClaimSkipsLockedAndNeverTwice", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		// Tags: pushes of one branch would supersede each other.
		for i := range 10 {
			_, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: fmt.Sprint(i), Ref: fmt.Sprint("refs/tags/v", i)}), "reg/acme/app")
			require.NoError(t, err)
		}
		_, err := b.db.Pool().Exec(ctx, "UPDATE repos SET max_running = 100")
		require.NoError(t, err)
		var mu sync.Mutex
		seen := map[int64]string{}
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				worker := fmt.Sprintf("w%d", w)
				for {
					jobs, err := b.jobs.JobClaim(ctx, worker, 2)
					if err != nil {
						t.Error(err)
						return
					}
					if len(jobs) == 0 {
						return
					}
					mu.Lock()
					for _, j := range jobs {
						if prev, dup := seen[j.ID]; dup {
							t.Errorf("job %d claimed by %s and %s", j.ID, prev, worker)
						}
						seen[j.ID] = worker
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		require.Len(t, seen, 10)
		running, err := b.builds.FindBuilds(ctx, slipway.BuildFilter{State: slipway.BuildRunning})
		require.NoError(t, err)
		require.Len(t, running, 10)
		require.NotNil(t, running[0].StartedAt)
	})

	t.Run("LeaseLifecycle", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		res, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "x"}), "reg/acme/app")
		require.NoError(t, err)
		jobs, err := b.jobs.JobClaim(ctx, "dead", 5)
		require.NoError(t, err)
		require.Len(t, jobs, 1)
		dead := jobs[0]
		require.Equal(t, 1, dead.Attempt)

		hb, err := b.jobs.JobHeartbeat(ctx, jobs)
		require.NoError(t, err)
		require.Empty(t, hb.Lost)

		// Nothing is stale yet.
		n, err := b.jobs.JobRescueStuck(ctx, time.Minute, noBackoff)
		require.NoError(t, err)
		require.Zero(t, n)

		// Age the lease as if the worker had died a minute ago.
		_, err = b.db.Pool().Exec(ctx, "UPDATE jobs SET heartbeat_at = now() - interval '61 seconds'")
		require.NoError(t, err)
		n, err = b.jobs.JobRescueStuck(ctx, time.Minute, noBackoff)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		build, err := b.builds.FindBuildByID(ctx, res.Build.ID)
		require.NoError(t, err)
		require.Equal(t, slipway.BuildQueued, build.State)

		again, err := b.jobs.JobClaim(ctx, "alive", 5)
		require.NoError(t, err)
		require.Len(t, again, 1)
		require.Equal(t, 2, again[0].Attempt)

		// The presumed-dead worker can neither renew nor write.
		hb, err = b.jobs.JobHeartbeat(ctx, []*slipway.Job{dead})
		require.NoError(t, err)
		require.Equal(t, []int64{dead.ID}, hb.Lost)
		failed := slipway.BuildFailed
		err = b.jobs.JobComplete(ctx, dead, slipway.BuildUpdate{State: &failed})
		require.Equal(t, slipway.ECONFLICT, slipway.ErrorCode(err))

		testing_ := slipway.BuildTesting
		digest := "sha256:abc"
		require.NoError(t, b.jobs.JobUpdateBuild(ctx, again[0], slipway.BuildUpdate{State: &testing_, IndexDigest: &digest,
			Platforms: []slipway.PlatformDigest{{Platform: "linux/amd64", Digest: "sha256:1"}}}))
		ok := slipway.BuildSucceeded
		require.NoError(t, b.jobs.JobComplete(ctx, again[0], slipway.BuildUpdate{State: &ok, Tags: []string{"main"}}))
		build, err = b.builds.FindBuildByID(ctx, res.Build.ID)
		require.NoError(t, err)
		require.Equal(t, slipway.BuildSucceeded, build.State)
		require.Equal(t, digest, build.IndexDigest)
		require.Equal(t, []string{"main"}, build.Tags)
		require.Equal(t, 2, build.Attempt)
		require.NotNil(t, build.FinishedAt)
		require.Len(t, build.Platforms, 1)

		none, err := b.jobs.JobClaim(ctx, "alive", 5)
		require.NoError(t, err)
		require.Empty(t, none)
	})

	t.Run("OutOfAttemptsFails", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		res, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "y"}), "reg/acme/app")
		require.NoError(t, err)
		// One attempt met buildkitd down, the next lost its worker: out of
		// two attempts, though only one worker was lost.
		policy := slipway.RetryPolicy{MaxAttempts: 2}
		jobs, err := b.jobs.JobClaim(ctx, "w", 1)
		require.NoError(t, err)
		require.Len(t, jobs, 1)
		retried, err := b.jobs.JobRetry(ctx, jobs[0], "buildkitd unreachable", policy)
		require.NoError(t, err)
		require.True(t, retried)
		jobs, err = b.jobs.JobClaim(ctx, "w", 1)
		require.NoError(t, err)
		require.Len(t, jobs, 1)
		_, err = b.db.Pool().Exec(ctx, "UPDATE jobs SET heartbeat_at = now() - interval '1 hour'")
		require.NoError(t, err)
		_, err = b.jobs.JobRescueStuck(ctx, time.Minute, policy)
		require.NoError(t, err)
		build, err := b.builds.FindBuildByID(ctx, res.Build.ID)
		require.NoError(t, err)
		require.Equal(t, slipway.BuildFailed, build.State)
		require.Contains(t, build.Error, "stopped answering 2 times")
	})

	t.Run("NotifyWakesWaiter", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- b.jobs.Listen(lctx) }()
		defer func() { cancel(); <-done }()
		// Wait until the listener's LISTEN is in place, then enqueue and expect a
		// wake-up long before the poll timeout.
		require.Eventually(t, func() bool {
			var n int
			_ = b.db.Pool().QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND state = 'idle' AND datname = current_database()").Scan(&n)
			return n == 1
		}, 10*time.Second, 10*time.Millisecond)
		// The signal is taken before the enqueue, as a worker takes it before
		// claiming; the LISTEN may still miss the first notifies, so enqueue
		// (each a new notify) until it fires.
		woke := b.jobs.JobWorkSignal()
		for i := 0; ; i++ {
			_, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: fmt.Sprint("n", i), Ref: fmt.Sprint("refs/tags/n", i)}), "reg/acme/app")
			require.NoError(t, err)
			select {
			case <-woke:
				return
			case <-time.After(200 * time.Millisecond):
				require.Less(t, i, 50, "no wake-up after 50 notifications")
			}
		}
	})
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	require.NoError(t, b.db.SchemaCurrent(ctx))
	applied, err := b.db.Migrate(ctx)
	require.NoError(t, err)
	require.Empty(t, applied, "a migrated database has nothing pending")
	// EnqueueTrigger reads the new build's id from the sequence by its name.
	var sameSequence bool
	require.NoError(t, b.db.Pool().QueryRow(ctx,
		`SELECT pg_get_serial_sequence('builds', 'id')::regclass = 'builds_id_seq'::regclass`).Scan(&sameSequence))
	require.True(t, sameSequence, "builds.id's sequence is builds_id_seq")
	// The build_state domain mirrors slipway.BuildStates.
	_, err = b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "m"}), "reg/acme/app")
	require.NoError(t, err)
	_, err = b.db.Pool().Exec(ctx, "UPDATE builds SET state = 'bogus'")
	require.Error(t, err)
	for _, s := range slipway.BuildStates {
		err := pgx.BeginFunc(ctx, b.db.Pool(), func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "UPDATE builds SET state = $1::text, finished_at = CASE WHEN $1::text IN ('succeeded','failed','canceled') THEN now() END", string(s))
			return err
		})
		require.NoError(t, err, "state %s", s)
	}
}
