package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// enqueue queues a build of acme/<name> at ref and returns its id.
func (b *testBundle) enqueue(t *testing.T, name, ref string) int64 {
	t.Helper()
	tr := newTrigger(triggerOpts{Delivery: fmt.Sprintf("%s-%s-%d", name, ref, time.Now().UnixNano()), Ref: ref})
	tr.Name = name
	res, err := b.builds.EnqueueTrigger(context.Background(), tr, "reg/acme/"+name)
	require.NoError(t, err)
	require.True(t, res.Created)
	return res.Build.ID
}

func (b *testBundle) build(t *testing.T, id int64) *slipway.Build {
	t.Helper()
	build, err := b.builds.FindBuildByID(context.Background(), id)
	require.NoError(t, err)
	return build
}

func (b *testBundle) claimOne(t *testing.T, worker string) *slipway.Job {
	t.Helper()
	jobs, err := b.jobs.JobClaim(context.Background(), worker, 1)
	require.NoError(t, err)
	if len(jobs) == 0 {
		return nil
	}
	return jobs[0]
}

func (b *testBundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	_, err := b.db.Pool().Exec(context.Background(), sql, args...)
	require.NoError(t, err)
}

func TestJobClaimLimitsAndFairness(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("OtherRepoStartsBeforeSecondOfLimitedRepo", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var a []int64
		for range 5 {
			a = append(a, b.enqueue(t, "a", "refs/tags/v"+fmt.Sprint(len(a))))
		}
		bID := b.enqueue(t, "b", "refs/heads/main")
		b.exec(t, "UPDATE repos SET max_running = 1 WHERE name = 'a'")

		first := b.claimOne(t, "w1")
		require.Equal(t, a[0], first.BuildID, "the oldest job goes first")
		second := b.claimOne(t, "w2")
		require.Equal(t, bID, second.BuildID, "repo a is at its limit of 1; b runs before a's second")
		require.Nil(t, b.claimOne(t, "w3"), "nothing may start while a is at its limit")

		ok := slipway.BuildSucceeded
		require.NoError(t, b.jobs.JobComplete(ctx, first, slipway.BuildUpdate{State: &ok}))
		third := b.claimOne(t, "w1")
		require.Equal(t, a[1], third.BuildID)
	})

	t.Run("LeastBusyRepoFirst", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var a []int64
		for i := range 4 {
			a = append(a, b.enqueue(t, "a", fmt.Sprintf("refs/heads/f%d", i)))
		}
		bID := b.enqueue(t, "b", "refs/heads/main")
		// The default limit of 2 allows a's second, but b has nothing running.
		require.Equal(t, a[0], b.claimOne(t, "w").BuildID)
		require.Equal(t, bID, b.claimOne(t, "w").BuildID)
		require.Equal(t, a[1], b.claimOne(t, "w").BuildID)
		require.Nil(t, b.claimOne(t, "w"), "a at its default limit of 2")
	})

	t.Run("ConcurrentClaimersNeverExceedLimit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for i := range 12 {
			b.enqueue(t, "a", fmt.Sprintf("refs/heads/f%d", i))
		}
		b.exec(t, "UPDATE repos SET max_running = 3")
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := range 6 {
			wg.Go(func() {
				<-start
				_, err := b.jobs.JobClaim(ctx, fmt.Sprint("w", w), 2)
				require.NoError(t, err)
			})
		}
		close(start)
		wg.Wait()
		require.Equal(t, 3, count(t, b.db, "jobs WHERE state = 'running'"))
	})

	t.Run("ClaimManyTakesOnePerRepoPerRound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for i := range 3 {
			b.enqueue(t, "a", fmt.Sprintf("refs/heads/f%d", i))
		}
		bID := b.enqueue(t, "b", "refs/heads/main")
		jobs, err := b.jobs.JobClaim(ctx, "w", 2)
		require.NoError(t, err)
		require.Len(t, jobs, 2)
		require.Equal(t, bID, jobs[1].BuildID)
	})
}

func TestSupersede(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("QueuedCanceledRunningAskedToStop", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- b.jobs.Listen(lctx) }()
		defer func() { cancel(); <-done }()

		first := b.enqueue(t, "app", "refs/heads/main")
		tag := b.enqueue(t, "app", "refs/tags/v1")
		other := b.enqueue(t, "app", "refs/heads/dev")
		job := b.claimOne(t, "w")
		require.Equal(t, first, job.BuildID)
		watch, unwatch := b.jobs.JobWatchCancel(job)
		defer unwatch()

		// The LISTEN may not be in place yet: wait until it has run (its
		// connection idle again: while it is active, a NOTIFY can still be missed),
		// as in NotifyWakesWaiter.
		require.Eventually(t, func() bool {
			return count(t, b.db, "pg_stat_activity WHERE query LIKE 'LISTEN%' AND state = 'idle' AND datname = current_database()") == 1
		}, 10*time.Second, 10*time.Millisecond)

		second := b.enqueue(t, "app", "refs/heads/main")
		select {
		case reason := <-watch:
			require.Equal(t, fmt.Sprintf("superseded by build %d", second), reason)
		case <-time.After(10 * time.Second):
			t.Fatal("no cancel notification for the running build")
		}
		hb, err := b.jobs.JobHeartbeat(ctx, []*slipway.Job{job})
		require.NoError(t, err)
		require.Equal(t, map[int64]string{job.ID: fmt.Sprintf("superseded by build %d", second)}, hb.Cancel, "the heartbeat is the fallback")
		require.Equal(t, slipway.BuildRunning, b.build(t, first).State, "its worker ends it")

		third := b.enqueue(t, "app", "refs/heads/main")
		got := b.build(t, second)
		require.Equal(t, slipway.BuildCanceled, got.State)
		require.Equal(t, fmt.Sprintf("superseded by build %d", third), got.Error)
		require.NotNil(t, got.FinishedAt)
		require.Equal(t, slipway.BuildQueued, b.build(t, tag).State, "a tag is never superseded by a branch")
		require.Equal(t, slipway.BuildQueued, b.build(t, other).State, "another branch is not superseded")
		require.Equal(t, slipway.BuildQueued, b.build(t, third).State)

		canceled := slipway.BuildCanceled
		reason := hb.Cancel[job.ID]
		require.NoError(t, b.jobs.JobComplete(ctx, job, slipway.BuildUpdate{State: &canceled, Error: &reason}))
		got = b.build(t, first)
		require.Equal(t, slipway.BuildCanceled, got.State)
		require.Len(t, got.Attempts, 1)
		require.Equal(t, reason, got.Attempts[0].Error)
	})

	// Concurrent pushes of one branch: without a lock held to commit, each
	// delivery's statements would miss the others' uncommitted builds and
	// none would be superseded. The repository's row is no longer locked by
	// every delivery (issue 11, Speed), so the per-ref advisory lock of
	// EnqueueTrigger is what makes exactly one build stay queued. The first
	// round registers the repository, racing on its insert.
	t.Run("ConcurrentPushesOfABranch", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for round := range 2 {
			const n = 8
			ids := make(chan int64, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					tr := newTrigger(triggerOpts{Delivery: fmt.Sprintf("c-%d-%d", round, i)})
					res, err := b.builds.EnqueueTrigger(ctx, tr, "reg/acme/app")
					assert.NoError(t, err)
					if err == nil {
						ids <- res.Build.ID
					}
				})
			}
			close(start)
			wg.Wait()
			close(ids)
			require.Len(t, ids, n)
			require.Equal(t, 1, count(t, b.db, "repos"), "one repository, registered once")
			require.Equal(t, 1, count(t, b.db, "builds WHERE state = 'queued'"), "round %d: every build but the newest is superseded", round)
			require.Equal(t, (round+1)*n-1, count(t, b.db, "builds WHERE state = 'canceled'"))
		}
	})

	t.Run("OffPerRepository", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		first := b.enqueue(t, "app", "refs/heads/main")
		b.exec(t, "UPDATE repos SET supersede = false")
		b.enqueue(t, "app", "refs/heads/main")
		require.Equal(t, slipway.BuildQueued, b.build(t, first).State)
	})

	t.Run("OtherRepoSameBranchUntouched", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		first := b.enqueue(t, "app", "refs/heads/main")
		b.enqueue(t, "other", "refs/heads/main")
		require.Equal(t, slipway.BuildQueued, b.build(t, first).State)
	})

	t.Run("RescueOfSupersededEndsCanceled", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		first := b.enqueue(t, "app", "refs/heads/main")
		require.NotNil(t, b.claimOne(t, "dead"))
		b.enqueue(t, "app", "refs/heads/main")
		b.exec(t, "UPDATE jobs SET heartbeat_at = now() - interval '1 hour' WHERE state = 'running'")
		n, err := b.jobs.JobRescueStuck(ctx, time.Minute, noBackoff)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		got := b.build(t, first)
		require.Equal(t, slipway.BuildCanceled, got.State)
		require.Contains(t, got.Error, "superseded by build")
	})
}

func TestJobRetryAndRelease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("InfraFailureRetriedWithBackoffThenGivesUp", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(t, "app", "refs/heads/main")
		policy := slipway.RetryPolicy{MaxAttempts: 2, Backoff: time.Hour, MaxBackoff: 2 * time.Hour}

		job := b.claimOne(t, "w1")
		retried, err := b.jobs.JobRetry(ctx, job, "buildkitd unreachable", policy)
		require.NoError(t, err)
		require.True(t, retried)
		got := b.build(t, id)
		require.Equal(t, slipway.BuildQueued, got.State)
		require.Contains(t, got.Error, "attempt 1 failed (infrastructure): buildkitd unreachable; retrying in 1h0m0s")
		require.Nil(t, b.claimOne(t, "w2"), "the backoff holds the job back")

		b.exec(t, "UPDATE jobs SET run_after = now()")
		job = b.claimOne(t, "w2")
		require.Equal(t, 2, job.Attempt)
		require.Empty(t, b.build(t, id).Error, "a new attempt clears the error")
		retried, err = b.jobs.JobRetry(ctx, job, "registry answered 503", policy)
		require.NoError(t, err)
		require.False(t, retried, "out of attempts")
		got = b.build(t, id)
		require.Equal(t, slipway.BuildFailed, got.State)
		require.Contains(t, got.Error, "gave up after 2 attempts")
		require.Len(t, got.Attempts, 2)
		for i, a := range got.Attempts {
			require.Equal(t, i+1, a.Attempt)
			require.Equal(t, fmt.Sprint("w", i+1), a.Worker)
			require.True(t, a.Infra)
			require.NotNil(t, a.FinishedAt)
		}
		require.Equal(t, "registry answered 503", got.Attempts[1].Error)
	})

	t.Run("ReleaseDoesNotCountAsAttempt", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(t, "app", "refs/heads/main")
		job := b.claimOne(t, "w1")
		require.NoError(t, b.jobs.JobRelease(ctx, job, "worker shut down"))
		got := b.build(t, id)
		require.Equal(t, slipway.BuildQueued, got.State)
		require.False(t, got.Attempts[0].Infra)

		job = b.claimOne(t, "w2")
		require.NotNil(t, job, "released jobs are available at once")
		require.Equal(t, 2, job.Attempt)
		retried, err := b.jobs.JobRetry(ctx, job, "buildkitd crashed", slipway.RetryPolicy{MaxAttempts: 2})
		require.NoError(t, err)
		require.True(t, retried, "one counted attempt of two: the released one is forgiven")

		// The released worker's old lease is gone.
		err = b.jobs.JobRelease(ctx, &slipway.Job{ID: job.ID, BuildID: id, Attempt: 1, WorkerID: "w1"}, "again")
		require.Equal(t, slipway.ECONFLICT, slipway.ErrorCode(err))
	})

	t.Run("RescueBacksOff", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.enqueue(t, "app", "refs/heads/main")
		require.NotNil(t, b.claimOne(t, "dead"))
		b.exec(t, "UPDATE jobs SET heartbeat_at = now() - interval '1 hour'")
		n, err := b.jobs.JobRescueStuck(ctx, time.Minute, slipway.RetryPolicy{MaxAttempts: 3, Backoff: time.Hour, MaxBackoff: time.Hour})
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.Nil(t, b.claimOne(t, "w"))
		require.Equal(t, 1, count(t, b.db, "build_attempts WHERE infra AND error LIKE '%stopped answering%'"))
	})
}

// TestJobRescueLostWorkers: a build whose worker dies (killed for memory by a
// poison .slipway.yml, say) is rescued once; the second lost worker fails it,
// whatever attempts are left, so it does not take every worker down in turn.
func TestJobRescueLostWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	policy := slipway.RetryPolicy{MaxAttempts: 10}
	stale := func(t *testing.T, b *testBundle) {
		t.Helper()
		b.exec(t, "UPDATE jobs SET heartbeat_at = now() - interval '1 hour' WHERE state = 'running'")
		n, err := b.jobs.JobRescueStuck(ctx, time.Minute, policy)
		require.NoError(t, err)
		require.Equal(t, 1, n)
	}

	t.Run("SecondLostWorkerFailsTheBuild", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(t, "app", "refs/heads/main")
		require.NotNil(t, b.claimOne(t, "killed-1"))
		stale(t, b)
		got := b.build(t, id)
		require.Equal(t, slipway.BuildQueued, got.State, "one lost worker may be bad luck: retried")
		require.Contains(t, got.Error, "attempt 1: the worker running this build stopped answering; retrying")

		require.NotNil(t, b.claimOne(t, "killed-2"))
		stale(t, b)
		got = b.build(t, id)
		require.Equal(t, slipway.BuildFailed, got.State)
		require.Equal(t, "The worker running this build stopped twice (killed, out of memory?); it is not retried again. "+
			"Check the build's log and .slipway.yml, then retry it.", got.Error)
		require.NotNil(t, got.FinishedAt)
		require.Len(t, got.Attempts, 2)
		for _, a := range got.Attempts {
			require.True(t, a.Infra)
			require.NotNil(t, a.FinishedAt)
		}
		require.Nil(t, b.claimOne(t, "next"), "no third worker gets it")
		require.Equal(t, 1, count(t, b.db, "jobs WHERE state = 'completed' AND lost_workers = 2 AND finished_at IS NOT NULL"))
	})

	t.Run("ShutdownIsNoLostWorker", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(t, "app", "refs/heads/main")
		job := b.claimOne(t, "w1")
		require.NoError(t, b.jobs.JobRelease(ctx, job, "worker shut down"))
		require.NotNil(t, b.claimOne(t, "killed"))
		stale(t, b)
		require.Equal(t, slipway.BuildQueued, b.build(t, id).State, "a handed-back job lost no worker")
		job = b.claimOne(t, "w3")
		require.NotNil(t, job)
		ok := slipway.BuildSucceeded
		require.NoError(t, b.jobs.JobComplete(ctx, job, slipway.BuildUpdate{State: &ok}))
		require.Equal(t, slipway.BuildSucceeded, b.build(t, id).State)
	})

	t.Run("CountedPerJob", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		first := b.enqueue(t, "app", "refs/tags/v1")
		second := b.enqueue(t, "app", "refs/tags/v2")
		b.exec(t, "UPDATE repos SET max_running = 1")
		require.NotNil(t, b.claimOne(t, "killed-1"))
		stale(t, b)
		// Hold the first back so the second build's job runs next.
		b.exec(t, "UPDATE jobs SET run_after = now() + interval '1 hour' WHERE build_id = $1", first)
		require.NotNil(t, b.claimOne(t, "killed-2"))
		stale(t, b)
		require.Equal(t, 2, count(t, b.db, "jobs WHERE state = 'available' AND lost_workers = 1"))
		require.Equal(t, slipway.BuildQueued, b.build(t, first).State)
		require.Equal(t, slipway.BuildQueued, b.build(t, second).State)
	})
}

func TestRetryPolicyDelay(t *testing.T) {
	t.Parallel()
	p := slipway.RetryPolicy{MaxAttempts: 5, Backoff: time.Second, MaxBackoff: 5 * time.Second}
	require.Equal(t, time.Second, p.Delay(1))
	require.Equal(t, 2*time.Second, p.Delay(2))
	require.Equal(t, 4*time.Second, p.Delay(3))
	require.Equal(t, 5*time.Second, p.Delay(4))
	require.Equal(t, 5*time.Second, p.Delay(10))
}

// TestJobClaimReturnsBuild: the claim hands the worker its build as a read
// right after the claim finds it (running, attempt counted, the earlier
// attempt's results cleared), so the worker need not read it again.
func TestJobClaimReturnsBuild(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	id := b.enqueue(t, "app", "refs/heads/main")
	job := b.claimOne(t, "w1")
	require.NotNil(t, job)
	require.NotNil(t, job.Build)
	// A first attempt that left results, then failed for the infrastructure.
	image := "reg/acme/app:sha-x"
	require.NoError(t, b.jobs.JobUpdateBuild(ctx, job, slipway.BuildUpdate{ImageRef: &image}))
	_, err := b.jobs.JobRetry(ctx, job, "buildkitd unreachable", slipway.RetryPolicy{MaxAttempts: 3})
	require.NoError(t, err)
	b.exec(t, "UPDATE jobs SET run_after = now()")

	job = b.claimOne(t, "w2")
	require.NotNil(t, job)
	want := b.build(t, id)
	want.Attempts, want.ForgeStatus = nil, nil // not filled by the claim
	require.Equal(t, want, job.Build)
	require.Equal(t, id, job.BuildID)
	require.Equal(t, slipway.BuildRunning, job.Build.State)
	require.Equal(t, 2, job.Build.Attempt)
	require.Empty(t, job.Build.ImageRef, "the earlier attempt's results are cleared")
	require.NotNil(t, job.Build.StartedAt)
}
