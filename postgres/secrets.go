package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway"
)

// SecretService implements slipway.SecretService. Values are sealed with a
// slipway.Sealer, bound to their repository and name, before they reach the
// database, and opened only in OpenSecrets.
type SecretService struct {
	db     *DB
	sealer *slipway.Sealer
}

var _ slipway.SecretService = (*SecretService)(nil)

// NewSecretService returns a SecretService over db. With a nil sealer (no
// SLIPWAY_SECRET_KEY) every method answers EUNAVAILABLE.
func NewSecretService(db *DB, sealer *slipway.Sealer) *SecretService {
	return &SecretService{db: db, sealer: sealer}
}

func buildSecretAD(repoID int64, name string) string {
	return fmt.Sprintf("repo:%d:secret:%s", repoID, name)
}

func (s *SecretService) ready() error {
	if s.sealer == nil {
		return slipway.Errorf(slipway.EUNAVAILABLE, "Build secrets need SLIPWAY_SECRET_KEY to be set.")
	}
	return nil
}

type secretRow struct {
	Name      string    `db:"name"`
	CreatedAt time.Time `db:"created_at"`
	UpdatedAt time.Time `db:"updated_at"`
}

func (r secretRow) info() slipway.SecretInfo {
	return slipway.SecretInfo{Name: r.Name, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC()}
}

// SetSecret implements slipway.SecretService.
func (s *SecretService) SetSecret(ctx context.Context, repoID int64, name string, value []byte) (*slipway.SecretInfo, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if !slipway.SecretNameRE.MatchString(name) {
		return nil, slipway.Errorf(slipway.EINVALID, "%q is not a secret name: use letters, digits and _, not starting with a digit, at most 100.", name)
	}
	if len(value) < slipway.MinSecretLen || len(value) > slipway.MaxSecretLen {
		return nil, slipway.Errorf(slipway.EINVALID, "A secret's value must be %d bytes to %d KiB long.", slipway.MinSecretLen, slipway.MaxSecretLen>>10)
	}
	sealed := s.sealer.Seal(value, buildSecretAD(repoID, name))
	rows, err := s.db.pool.Query(ctx, `-- SetSecret
INSERT INTO build_secrets (repo_id, name, value_enc) SELECT id, $2, $3 FROM repos WHERE id = $1
ON CONFLICT (repo_id, name) DO UPDATE SET value_enc = EXCLUDED.value_enc, updated_at = now()
RETURNING name, created_at, updated_at`, repoID, name, sealed)
	if err != nil {
		return nil, fmt.Errorf("setting secret %s of repo %d: %w", name, repoID, interpretError(err))
	}
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[secretRow])
	if err == pgx.ErrNoRows {
		return nil, slipway.Errorf(slipway.ENOTFOUND, "Repository %d not found.", repoID)
	} else if err != nil {
		return nil, fmt.Errorf("setting secret %s of repo %d: %w", name, repoID, interpretError(err))
	}
	info := row.info()
	return &info, nil
}

// DeleteSecret implements slipway.SecretService.
func (s *SecretService) DeleteSecret(ctx context.Context, repoID int64, name string) error {
	tag, err := s.db.pool.Exec(ctx, `-- DeleteSecret
DELETE FROM build_secrets WHERE repo_id = $1 AND name = $2`, repoID, name)
	if err != nil {
		return fmt.Errorf("deleting secret %s of repo %d: %w", name, repoID, interpretError(err))
	}
	if tag.RowsAffected() == 0 {
		return slipway.Errorf(slipway.ENOTFOUND, "Secret %s not found.", name)
	}
	return nil
}

// FindSecrets implements slipway.SecretService.
func (s *SecretService) FindSecrets(ctx context.Context, repoID int64) ([]slipway.SecretInfo, error) {
	rows, err := s.db.pool.Query(ctx, `-- FindSecrets
SELECT name, created_at, updated_at FROM build_secrets WHERE repo_id = $1 ORDER BY name`, repoID)
	if err != nil {
		return nil, fmt.Errorf("finding secrets of repo %d: %w", repoID, unavailable(err))
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[secretRow])
	if err != nil {
		return nil, fmt.Errorf("finding secrets of repo %d: %w", repoID, unavailable(err))
	}
	out := make([]slipway.SecretInfo, len(list))
	for i, r := range list {
		out[i] = r.info()
	}
	return out, nil
}

// OpenSecrets implements slipway.SecretService.
func (s *SecretService) OpenSecrets(ctx context.Context, repoID int64, names []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	if len(names) == 0 {
		return out, nil
	}
	if err := s.ready(); err != nil {
		return nil, err
	}
	rows, err := s.db.pool.Query(ctx, `-- OpenSecrets
SELECT name, value_enc FROM build_secrets WHERE repo_id = $1 AND name = ANY($2)`, repoID, names)
	if err != nil {
		return nil, fmt.Errorf("reading secrets of repo %d: %w", repoID, unavailable(err))
	}
	defer rows.Close()
	for rows.Next() {
		var (
			name   string
			sealed []byte
		)
		if err := rows.Scan(&name, &sealed); err != nil {
			return nil, fmt.Errorf("reading secrets of repo %d: %w", repoID, unavailable(err))
		}
		v, err := s.sealer.Open(sealed, buildSecretAD(repoID, name))
		if err != nil {
			return nil, fmt.Errorf("secret %s: %w", name, unavailable(err))
		}
		out[name] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading secrets of repo %d: %w", repoID, unavailable(err))
	}
	var missing []string
	for _, n := range names {
		if _, ok := out[n]; !ok && !slices.Contains(missing, n) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, slipway.Errorf(slipway.EINVALID, "secrets %s are listed in .slipway.yml but not stored in slipway; set them with PUT /api/v1/repos/{owner}/{name}/secrets/{secret}", strings.Join(missing, ", "))
	}
	return out, nil
}

// FindRepoID implements slipway.SecretService.
func (s *SecretService) FindRepoID(ctx context.Context, forge, owner, name string) (int64, error) {
	rows, err := s.db.pool.Query(ctx, `-- FindRepoID
SELECT id FROM repos WHERE lower(owner) = lower($1) AND lower(name) = lower($2) AND ($3 = '' OR forge = $3)`, owner, name, forge)
	if err != nil {
		return 0, fmt.Errorf("finding repo %s/%s: %w", owner, name, unavailable(err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, fmt.Errorf("finding repo %s/%s: %w", owner, name, unavailable(err))
	}
	switch len(ids) {
	case 0:
		return 0, slipway.Errorf(slipway.ENOTFOUND, "Repository %s/%s not found.", owner, name)
	case 1:
		return ids[0], nil
	}
	return 0, slipway.Errorf(slipway.ECONFLICT, "Several forges have a repository %s/%s: add ?forge=github, gitlab or gitea.", owner, name)
}
