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
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channelCancel, fmt.Sprintf("%d %s", jobID, reason)); err != nil {
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
