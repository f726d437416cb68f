package postgres

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway"
)

// IntegrationService implements slipway.IntegrationService.
type IntegrationService struct {
	db *DB
}

var _ slipway.IntegrationService = (*IntegrationService)(nil)

// NewIntegrationService returns an IntegrationService over db.
func NewIntegrationService(db *DB) *IntegrationService { return &IntegrationService{db: db} }

// StartIntegration implements slipway.IntegrationService.
func (s *IntegrationService) StartIntegration(ctx context.Context, buildID int64, secret string, expires time.Time) error {
	_, err := s.db.pool.Exec(ctx, `-- StartIntegration
INSERT INTO integration_callbacks (build_id, token_sha256, expires_at) VALUES ($1, $2, $3)
ON CONFLICT (build_id) DO UPDATE SET token_sha256 = EXCLUDED.token_sha256,
    expires_at = EXCLUDED.expires_at, result = NULL, created_at = now()`,
		buildID, slipway.HashToken(secret), expires)
	if err != nil {
		return fmt.Errorf("starting integration of build %d: %w", buildID, interpretError(err))
	}
	return nil
}

// ReportIntegration implements slipway.IntegrationService. The row is locked
// while it is checked, so of two racing callbacks one records and the other
// gets ECONFLICT.
func (s *IntegrationService) ReportIntegration(ctx context.Context, buildID int64, secret string, r slipway.IntegrationResult) error {
	result, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding integration result of build %d: %w", buildID, unavailable(err))
	}
	unauthorized := slipway.Errorf(slipway.EUNAUTHORIZED, "The callback token is not valid for build %d, or it expired.", buildID)
	err = pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		var (
			hash    []byte
			expired bool
			done    bool
		)
		err := tx.QueryRow(ctx, `-- ReportIntegration
SELECT token_sha256, expires_at < now(), result IS NOT NULL FROM integration_callbacks
WHERE build_id = $1 FOR UPDATE`, buildID).Scan(&hash, &expired, &done)
		if err == pgx.ErrNoRows {
			return unauthorized
		} else if err != nil {
			return err
		}
		if subtle.ConstantTimeCompare(hash, slipway.HashToken(secret)) != 1 || expired {
			return unauthorized
		}
		if done {
			return slipway.Errorf(slipway.ECONFLICT, "Build %d already has an integration result; the callback token works once.", buildID)
		}
		_, err = tx.Exec(ctx, `-- ReportIntegration
UPDATE integration_callbacks SET result = $2 WHERE build_id = $1`, buildID, result)
		return err
	})
	if err != nil {
		return fmt.Errorf("reporting integration of build %d: %w", buildID, interpretError(err))
	}
	return nil
}

// FindIntegrationResult implements slipway.IntegrationService.
func (s *IntegrationService) FindIntegrationResult(ctx context.Context, buildID int64) (*slipway.IntegrationResult, error) {
	var raw []byte
	err := s.db.pool.QueryRow(ctx, `-- FindIntegrationResult
SELECT result FROM integration_callbacks WHERE build_id = $1`, buildID).Scan(&raw)
	if err == pgx.ErrNoRows || (err == nil && raw == nil) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("finding integration result of build %d: %w", buildID, unavailable(err))
	}
	var r slipway.IntegrationResult
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("decoding integration result of build %d: %w", buildID, unavailable(err))
	}
	return &r, nil
}
