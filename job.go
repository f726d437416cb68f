package slipway

import (
	"context"
	"time"
)

// Job is a queue job a worker has claimed: the lease on one attempt of one build.
// Its Attempt identifies the lease; a store refuses changes from an older attempt.
type Job struct {
	ID       int64
	BuildID  int64
	Attempt  int
	WorkerID string
}

// JobQueue is the build queue. Implementations are safe for concurrent use by many
// workers in many processes.
//
// A claimed job holds a lease kept alive by JobHeartbeat. A job whose heartbeat is
// older than the stale limit is given back to the queue by JobRescueStuck (any
// process may call it), and its build runs again as a new attempt. Every method
// that changes a build on behalf of a job returns ECONFLICT when the caller no
// longer holds the lease, so a worker that was presumed dead cannot overwrite the
// work of the one that took over.
type JobQueue interface {
	// JobClaim claims up to limit queued jobs for workerID, oldest first, and marks
	// their builds running. It never blocks on jobs another worker is claiming.
	JobClaim(ctx context.Context, workerID string, limit int) ([]*Job, error)
	// JobHeartbeat renews the leases of jobs and returns the ids of those the worker
	// no longer holds.
	JobHeartbeat(ctx context.Context, jobs []*Job) (lost []int64, err error)
	// JobUpdateBuild changes the job's build while the lease is held.
	JobUpdateBuild(ctx context.Context, job *Job, u BuildUpdate) error
	// JobComplete ends the job and applies the build's final update (its state must
	// be final) in one transaction.
	JobComplete(ctx context.Context, job *Job, u BuildUpdate) error
	// JobRescueStuck gives jobs whose heartbeat is older than staleAfter back to the
	// queue and returns how many it rescued.
	JobRescueStuck(ctx context.Context, staleAfter time.Duration) (int, error)
	// JobWaitForWork blocks until a job may be available (a NOTIFY arrived), the
	// timeout passed, or ctx ended. Callers still poll: a wake-up is a hint.
	JobWaitForWork(ctx context.Context, timeout time.Duration) error
}
