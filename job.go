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
	RepoID   int64
	Attempt  int
	WorkerID string
	// Build is the job's build as JobClaim left it: running, the results of
	// an earlier attempt cleared. Its Attempts and ForgeStatus are not
	// filled. Nil on a Job that JobClaim did not return.
	Build *Build
}

// HeartbeatResult is what renewing a worker's leases found.
type HeartbeatResult struct {
	// Lost lists the jobs the worker no longer holds: another worker took them over.
	Lost []int64
	// Cancel maps jobs whose build should stop to the reason, e.g.
	// "superseded by build 7". The worker ends them with JobComplete, state canceled.
	Cancel map[int64]string
}

// MaxLostWorkers is how many of a job's workers may be lost (stop heartbeating:
// killed, out of memory) before its build fails rather than runs again. A build
// that exhausts a worker's memory would otherwise take every worker down in
// turn; two losses in a row are no longer bad luck.
const MaxLostWorkers = 2

// RetryPolicy says how often and how soon a build that failed for a reason of
// the infrastructure (buildkitd, the registry, a lost worker) runs again.
type RetryPolicy struct {
	// MaxAttempts counts every attempt but those a shutting-down worker handed back.
	MaxAttempts int
	// Backoff is the wait before the second attempt; it doubles for each further one.
	Backoff time.Duration
	// MaxBackoff caps the wait.
	MaxBackoff time.Duration
}

// Delay returns the wait before the attempt after attempt.
func (p RetryPolicy) Delay(attempt int) time.Duration {
	d := p.Backoff
	for i := 1; i < attempt && d < p.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, p.MaxBackoff)
}

// BuildAttempt is one attempt of a build, as the build's JSON shows it.
type BuildAttempt struct {
	Attempt    int        `json:"attempt"`
	Worker     string     `json:"worker"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Error      string     `json:"error,omitempty"`
	// Infra tells that the attempt ended by a failure of the infrastructure, which
	// is retried, rather than of the build itself, which is not.
	Infra bool `json:"infra"`
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
//
// A new push to a branch supersedes the branch's older builds when it is queued
// (see BuildService.EnqueueTrigger): queued ones end canceled at once, running ones
// get a cancel request that JobWatchCancel and JobHeartbeat report to their worker.
type JobQueue interface {
	// JobClaim claims up to limit queued jobs for workerID and marks their builds
	// running. It never starts more running jobs of a repository than the
	// repository's max_running, and it prefers the repositories with the fewest
	// running jobs, then the oldest waiting job, so a busy repository cannot starve
	// the others. It never blocks on jobs another worker is claiming.
	JobClaim(ctx context.Context, workerID string, limit int) ([]*Job, error)
	// JobHeartbeat renews the leases of jobs (all of one worker) and reports those
	// lost and those asked to stop.
	JobHeartbeat(ctx context.Context, jobs []*Job) (HeartbeatResult, error)
	// JobUpdateBuild changes the job's build while the lease is held.
	JobUpdateBuild(ctx context.Context, job *Job, u BuildUpdate) error
	// JobComplete ends the job and applies the build's final update (its state must
	// be final) in one transaction.
	JobComplete(ctx context.Context, job *Job, u BuildUpdate) error
	// JobRetry ends an attempt that failed for a reason of the infrastructure: the
	// build is queued again after p's backoff while attempts are left (retried
	// true), else it fails with reason. Each attempt's error is kept.
	JobRetry(ctx context.Context, job *Job, reason string, p RetryPolicy) (retried bool, err error)
	// JobRelease hands a job back to the queue without counting the attempt: its
	// worker is shutting down. The build is queued again at once.
	JobRelease(ctx context.Context, job *Job, reason string) error
	// JobRescueStuck gives jobs whose heartbeat is older than staleAfter back to the
	// queue, after p's backoff, and returns how many it rescued. A lost worker is an
	// infrastructure failure: a job out of attempts fails its build; one asked to
	// stop ends canceled; a job whose worker is lost for the MaxLostWorkers-th
	// time fails its build whatever attempts are left, since the build itself
	// may be what kills its workers.
	JobRescueStuck(ctx context.Context, staleAfter time.Duration, p RetryPolicy) (int, error)
	// JobWorkSignal returns a channel closed at the next NOTIFY of new work. A
	// worker takes it before JobClaim and waits on it after an empty claim, so
	// work queued while it was claiming is not missed until the next poll.
	// Workers still poll: a wake-up is a hint.
	JobWorkSignal() <-chan struct{}
	// JobWatchCancel returns a channel that receives the reason when job is asked
	// to stop, and a func to stop watching. Like JobWorkSignal it is a fast hint;
	// JobHeartbeat is the fallback.
	JobWatchCancel(job *Job) (<-chan string, func())
}
