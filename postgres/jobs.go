package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
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

	mu       sync.Mutex
	wake     chan struct{}                      // closed and replaced on every notification
	watchers map[int64]map[chan string]struct{} // JobWatchCancel's, by job id
}

var _ slipway.JobQueue = (*JobQueue)(nil)

// NewJobQueue returns a JobQueue over db.
func NewJobQueue(db *DB, logger zerolog.Logger) *JobQueue {
	return &JobQueue{db: db, logger: logger, wake: make(chan struct{}), watchers: map[int64]map[chan string]struct{}{}}
}

type jobRow struct {
	ID      int64 `db:"id"`
	BuildID int64 `db:"build_id"`
	RepoID  int64 `db:"repo_id"`
	Attempt int   `db:"attempt"`
}

// JobClaim: repositories with a job ready to run and room under their
// max_running, least busy first, then by their most urgent and oldest waiting
// job. This is the fairness: a repository with two builds running waits behind
// one with none, however many jobs it has queued.
const sqlJobClaimRepos = `-- JobClaim
SELECT a.repo_id
FROM (SELECT repo_id, min(priority) AS priority, min(created_at) AS oldest FROM jobs
      WHERE state = 'available' AND run_after <= now() GROUP BY repo_id) a
JOIN repos r ON r.id = a.repo_id
LEFT JOIN (SELECT repo_id, count(*) AS n FROM jobs WHERE state = 'running' GROUP BY repo_id) run
       ON run.repo_id = a.repo_id
WHERE coalesce(run.n, 0) < r.max_running
ORDER BY coalesce(run.n, 0), a.priority, a.oldest, a.repo_id
LIMIT $1`

// JobClaim: a transaction-scoped advisory lock per repository serializes the
// claims of one repository, so two workers cannot both see room for one more
// build and exceed max_running. A claimer that cannot take it tries the next
// repository instead of waiting. The lock is released at commit, after which the
// next claimer's statements see this claim.
const sqlJobClaimLockRepo = `-- JobClaim
SELECT pg_try_advisory_xact_lock(` + advisoryClaim + `, $1::int)`

// advisoryClaim is the first key of JobClaim's advisory locks ("slip").
const advisoryClaim = "1936484720"

// JobClaim: under the repository's lock, takes its most urgent and oldest
// available job if the repository is below max_running, marks the build running,
// and records the attempt. The build's results of an earlier attempt are
// cleared; started_at keeps the first start. It returns the job with its build
// as the claim left it, so the worker need not read it again.
var sqlJobClaim = `-- JobClaim
WITH room AS (
    SELECT r.max_running - (SELECT count(*) FROM jobs WHERE repo_id = r.id AND state = 'running') AS n
    FROM repos r WHERE r.id = $2
), picked AS (
    SELECT id FROM jobs
    WHERE repo_id = $2 AND state = 'available' AND run_after <= now() AND (SELECT n FROM room) > 0
    ORDER BY priority, created_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs j
    SET state = 'running', attempt = j.attempt + 1, claimed_by = $1, heartbeat_at = now()
    FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.build_id, j.repo_id, j.attempt
), started AS (
    UPDATE builds b
    SET state = 'running', attempt = claimed.attempt, started_at = coalesce(b.started_at, now()),
        image_ref = '', index_digest = '', platforms = '[]', tests = '[]', tags = '{}', error = ''
    FROM claimed WHERE b.id = claimed.build_id
    RETURNING b.*
), ` + statusOutbox("started_status", "started") + `, recorded AS (
    INSERT INTO build_attempts (build_id, attempt, worker)
    SELECT build_id, attempt, $1 FROM claimed
)
SELECT c.id AS job_id, ` + buildOwnColumns + `
FROM claimed c JOIN started b ON b.id = c.build_id JOIN repos r ON r.id = b.repo_id`

// claimRow is a claimed job with its build (buildRow without the commit status).
type claimRow struct {
	JobID int64 `db:"job_id"`
	buildRow
}

// JobClaim implements slipway.JobQueue.
func (q *JobQueue) JobClaim(ctx context.Context, workerID string, limit int) ([]*slipway.Job, error) {
	if limit <= 0 {
		return nil, nil
	}
	var jobs []*slipway.Job
	// A repository whose claim lock another worker held was skipped. That worker
	// commits within milliseconds; try again then, in a new transaction (so this
	// one's locks are gone), rather than leave a ready job to the next poll.
	for wait := time.Millisecond; ; wait *= 2 {
		contended := false
		err := pgx.BeginFunc(ctx, q.db.pool, func(tx pgx.Tx) error {
			jobs = jobs[:0]
			for len(jobs) < limit {
				n, skipped, err := q.claimRound(ctx, tx, workerID, limit-len(jobs), &jobs)
				contended = contended || skipped
				if err != nil || n == 0 {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("claiming jobs for %s: %w", workerID, interpretError(err))
		}
		if len(jobs) > 0 || !contended || wait > 100*time.Millisecond {
			return jobs, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// claimRound claims at most one job from each repository with room, in fairness
// order, and returns how many it claimed and whether it skipped a repository
// whose lock another claimer held.
func (q *JobQueue) claimRound(ctx context.Context, tx pgx.Tx, workerID string, limit int, jobs *[]*slipway.Job) (int, bool, error) {
	rows, err := tx.Query(ctx, sqlJobClaimRepos, limit+16)
	if err != nil {
		return 0, false, err
	}
	repos, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, false, err
	}
	n, skipped := 0, false
	for _, repoID := range repos {
		if n == limit {
			break
		}
		var locked bool
		if err := tx.QueryRow(ctx, sqlJobClaimLockRepo, int32(repoID%math.MaxInt32)).Scan(&locked); err != nil {
			return n, skipped, err
		}
		if !locked {
			skipped = true
			continue
		}
		rows, err := tx.Query(ctx, sqlJobClaim, workerID, repoID)
		if err != nil {
			return n, skipped, err
		}
		// Lax: the commit status columns of buildRow are not selected.
		list, err := pgx.CollectRows(rows, pgx.RowToStructByNameLax[claimRow])
		if err != nil {
			return n, skipped, err
		}
		for _, r := range list {
			b, err := r.toBuild()
			if err != nil {
				return n, skipped, err
			}
			*jobs = append(*jobs, &slipway.Job{ID: r.JobID, BuildID: r.ID, RepoID: r.RepoID, Attempt: r.Attempt, WorkerID: workerID, Build: b})
			n++
			if err := notifyBuild(ctx, tx, r.ID); err != nil {
				return n, skipped, err
			}
		}
	}
	return n, skipped, nil
}

// JobHeartbeat: renews the leases the worker still holds; a job rescued meanwhile
// has another attempt or owner and is not renewed. cancel_reason tells the worker
// that its build was superseded, should the NOTIFY have been missed.
const sqlJobHeartbeat = `-- JobHeartbeat
UPDATE jobs j SET heartbeat_at = now()
FROM unnest($1::bigint[], $2::int[]) AS h(id, attempt)
WHERE j.id = h.id AND j.attempt = h.attempt AND j.state = 'running' AND j.claimed_by = $3
RETURNING j.id, j.cancel_reason`

// JobHeartbeat implements slipway.JobQueue. All jobs must belong to one worker.
func (q *JobQueue) JobHeartbeat(ctx context.Context, jobs []*slipway.Job) (slipway.HeartbeatResult, error) {
	var res slipway.HeartbeatResult
	if len(jobs) == 0 {
		return res, nil
	}
	ids, attempts := make([]int64, len(jobs)), make([]int32, len(jobs))
	for i, j := range jobs {
		ids[i], attempts[i] = j.ID, int32(j.Attempt)
	}
	rows, err := q.db.pool.Query(ctx, sqlJobHeartbeat, ids, attempts, jobs[0].WorkerID)
	if err != nil {
		return res, fmt.Errorf("renewing leases of %s: %w", jobs[0].WorkerID, err)
	}
	type renewedRow struct {
		ID           int64   `db:"id"`
		CancelReason *string `db:"cancel_reason"`
	}
	renewed, err := pgx.CollectRows(rows, pgx.RowToStructByName[renewedRow])
	if err != nil {
		return res, fmt.Errorf("renewing leases of %s: %w", jobs[0].WorkerID, err)
	}
	held := make(map[int64]bool, len(renewed))
	for _, r := range renewed {
		held[r.ID] = true
		if r.CancelReason != nil {
			if res.Cancel == nil {
				res.Cancel = map[int64]string{}
			}
			res.Cancel[r.ID] = *r.CancelReason
		}
	}
	for _, id := range ids {
		if !held[id] {
			res.Lost = append(res.Lost, id)
		}
	}
	return res, nil
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

// sqlBuildUpdate: a NULL argument leaves the column as is. The resolved ref
// and commit ($10, $11) land only while the commit is still unresolved (the
// right-hand sides all read the row as it was), and a commit subject ($12)
// only over an empty message or the API's old placeholder ($13). platforms
// and tests are of the domain json_array, which pgx does not know: their
// parameters are cast to jsonb, or a []byte would be sent as bytea.
var sqlBuildUpdate = `-- UpdateBuild
WITH updated AS (
UPDATE builds SET
    ref          = CASE WHEN commit_sha = '' THEN coalesce($10, ref) ELSE ref END,
    commit_sha   = CASE WHEN commit_sha = '' THEN coalesce($11, commit_sha) ELSE commit_sha END,
    message      = CASE WHEN message IN ('', $13) THEN coalesce($12, message) ELSE message END,
    state        = coalesce($2, state),
    image_ref    = coalesce($3, image_ref),
    index_digest = coalesce($4, index_digest),
    platforms    = coalesce($5::jsonb, platforms),
    tests        = coalesce($6::jsonb, tests),
    tags         = coalesce($7, tags),
    error        = coalesce($8, error),
    skipped_tags = coalesce($9, skipped_tags),
    finished_at  = CASE WHEN coalesce($2, state) IN ('succeeded', 'failed', 'canceled') THEN now() ELSE NULL END
WHERE id = $1
RETURNING id, state
), ` + statusOutbox("updated_status", "updated") + `
SELECT id FROM updated`

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
	var skipped []byte
	if u.SkippedTags != nil {
		if skipped, err = json.Marshal(u.SkippedTags); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, sqlBuildUpdate, id, state, u.ImageRef, u.IndexDigest, platforms, tests, u.Tags, errText, skipped,
		u.Ref, u.Commit, u.Message, slipway.APITriggerPlaceholder); err != nil {
		return interpretError(err)
	}
	return notifyBuild(ctx, tx, id)
}

// notifyBuild tells the dashboard and the status sender that a build changed.
func notifyBuild(ctx context.Context, tx pgx.Tx, id int64) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, ChannelBuilds, fmt.Sprint(id))
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
		errText := ""
		if u.Error != nil {
			errText = *u.Error
		}
		if err := finishAttempt(ctx, tx, job, errText, false); err != nil {
			return err
		}
		return updateBuild(ctx, tx, job.BuildID, u)
	})
	if err != nil {
		return fmt.Errorf("completing job %d: %w", job.ID, err)
	}
	return nil
}

// finishAttempt records how the job's current attempt ended.
func finishAttempt(ctx context.Context, tx pgx.Tx, job *slipway.Job, errText string, infra bool) error {
	_, err := tx.Exec(ctx, `-- JobComplete
UPDATE build_attempts SET finished_at = now(), error = $3, infra = $4 WHERE build_id = $1 AND attempt = $2`,
		job.BuildID, job.Attempt, slipway.Truncate(errText, 4000), infra)
	return err
}

// JobRetry: an attempt failed for a reason of the infrastructure. attempt minus
// released counts the attempts that count against the limit.
const sqlJobRetry = `-- JobRetry
UPDATE jobs SET
    state        = CASE WHEN attempt - released < $2 THEN 'available' ELSE 'completed' END,
    claimed_by   = NULL,
    heartbeat_at = NULL,
    run_after    = now() + make_interval(secs => $3),
    finished_at  = CASE WHEN attempt - released < $2 THEN NULL ELSE now() END
WHERE id = $1
RETURNING state = 'available'`

// JobRetry implements slipway.JobQueue.
func (q *JobQueue) JobRetry(ctx context.Context, job *slipway.Job, reason string, p slipway.RetryPolicy) (bool, error) {
	var retried bool
	delay := p.Delay(job.Attempt)
	err := pgx.BeginFunc(ctx, q.db.pool, func(tx pgx.Tx) error {
		if err := lockLease(ctx, tx, job); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, sqlJobRetry, job.ID, p.MaxAttempts, delay.Seconds()).Scan(&retried); err != nil {
			return err
		}
		if err := finishAttempt(ctx, tx, job, reason, true); err != nil {
			return err
		}
		state := slipway.BuildFailed
		msg := fmt.Sprintf("%s (infrastructure failure; gave up after %d attempts)", reason, job.Attempt)
		if retried {
			state = slipway.BuildQueued
			msg = fmt.Sprintf("attempt %d failed (infrastructure): %s; retrying in %s", job.Attempt, reason, delay)
		}
		return updateBuild(ctx, tx, job.BuildID, slipway.BuildUpdate{State: &state, Error: &msg})
	})
	if err != nil {
		return false, fmt.Errorf("retrying job %d: %w", job.ID, err)
	}
	if retried {
		q.notifyJobsAfter(delay)
	}
	return retried, nil
}

// notifyJobsAfter wakes this process's idle workers when a delayed job becomes
// due; other processes find it by polling.
func (q *JobQueue) notifyJobsAfter(d time.Duration) {
	time.AfterFunc(d, q.broadcast)
}

// JobRelease implements slipway.JobQueue. The attempt stays counted in attempt (it
// identifies leases and log chunks) and is forgiven through released.
func (q *JobQueue) JobRelease(ctx context.Context, job *slipway.Job, reason string) error {
	err := pgx.BeginFunc(ctx, q.db.pool, func(tx pgx.Tx) error {
		if err := lockLease(ctx, tx, job); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `-- JobRelease
UPDATE jobs SET state = 'available', claimed_by = NULL, heartbeat_at = NULL, run_after = now(),
    released = released + 1
WHERE id = $1`, job.ID); err != nil {
			return err
		}
		if err := finishAttempt(ctx, tx, job, reason, false); err != nil {
			return err
		}
		queued, none := slipway.BuildQueued, ""
		if err := updateBuild(ctx, tx, job.BuildID, slipway.BuildUpdate{State: &queued, Error: &none}); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, 'released')`, ChannelJobs)
		return err
	})
	if err != nil {
		return fmt.Errorf("releasing job %d: %w", job.ID, err)
	}
	return nil
}

// JobRescueStuck: takes running jobs whose lease went stale (their worker died or
// lost the database) in one batch, and counts the lost worker on the job. A job
// asked to stop ends canceled; one that lost slipway.MaxLostWorkers workers
// ($5), or is out of attempts, fails its build; any other goes back to the
// queue after the backoff, its build to queued. The attempt is recorded as an
// infrastructure failure.
var sqlJobRescueStuck = `-- JobRescueStuck
WITH stuck AS (
    SELECT id FROM jobs
    WHERE state = 'running' AND heartbeat_at < now() - make_interval(secs => $1)
    ORDER BY heartbeat_at
    LIMIT 100
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE jobs j
    SET state = CASE WHEN j.cancel_reason IS NOT NULL OR j.attempt - j.released >= $2 OR j.lost_workers + 1 >= $5
                     THEN 'completed' ELSE 'available' END,
        lost_workers = j.lost_workers + 1,
        claimed_by = NULL, heartbeat_at = NULL,
        run_after = now() + make_interval(secs => least($3 * power(2, greatest(j.attempt - j.released - 1, 0)), $4)),
        finished_at = CASE WHEN j.cancel_reason IS NOT NULL OR j.attempt - j.released >= $2 OR j.lost_workers + 1 >= $5
                           THEN now() END
    FROM stuck WHERE j.id = stuck.id
    RETURNING j.id, j.build_id, j.repo_id, j.attempt, j.state, j.cancel_reason, j.lost_workers
), builds_reset AS (
    UPDATE builds b
    SET state = CASE WHEN rescued.cancel_reason IS NOT NULL THEN 'canceled'
                     WHEN rescued.state = 'completed' THEN 'failed' ELSE 'queued' END,
        error = CASE WHEN rescued.cancel_reason IS NOT NULL THEN rescued.cancel_reason
                     WHEN rescued.state = 'completed' AND rescued.lost_workers >= $5
                     THEN $6
                     WHEN rescued.state = 'completed'
                     THEN 'the worker running this build stopped answering ' || rescued.attempt || ' times; giving up'
                     ELSE 'attempt ' || rescued.attempt || ': the worker running this build stopped answering; retrying' END,
        finished_at = CASE WHEN rescued.state = 'completed' THEN now() END
    FROM rescued WHERE b.id = rescued.build_id
    RETURNING b.id, b.state
), ` + statusOutbox("reset_status", "builds_reset") + `, attempts AS (
    UPDATE build_attempts a SET finished_at = now(), error = 'the worker running this attempt stopped answering', infra = true
    FROM rescued WHERE a.build_id = rescued.build_id AND a.attempt = rescued.attempt
)
SELECT id, build_id, repo_id, attempt, lost_workers FROM rescued`

// lostWorkersError is the error of a build failed by JobRescueStuck for
// having lost slipway.MaxLostWorkers workers.
var lostWorkersError = fmt.Sprintf("The worker running this build stopped %s (killed, out of memory?); it is not retried again. "+
	"Check the build's log and .slipway.yml, then retry it.", times(slipway.MaxLostWorkers))

// times words a count of occurrences: "once", "twice", "3 times".
func times(n int) string {
	switch n {
	case 1:
		return "once"
	case 2:
		return "twice"
	}
	return fmt.Sprintf("%d times", n)
}

// JobRescueStuck implements slipway.JobQueue.
func (q *JobQueue) JobRescueStuck(ctx context.Context, staleAfter time.Duration, p slipway.RetryPolicy) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, q.db.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sqlJobRescueStuck, staleAfter.Seconds(), p.MaxAttempts, p.Backoff.Seconds(), p.MaxBackoff.Seconds(),
			slipway.MaxLostWorkers, lostWorkersError)
		if err != nil {
			return err
		}
		type rescuedRow struct {
			jobRow
			LostWorkers int `db:"lost_workers"`
		}
		list, err := pgx.CollectRows(rows, pgx.RowToStructByName[rescuedRow])
		if err != nil {
			return err
		}
		n = len(list)
		for _, r := range list {
			q.logger.Warn().Int64("job_id", r.ID).Int64("build_id", r.BuildID).Int("attempt", r.Attempt).
				Int("lost_workers", r.LostWorkers).Msg("Rescued job with a stale lease")
			if err := notifyBuild(ctx, tx, r.BuildID); err != nil {
				return err
			}
		}
		if n > 0 {
			_, err = tx.Exec(ctx, `SELECT pg_notify($1, 'rescued')`, ChannelJobs)
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("rescuing stuck jobs: %w", err)
	}
	if n > 0 {
		q.notifyJobsAfter(p.Backoff)
	}
	return n, nil
}

// findAttempts returns a build's attempts, first first.
func findAttempts(ctx context.Context, q querier, buildID int64) ([]slipway.BuildAttempt, error) {
	rows, err := q.Query(ctx, `-- FindBuildByID
SELECT attempt, worker, started_at, finished_at, error, infra FROM build_attempts WHERE build_id = $1 ORDER BY attempt`, buildID)
	if err != nil {
		return nil, err
	}
	type attemptRow struct {
		Attempt    int        `db:"attempt"`
		Worker     string     `db:"worker"`
		StartedAt  time.Time  `db:"started_at"`
		FinishedAt *time.Time `db:"finished_at"`
		Error      string     `db:"error"`
		Infra      bool       `db:"infra"`
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[attemptRow])
	if err != nil {
		return nil, err
	}
	out := make([]slipway.BuildAttempt, len(list))
	for i, a := range list {
		out[i] = slipway.BuildAttempt{Attempt: a.Attempt, Worker: a.Worker, StartedAt: a.StartedAt.UTC(),
			FinishedAt: utc(a.FinishedAt), Error: a.Error, Infra: a.Infra}
	}
	return out, nil
}

// JobWorkSignal implements slipway.JobQueue.
func (q *JobQueue) JobWorkSignal() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.wake
}

// JobWatchCancel implements slipway.JobQueue. The channel has room for one reason,
// so the listener never blocks on a slow watcher.
func (q *JobQueue) JobWatchCancel(job *slipway.Job) (<-chan string, func()) {
	ch := make(chan string, 1)
	q.mu.Lock()
	if q.watchers[job.ID] == nil {
		q.watchers[job.ID] = map[chan string]struct{}{}
	}
	q.watchers[job.ID][ch] = struct{}{}
	q.mu.Unlock()
	return ch, func() {
		q.mu.Lock()
		delete(q.watchers[job.ID], ch)
		if len(q.watchers[job.ID]) == 0 {
			delete(q.watchers, job.ID)
		}
		q.mu.Unlock()
	}
}

// deliverCancel hands a slipway_cancel payload ("<job id> <reason>") to the job's watchers.
func (q *JobQueue) deliverCancel(payload string) {
	idText, reason, _ := strings.Cut(payload, " ")
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for ch := range q.watchers[id] {
		select {
		case ch <- reason:
		default:
		}
	}
}

func (q *JobQueue) broadcast() {
	q.mu.Lock()
	close(q.wake)
	q.wake = make(chan struct{})
	q.mu.Unlock()
}

// ListenOn fires JobWorkSignal and tells JobWatchCancel watchers from n's
// notifications on ChannelJobs and ChannelCancel, until stop. A catch-up
// fires JobWorkSignal, since work may have arrived while nobody listened.
func (q *JobQueue) ListenOn(n *Notifier) (stop func()) {
	jobs := n.Listen(ChannelJobs, func(Notification) { q.broadcast() })
	cancels := n.Listen(ChannelCancel, func(m Notification) {
		// A cancel missed meanwhile reaches its worker by the next heartbeat.
		if !m.CatchUp {
			q.deliverCancel(m.Payload)
		}
	})
	return func() { jobs.Unlisten(); cancels.Unlisten() }
}

// Listen listens on a Notifier of its own until ctx ends (see ListenOn),
// reconnecting with backoff; a process that has a Notifier calls ListenOn
// instead. It returns nil when ctx ends.
func (q *JobQueue) Listen(ctx context.Context) error {
	n := NewNotifier(q.db, q.logger)
	defer q.ListenOn(n)()
	return n.Run(ctx)
}
