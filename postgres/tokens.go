package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway"
)

// TokenService implements slipway.TokenService.
type TokenService struct {
	db *DB
}

var _ slipway.TokenService = (*TokenService)(nil)

// NewTokenService returns a TokenService over db.
func NewTokenService(db *DB) *TokenService { return &TokenService{db: db} }

type tokenRow struct {
	ID         int64      `db:"id"`
	Name       string     `db:"name"`
	Role       string     `db:"role"`
	CreatedAt  time.Time  `db:"created_at"`
	LastUsedAt *time.Time `db:"last_used_at"`
}

func (r tokenRow) toToken() *slipway.Token {
	return &slipway.Token{ID: r.ID, Name: r.Name, Role: slipway.Role(r.Role),
		CreatedAt: r.CreatedAt.UTC(), LastUsedAt: utc(r.LastUsedAt)}
}

const tokenColumns = `id, name, role, created_at, last_used_at`

// CreateToken implements slipway.TokenService.
func (s *TokenService) CreateToken(ctx context.Context, name string, role slipway.Role, secret string) (*slipway.Token, error) {
	if !slipway.ValidTokenName(name) {
		return nil, slipway.Errorf(slipway.EINVALID, "The token name %q is not valid: use 1 to 100 letters, digits and _.@-, starting with a letter or digit.", name)
	}
	if !role.Valid() {
		return nil, slipway.Errorf(slipway.EINVALID, "Unknown role %q; use viewer, developer, release-manager or admin.", role)
	}
	rows, err := s.db.pool.Query(ctx, `-- CreateToken
INSERT INTO api_tokens (name, role, token_sha256) VALUES ($1, $2, $3) RETURNING `+tokenColumns,
		name, string(role), slipway.HashToken(secret))
	if err == nil {
		var row tokenRow
		row, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[tokenRow])
		if err == nil {
			return row.toToken(), nil
		}
	}
	if slipway.ErrorCode(interpretError(err)) == slipway.ECONFLICT {
		return nil, slipway.Errorf(slipway.ECONFLICT, "A token named %q already exists.", name)
	}
	return nil, fmt.Errorf("creating token %q: %w", name, interpretError(err))
}

// FindTokens implements slipway.TokenService.
func (s *TokenService) FindTokens(ctx context.Context) ([]*slipway.Token, error) {
	rows, err := s.db.pool.Query(ctx, `-- FindTokens
SELECT `+tokenColumns+` FROM api_tokens ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("finding tokens: %w", unavailable(err))
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[tokenRow])
	if err != nil {
		return nil, fmt.Errorf("finding tokens: %w", unavailable(err))
	}
	out := make([]*slipway.Token, len(list))
	for i, r := range list {
		out[i] = r.toToken()
	}
	return out, nil
}

// DeleteToken implements slipway.TokenService.
func (s *TokenService) DeleteToken(ctx context.Context, id int64) error {
	tag, err := s.db.pool.Exec(ctx, `-- DeleteToken
DELETE FROM api_tokens WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("deleting token %d: %w", id, unavailable(err))
	}
	if tag.RowsAffected() == 0 {
		return slipway.Errorf(slipway.ENOTFOUND, "Token %d not found.", id)
	}
	return nil
}

// AuthenticateToken implements slipway.TokenService. last_used_at is written
// at most once a minute per token, so a busy script does not turn every read
// into a write.
func (s *TokenService) AuthenticateToken(ctx context.Context, secret string) (*slipway.Token, error) {
	rows, err := s.db.pool.Query(ctx, `-- AuthenticateToken
WITH t AS (SELECT id FROM api_tokens WHERE token_sha256 = $1),
u AS (
    UPDATE api_tokens SET last_used_at = now()
    WHERE id IN (SELECT id FROM t) AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
    RETURNING id, last_used_at
)
SELECT a.id, a.name, a.role, a.created_at, COALESCE(u.last_used_at, a.last_used_at) AS last_used_at
FROM api_tokens a LEFT JOIN u ON u.id = a.id WHERE a.id IN (SELECT id FROM t)`, slipway.HashToken(secret))
	if err != nil {
		return nil, fmt.Errorf("authenticating token: %w", unavailable(err))
	}
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[tokenRow])
	if err == pgx.ErrNoRows {
		return nil, slipway.Errorf(slipway.ENOTFOUND, "Unknown token.")
	} else if err != nil {
		return nil, fmt.Errorf("authenticating token: %w", unavailable(err))
	}
	return row.toToken(), nil
}
