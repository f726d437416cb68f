package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway"
)

// CancelBuild implements slipway.BuildService. It needs the jobs.cancel_reason
// column of the queue migration (00003).
//
// -- CancelBuild: a queued build ends canceled at once, its job completed; a
// running one gets cancel_reason, which its worker learns from the NOTIFY (or
// from its next heartbeat) and ends the build canceled. FOR UPDATE keeps a claim
// from racing the change.
const sqlCancelBuild = `-- CancelBuild
WITH target AS (
    SELECT j.id, j.state FROM jobs j
    WHERE j.build_id = $1 AND j.state IN ('available', 'running') AND j.cancel_reason IS NULL
    FOR UPDATE
), stopped AS (
    UPDATE jobs j
    SET cancel_reason = $2,
        state = CASE WHEN target.state = 'available' THEN 'completed' ELSE j.state END,
        finished_at = CASE WHEN target.state = 'available' THEN now() END
    FROM target WHERE j.id = target.id
    RETURNING j.id, target.state
), canceled AS (
    UPDATE builds b SET state = 'canceled', error = $2, finished_at = now()
    FROM stopped WHERE b.id = $1 AND stopped.state = 'available'
)
SELECT id, state FROM stopped`

// CancelBuild implements slipway.BuildService.
func (s *BuildService) CancelBuild(ctx context.Context, buildID int64, reason string) (*slipway.Build, error) {
	var b *slipway.Build
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		var (
			jobID int64
			state string
		)
		err := tx.QueryRow(ctx, sqlCancelBuild, buildID, reason).Scan(&jobID, &state)
		if err == pgx.ErrNoRows {
			cur, err := findBuildByID(ctx, tx, buildID)
			if err != nil {
				return err
			}
			if cur.State.Done() {
				return slipway.Errorf(slipway.ECONFLICT, "Build %d is already %s.", buildID, cur.State)
			}
			return slipway.Errorf(slipway.ECONFLICT, "Build %d is already being canceled.", buildID)
		} else if err != nil {
			return err
		}
		if state == "running" {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, ChannelCancel, fmt.Sprintf("%d %s", jobID, reason)); err != nil {
				return err
			}
		}
		b, err = findBuildByID(ctx, tx, buildID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("canceling build %d: %w", buildID, interpretError(err))
	}
	return b, nil
}

// -- CancelRefBuilds: the builds of one ref of one repository still on their
// way, oldest first (the order CancelBuild locks them in).
const sqlRefBuilds = `-- CancelRefBuilds
SELECT b.id FROM builds b JOIN repos r ON r.id = b.repo_id
WHERE r.forge = $1 AND lower(r.owner) = lower($2) AND lower(r.name) = lower($3)
  AND b.ref = $4 AND b.state IN ('queued', 'running', 'testing')
ORDER BY b.id`

// CancelRefBuilds implements slipway.BuildService.
func (s *BuildService) CancelRefBuilds(ctx context.Context, forge, owner, name, ref, reason string) ([]int64, error) {
	var stopped []int64
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		stopped = nil
		rows, err := tx.Query(ctx, sqlRefBuilds, forge, owner, name, ref)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		for _, id := range ids {
			var (
				jobID int64
				state string
			)
			err := tx.QueryRow(ctx, sqlCancelBuild, id, reason).Scan(&jobID, &state)
			if err == pgx.ErrNoRows {
				continue // already being canceled
			} else if err != nil {
				return err
			}
			if state == "running" {
				if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, ChannelCancel, fmt.Sprintf("%d %s", jobID, reason)); err != nil {
					return err
				}
			}
			if err := notifyBuild(ctx, tx, id); err != nil {
				return err
			}
			stopped = append(stopped, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("canceling builds of %s %s/%s %s: %w", forge, owner, name, ref, interpretError(err))
	}
	return stopped, nil
}

// -- ApproveBuild: a build waiting for approval gets it, and its job becomes
// claimable now; the NOTIFY wakes the workers.
const sqlApproveBuild = `-- ApproveBuild
WITH b AS (
    UPDATE builds SET approval = 'approved', approved_by = $2, approved_at = now()
    WHERE id = $1 AND approval = 'pending' AND state = 'queued'
    RETURNING id
)
UPDATE jobs j SET run_after = now() FROM b WHERE j.build_id = b.id AND j.state = 'available'
RETURNING j.id`

// ApproveBuild implements slipway.BuildService.
func (s *BuildService) ApproveBuild(ctx context.Context, buildID int64, actor string) (*slipway.Build, error) {
	var b *slipway.Build
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		var jobID int64
		err := tx.QueryRow(ctx, sqlApproveBuild, buildID, actor).Scan(&jobID)
		if err == pgx.ErrNoRows {
			cur, err := findBuildByID(ctx, tx, buildID)
			if err != nil {
				return err
			}
			if cur.Approval != "pending" {
				return slipway.Errorf(slipway.ECONFLICT, "Build %d waits for no approval.", buildID)
			}
			return slipway.Errorf(slipway.ECONFLICT, "Build %d is %s; only a queued build can be approved.", buildID, cur.State)
		} else if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, ChannelJobs, fmt.Sprint(buildID)); err != nil {
			return err
		}
		if err := notifyBuild(ctx, tx, buildID); err != nil {
			return err
		}
		b, err = findBuildByID(ctx, tx, buildID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("approving build %d: %w", buildID, interpretError(err))
	}
	return b, nil
}
