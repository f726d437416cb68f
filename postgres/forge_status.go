package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway"
)

// StatusOutbox implements slipway.StatusOutbox over the forge_statuses table.
// Rows are not written here but by every statement that inserts a build or
// changes its state, through statusOutbox, in that same statement: a state
// change and its commit status commit together or not at all.
// TestStateChangesWriteTheOutbox fails for a statement that sets a build's
// state without it. (Until migration 00024 the trigger builds_forge_status
// did this, out of sight of the Go code.)
type StatusOutbox struct {
	db *DB
}

var _ slipway.StatusOutbox = (*StatusOutbox)(nil)

// forgeStates are the build states a forge is told about in a commit
// status. testing is not one of them: the forge still sees "running".
var forgeStates = []slipway.BuildState{slipway.BuildQueued, slipway.BuildRunning,
	slipway.BuildSucceeded, slipway.BuildFailed, slipway.BuildCanceled}

// statusOutbox returns the SQL of a data-modifying CTE named name that
// queues the commit statuses of the builds a statement inserted or changed:
// src names a CTE (or table expression) of the same statement with columns
// id and state, the builds' new states (typically the RETURNING id, state of
// its UPDATE builds). A build gets one forge_statuses row when its new state
// is one of forgeStates and is not already the newest state in its outbox,
// so a statement that leaves the state as it was, or moves it between
// running and testing, queues nothing.
func statusOutbox(name, src string) string {
	states := make([]string, len(forgeStates))
	for i, s := range forgeStates {
		states[i] = "'" + string(s) + "'"
	}
	return name + ` AS (
    INSERT INTO forge_statuses (build_id, state)
    SELECT c.id, c.state FROM ` + src + ` c
    WHERE c.state IN (` + strings.Join(states, ", ") + `)
      AND c.state IS DISTINCT FROM (SELECT f.state FROM forge_statuses f WHERE f.build_id = c.id ORDER BY f.id DESC LIMIT 1)
)`
}

// NewStatusOutbox returns a StatusOutbox over db.
func NewStatusOutbox(db *DB) *StatusOutbox { return &StatusOutbox{db: db} }

// StatusClaim: first marks pending statuses that a newer state of the same build
// made pointless as superseded (unless a sender holds them), then leases the
// newest pending status of each build that is due, skipping builds with a status
// leased elsewhere so one build's statuses never go out concurrently or out of
// order. Both statements see the same snapshot, so the second one also excludes
// the rows the first one supersedes.
//
// A build queued without a commit (an API trigger the worker has not resolved
// yet) has no commit to put a status on: its statuses wait, pending, until the
// worker records the commit, and then only the newest goes out. A build that
// ended before it was resolved (a ref that does not exist) never gets one: its
// last status is skipped (the older ones are superseded as usual).
const sqlStatusClaim = `-- StatusClaim
WITH superseded AS (
    UPDATE forge_statuses o SET outcome = 'superseded', updated_at = now()
    WHERE o.outcome = 'pending' AND (o.leased_until IS NULL OR o.leased_until < now())
      AND EXISTS (SELECT 1 FROM forge_statuses n WHERE n.build_id = o.build_id AND n.id > o.id)
), unresolved AS (
    UPDATE forge_statuses o SET outcome = 'skipped', last_error = 'the build ended before its commit was known',
        updated_at = now()
    FROM builds b
    WHERE b.id = o.build_id AND b.commit_sha = '' AND b.finished_at IS NOT NULL
      AND o.outcome = 'pending' AND (o.leased_until IS NULL OR o.leased_until < now())
      AND NOT EXISTS (SELECT 1 FROM forge_statuses n WHERE n.build_id = o.build_id AND n.id > o.id)
), picked AS (
    SELECT o.id FROM forge_statuses o JOIN builds b ON b.id = o.build_id
    WHERE o.outcome = 'pending' AND o.next_attempt_at <= now()
      AND (o.leased_until IS NULL OR o.leased_until < now())
      AND b.commit_sha <> ''
      AND NOT EXISTS (SELECT 1 FROM forge_statuses n WHERE n.build_id = o.build_id AND n.id > o.id)
      AND NOT EXISTS (SELECT 1 FROM forge_statuses l
                      WHERE l.build_id = o.build_id AND l.id <> o.id AND l.leased_until > now())
    ORDER BY o.next_attempt_at, o.id
    LIMIT $1
    FOR UPDATE OF o SKIP LOCKED
), claimed AS (
    UPDATE forge_statuses f
    SET attempts = f.attempts + 1, leased_until = now() + make_interval(secs => $2), updated_at = now()
    FROM picked WHERE f.id = picked.id
    RETURNING f.id, f.build_id, f.state, f.attempts
)
SELECT c.id, c.build_id, c.state, c.attempts, r.forge, r.owner, r.name, b.ref, b.commit_sha, b.error
FROM claimed c JOIN builds b ON b.id = c.build_id JOIN repos r ON r.id = b.repo_id
ORDER BY c.id`

type statusRow struct {
	ID        int64  `db:"id"`
	BuildID   int64  `db:"build_id"`
	State     string `db:"state"`
	Attempts  int    `db:"attempts"`
	Forge     string `db:"forge"`
	Owner     string `db:"owner"`
	Name      string `db:"name"`
	Ref       string `db:"ref"`
	CommitSHA string `db:"commit_sha"`
	Error     string `db:"error"`
}

// StatusClaim implements slipway.StatusOutbox.
func (o *StatusOutbox) StatusClaim(ctx context.Context, limit int, lease time.Duration) ([]*slipway.StatusEvent, error) {
	rows, err := o.db.pool.Query(ctx, sqlStatusClaim, limit, lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("claiming commit statuses: %w", unavailable(err))
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[statusRow])
	if err != nil {
		return nil, fmt.Errorf("claiming commit statuses: %w", unavailable(err))
	}
	events := make([]*slipway.StatusEvent, len(list))
	for i, r := range list {
		events[i] = &slipway.StatusEvent{
			ID: r.ID, BuildID: r.BuildID, State: slipway.BuildState(r.State), Attempts: r.Attempts,
			Forge: r.Forge, Owner: r.Owner, Name: r.Name, Ref: r.Ref, Commit: r.CommitSHA, Error: r.Error,
		}
	}
	return events, nil
}

// StatusSettle: ends the lease; a pending outcome waits until retryAt.
const sqlStatusSettle = `-- StatusSettle
UPDATE forge_statuses
SET outcome = $2, last_error = $3, next_attempt_at = $4, leased_until = NULL, updated_at = now()
WHERE id = $1`

// StatusSettle implements slipway.StatusOutbox.
func (o *StatusOutbox) StatusSettle(ctx context.Context, id int64, outcome slipway.StatusOutcome, errText string, retryAt time.Time) error {
	if len(errText) > 1000 {
		errText = strings.ToValidUTF8(errText[:1000], "")
	}
	if retryAt.IsZero() {
		retryAt = time.Now()
	}
	if _, err := o.db.pool.Exec(ctx, sqlStatusSettle, id, string(outcome), errText, retryAt); err != nil {
		return fmt.Errorf("settling commit status %d: %w", id, interpretError(err))
	}
	return nil
}
