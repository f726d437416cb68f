package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/slipway-ci/slipway"
)

// JobQueue implements slipway.JobQueue over the jobs table. Run Listen in a
// goroutine to wake idle workers on NOTIFY; without it JobWaitForWork just waits
// for its timeout, so workers fall back to polling.
type JobQueue struct {
	db     *DB
	logger zerolog.Logger

	mu   sync.Mutex
	wake chan struct{} // closed and replaced on every notification
}

var _ slipway.JobQueue = (*JobQueue)(nil)

// NewJobQueue returns a JobQueue over db.
func NewJobQueue(db *DB, logger zerolog.Logger) *JobQueue {
	return &JobQueue{db: db, logger: logger, wake: make(chan struct{})}
}

type jobRow struct {
	ID      int64 `db:"id"`
	BuildID int64 `db:"build_id"`
	Attempt int   `db:"attempt"`
}

// JobClaim: picks the oldest available jobs without waiting for rows other
// workers have locked, takes the lease, and marks their builds running. The build's
// results of an earlier attempt are cleared; started_at keeps the first start.
const sqlJobClaim = `-- JobClaim
WITH picked AS (
    SELECT id FROM jobs
    WHERE state = 'available' AND run_after <= now()
    ORDER BY priority, created_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs j
    SET state = 'running', attempt = j.attempt + 1, claimed_by = $1, heartbeat_at = now()
    FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.build_id, j.attempt
), started AS (
    UPDATE builds b
    SET state = 'running', attempt = claimed.attempt, started_at = coalesce(b.started_at, now()),
        image_ref = '', index_digest = '', platforms = '[]', tests = '[]', tags = '{}', error = ''
    FROM claimed WHERE b.id = claimed.build_id
)
SELECT id, build_id, attempt FROM claimed ORDER BY id`

// JobClaim implements slipway.JobQueue.
func (q *JobQueue) JobClaim(ctx context.Context, workerID string, limit int) ([]*slipway.Job, error) {
	if limit <= 0 {
		return nil, nil
	}
	var jobs []*slipway.Job
	err := pgx.BeginFunc(ctx, q.db.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sqlJobClaim, workerID, limit)
		if err != nil {
			return err
		}
		list, err := pgx.CollectRows(rows, pgx.RowToStructByName[jobRow])
		if err != nil {
			return err
		}
		for _, r := range list {
			jobs = append(jobs, &slipway.Job{ID: r.ID, BuildID: r.BuildID, Attempt: r.Attempt, WorkerID: workerID})
			if err := notifyBuild(ctx, tx, r.BuildID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claiming jobs for %s: %w", workerID, err)
	}
	return jobs, nil
}

// JobHeartbeat: renews the leases the worker still holds; a job rescued meanwhile
// has another attempt or owner and is not renewed.
const sqlJobHeartbeat = `-- JobHeartbeat
UPDATE jobs j SET heartbeat_at = now()
FROM unnest($1::bigint[], $2::int[]) AS h(id, attempt)
WHERE j.id = h.id AND j.attempt = h.attempt AND j.state = 'running' AND j.claimed_by = $3
RETURNING j.id`

// JobHeartbeat implements slipway.JobQueue. All jobs must belong to one worker.
func (q *JobQueue) JobHeartbeat(ctx context.Context, jobs []*slipway.Job) ([]int64, error) {
	if len(jobs) == 0 {
		return nil, nil
	}
	ids, attempts := make([]int64, len(jobs)), make([]int32, len(jobs))
	for i, j := range jobs {
		ids[i], attempts[i] = j.ID, int32(j.Attempt)
	}
	rows, err := q.db.pool.Query(ctx, sqlJobHeartbeat, ids, attempts, jobs[0].WorkerID)
	if err != nil {
		return nil, fmt.Errorf("renewing leases of %s: %w", jobs[0].WorkerID, err)
	}
	renewed, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("renewing leases of %s: %w", jobs[0].WorkerID, err)
	}
	held := make(map[int64]bool, len(renewed))
	for _, id := range renewed {
		held[id] = true
	}
	var lost []int64
	for _, id := range ids {
		if !held[id] {
			lost = append(lost, id)
		}
	}
	return lost, nil
}

// lockLease locks the job row while the caller still holds the lease.
const sqlJobLockLease = `-- JobLockLease
SELECT id FROM jobs WHERE id = $1 AND attempt = $2 AND claimed_by = $3 AND state = 'running' FOR UPDATE`

func lockLease(ctx context.Context, tx pgx.Tx, job *slipway.Job) error {
	var id int64
	err := tx.QueryRow(ctx, sqlJobLockLease, job.ID, job.Attempt, job.WorkerID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return slipway.Errorf(slipway.ECONFLICT, "Job %d attempt %d is no longer held by %s.", job.ID, job.Attempt, job.WorkerID)
	}
	return err
}

// sqlBuildUpdate: a NULL argument leaves the column as is.
const sqlBuildUpdate = `-- UpdateBuild
UPDATE builds SET
    state        = coalesce($2, state),
    image_ref    = coalesce($3, image_ref),
    index_digest = coalesce($4, index_digest),
    platforms    = coalesce($5, platforms),
    tests        = coalesce($6, tests),
    tags         = coalesce($7, tags),
    error        = coalesce($8, error),
    finished_at  = CASE WHEN coalesce($2, state) IN ('succeeded', 'failed', 'canceled') THEN now() ELSE NULL END
WHERE id = $1`

func updateBuild(ctx context.Context, tx pgx.Tx, id int64, u slipway.BuildUpdate) error {
	var platforms, tests []byte
	var err error
	if u.Platforms != nil {
		if platforms, err = json.Marshal(u.Platforms); err != nil {
			return err
		}
	}
	if u.Tests != nil {
		if tests, err = json.Marshal(u.Tests); err != nil {
			return err
		}
	}
	var state *string
	if u.State != nil {
		s := string(*u.State)
		state = &s
	}
	errText := u.Error
	if errText != nil && len(*errText) > 4000 {
		short := (*errText)[:4000] + "…"
		errText = &short
	}
	if _, err := tx.Exec(ctx, sqlBuildUpdate, id, state, u.ImageRef, u.IndexDigest, platforms, tests, u.Tags, errText); err != nil {
		return interpretError(err)
	}
	return notifyBuild(ctx, tx, id)
}

// notifyBuild tells dashboards and log followers that a build changed.
func notifyBuild(ctx context.Context, tx pgx.Tx, id int64) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channelBuilds, fmt.Sprint(id))
	return err
}

// JobUpdateBuild implements slipway.JobQueue.
func (q *JobQueue) JobUpdateBuild(ctx context.Context, job *slipway.Job, u slipway.BuildUpdate) error {
	if u.State != nil && u.State.Done() {
		return slipway.Errorf(slipway.EINVALID, "A final state is set by JobComplete.")
	}
	err := pgx.BeginFunc(ctx, q.db.pool, func(tx pgx.Tx) error {
		if err := lockLease(ctx, tx, job); err != nil {
			return err
		}
		return updateBuild(ctx, tx, job.BuildID, u)
	})
	if err != nil {
		return fmt.Errorf("updating build %d of job %d: %w", job.BuildID, job.ID, err)
	}
	return nil
}

// JobComplete implements slipway.JobQueue.
func (q *JobQueue) JobComplete(ctx context.Context, job *slipway.Job, u slipway.BuildUpdate) error {
	if u.State == nil || !u.State.Done() {
		return slipway.Errorf(slipway.EINVALID, "JobComplete needs a final build state.")
	}
	err := pgx.BeginFunc(ctx, q.db.pool, func(tx pgx.Tx) error {
		if err := lockLease(ctx, tx, job); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `-- JobComplete
UPDATE jobs SET state = 'completed', claimed_by = NULL, heartbeat_at = NULL, finished_at = now() WHERE id = $1`, job.ID); err != nil {
			return err
		}
		return updateBuild(ctx, tx, job.BuildID, u)
	})
	if err != nil {
		return fmt.Errorf("completing job %d: %w", job.ID, err)
	}
	return nil
}

// JobRescueStuck: takes running jobs whose lease went stale (their worker died or
// lost the database) in one batch. A job with attempts left goes back to the queue
// and its build to queued; one out of attempts fails its build.
const sqlJobRescueStuck = `-- JobRescueStuck
WITH stuck AS (
    SELECT id FROM jobs
    WHERE state = 'running' AND heartbeat_at < now() - make_interval(secs => $1)
    ORDER BY heartbeat_at
    LIMIT 100
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE jobs j
    SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'completed' ELSE 'available' END,
        claimed_by = NULL, heartbeat_at = NULL, run_after = now(),
        finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END
    FROM stuck WHERE j.id = stuck.id
    RETURNING j.id, j.build_id, j.attempt, j.state
), builds_reset AS (
    UPDATE builds b
    SET state = CASE WHEN rescued.state = 'completed' THEN 'failed' ELSE 'queued' END,
        error = CASE WHEN rescued.state = 'completed'
                     THEN 'the worker running this build stopped answering ' || rescued.attempt || ' times; giving up'
                     ELSE '' END,
        finished_at = CASE WHEN rescued.state = 'completed' THEN now() END
    FROM rescued WHERE b.id = rescued.build_id
)
SELECT id, build_id, attempt FROM rescued`

// JobRescueStuck implements slipway.JobQueue.
func (q *JobQueue) JobRescueStuck(ctx context.Context, staleAfter time.Duration) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, q.db.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sqlJobRescueStuck, staleAfter.Seconds())
		if err != nil {
			return err
		}
		list, err := pgx.CollectRows(rows, pgx.RowToStructByName[jobRow])
		if err != nil {
			return err
		}
		n = len(list)
		for _, r := range list {
			q.logger.Warn().Int64("job_id", r.ID).Int64("build_id", r.BuildID).Int("attempt", r.Attempt).Msg("Rescued job with a stale lease")
			if err := notifyBuild(ctx, tx, r.BuildID); err != nil {
				return err
			}
		}
		if n > 0 {
			_, err = tx.Exec(ctx, `SELECT pg_notify($1, 'rescued')`, channelJobs)
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("rescuing stuck jobs: %w", err)
	}
	return n, nil
}

// JobWaitForWork implements slipway.JobQueue.
func (q *JobQueue) JobWaitForWork(ctx context.Context, timeout time.Duration) error {
	q.mu.Lock()
	wake := q.wake
	q.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-wake:
		return nil
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *JobQueue) broadcast() {
	q.mu.Lock()
	close(q.wake)
	q.wake = make(chan struct{})
	q.mu.Unlock()
}

// Listen holds a connection that LISTENs for new jobs and wakes JobWaitForWork
// callers, reconnecting with backoff when the connection fails. It returns when
// ctx ends.
func (q *JobQueue) Listen(ctx context.Context) error {
	backoff := 250 * time.Millisecond
	for {
		err := q.listenOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		q.logger.Warn().Err(err).Dur("retry_in", backoff).Msg("Job listener lost its connection")
		// Work may have arrived while we were not listening.
		q.broadcast()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (q *JobQueue) listenOnce(ctx context.Context) error {
	pc, err := q.db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A hijacked connection leaves the pool for good, so a LISTEN never leaks into
	// another user's session.
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+channelJobs); err != nil {
		return err
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			q.broadcast()
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			// Idle: prove the connection still works.
			if err := conn.Ping(ctx); err != nil {
				return err
			}
		default:
			return err
		}
	}
}
