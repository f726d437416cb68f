package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway"
)

var _ slipway.RegistryAuthService = (*SecretService)(nil)

// registryAuthAD binds a sealed registry password to its repository and
// host, so a value copied to another row does not open.
func registryAuthAD(repoID int64, registry string) string {
	return fmt.Sprintf("repo:%d:registry_auth:%s", repoID, registry)
}

func (s *SecretService) registryAuthsReady() error {
	if s.sealer == nil {
		return slipway.Errorf(slipway.EUNAVAILABLE, "Per-repository registry credentials need SLIPWAY_SECRET_KEY to be set.")
	}
	return nil
}

// SetRegistryAuth implements slipway.RegistryAuthService. registry is
// normalized with slipway.NormalizeRegistryHost first.
func (s *SecretService) SetRegistryAuth(ctx context.Context, repoID int64, registry, username, password string) (*slipway.RegistryAuthInfo, error) {
	if err := s.registryAuthsReady(); err != nil {
		return nil, err
	}
	registry = slipway.NormalizeRegistryHost(registry)
	if err := slipway.CheckRegistryAuth(registry, username, password); err != nil {
		return nil, err
	}
	info := slipway.RegistryAuthInfo{Registry: registry, Username: username}
	err := s.db.pool.QueryRow(ctx, `-- SetRegistryAuth
INSERT INTO repo_registry_auths (repo_id, registry, username, password_enc)
SELECT id, $2, $3, $4 FROM repos WHERE id = $1
ON CONFLICT (repo_id, registry) DO UPDATE SET username = EXCLUDED.username, password_enc = EXCLUDED.password_enc, updated_at = now()
RETURNING updated_at`, repoID, registry, username, s.sealer.Seal([]byte(password), registryAuthAD(repoID, registry))).
		Scan(&info.UpdatedAt)
	if err == pgx.ErrNoRows {
		return nil, slipway.Errorf(slipway.ENOTFOUND, "Repository %d not found.", repoID)
	} else if err != nil {
		return nil, fmt.Errorf("setting the %s credential of repo %d: %w", registry, repoID, interpretError(err))
	}
	return &info, nil
}

// DeleteRegistryAuth implements slipway.RegistryAuthService.
func (s *SecretService) DeleteRegistryAuth(ctx context.Context, repoID int64, registry string) error {
	registry = slipway.NormalizeRegistryHost(registry)
	tag, err := s.db.pool.Exec(ctx, `-- DeleteRegistryAuth
DELETE FROM repo_registry_auths WHERE repo_id = $1 AND registry = $2`, repoID, registry)
	if err != nil {
		return fmt.Errorf("deleting the %s credential of repo %d: %w", registry, repoID, interpretError(err))
	}
	if tag.RowsAffected() == 0 {
		return slipway.Errorf(slipway.ENOTFOUND, "The repository has no credential for %s.", registry)
	}
	return nil
}

// FindRegistryAuths implements slipway.RegistryAuthService, ordered by host.
func (s *SecretService) FindRegistryAuths(ctx context.Context, repoID int64) ([]*slipway.RegistryAuthInfo, error) {
	rows, err := s.db.pool.Query(ctx, `-- FindRegistryAuths
SELECT registry, username, updated_at FROM repo_registry_auths WHERE repo_id = $1 ORDER BY registry`, repoID)
	if err != nil {
		return nil, fmt.Errorf("finding the registry credentials of repo %d: %w", repoID, unavailable(err))
	}
	defer rows.Close()
	out := []*slipway.RegistryAuthInfo{}
	for rows.Next() {
		var (
			i  slipway.RegistryAuthInfo
			at time.Time
		)
		if err := rows.Scan(&i.Registry, &i.Username, &at); err != nil {
			return nil, fmt.Errorf("finding the registry credentials of repo %d: %w", repoID, unavailable(err))
		}
		i.UpdatedAt = at
		out = append(out, &i)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("finding the registry credentials of repo %d: %w", repoID, unavailable(err))
	}
	return out, nil
}

// OpenRegistryAuths implements slipway.RegistryAuthService.
func (s *SecretService) OpenRegistryAuths(ctx context.Context, repoID int64) (map[string]slipway.RegistryAuth, error) {
	rows, err := s.db.pool.Query(ctx, `-- OpenRegistryAuths
SELECT registry, username, password_enc FROM repo_registry_auths WHERE repo_id = $1`, repoID)
	if err != nil {
		return nil, fmt.Errorf("reading the registry credentials of repo %d: %w", repoID, unavailable(err))
	}
	defer rows.Close()
	out := map[string]slipway.RegistryAuth{}
	for rows.Next() {
		var (
			registry, username string
			enc                []byte
		)
		if err := rows.Scan(&registry, &username, &enc); err != nil {
			return nil, fmt.Errorf("reading the registry credentials of repo %d: %w", repoID, unavailable(err))
		}
		if err := s.registryAuthsReady(); err != nil {
			return nil, err
		}
		v, err := s.sealer.Open(enc, registryAuthAD(repoID, registry))
		if err != nil {
			return nil, fmt.Errorf("%s credential of repo %d: %w", registry, repoID, err)
		}
		out[registry] = slipway.RegistryAuth{Username: username, Password: string(v)}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the registry credentials of repo %d: %w", repoID, unavailable(err))
	}
	return out, nil
}
