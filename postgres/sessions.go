package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway"
)

// SessionService implements slipway.SessionService over dashboard_sessions.
type SessionService struct {
	db *DB
}

var _ slipway.SessionService = (*SessionService)(nil)

// NewSessionService returns a SessionService over db.
func NewSessionService(db *DB) *SessionService { return &SessionService{db: db} }

// CreateSession implements slipway.SessionService. It also deletes expired
// sessions, so the table holds only live ones and a few just expired.
func (s *SessionService) CreateSession(ctx context.Context, id string, tokenID *int64, adminSHA256 []byte, expires time.Time) error {
	if (tokenID == nil) == (adminSHA256 == nil) {
		return slipway.Errorf(slipway.EINVALID, "A session belongs to one stored token or to the admin token.")
	}
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `-- CreateSession
DELETE FROM dashboard_sessions WHERE expires_at < now()`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `-- CreateSession
INSERT INTO dashboard_sessions (id_sha256, token_id, admin_sha256, expires_at) VALUES ($1, $2, $3, $4)`,
			slipway.HashToken(id), tokenID, adminSHA256, expires)
		return err
	})
	if err != nil {
		return fmt.Errorf("creating a dashboard session: %w", unavailable(interpretError(err)))
	}
	return nil
}

// FindSession implements slipway.SessionService.
func (s *SessionService) FindSession(ctx context.Context, id string) (*slipway.Session, error) {
	var (
		ss   slipway.Session
		name *string
		role *string
		at   *time.Time
	)
	err := s.db.pool.QueryRow(ctx, `-- FindSession
SELECT s.token_id, s.admin_sha256, s.expires_at, t.name, t.role, t.created_at
FROM dashboard_sessions s LEFT JOIN api_tokens t ON t.id = s.token_id
WHERE s.id_sha256 = $1 AND s.expires_at > now()`, slipway.HashToken(id)).Scan(&ss.TokenID, &ss.AdminSHA256, &ss.ExpiresAt, &name, &role, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, slipway.Errorf(slipway.ENOTFOUND, "No such session.")
	} else if err != nil {
		return nil, fmt.Errorf("finding a dashboard session: %w", unavailable(interpretError(err)))
	}
	if ss.TokenID != nil {
		if name == nil {
			return nil, slipway.Errorf(slipway.ENOTFOUND, "No such session.")
		}
		ss.Token = &slipway.Token{ID: *ss.TokenID, Name: *name, Role: slipway.Role(*role), CreatedAt: at.UTC()}
	}
	ss.ExpiresAt = ss.ExpiresAt.UTC()
	return &ss, nil
}

// DeleteSession implements slipway.SessionService.
func (s *SessionService) DeleteSession(ctx context.Context, id string) error {
	if _, err := s.db.pool.Exec(ctx, `-- DeleteSession
DELETE FROM dashboard_sessions WHERE id_sha256 = $1`, slipway.HashToken(id)); err != nil {
		return fmt.Errorf("ending a dashboard session: %w", unavailable(interpretError(err)))
	}
	return nil
}
