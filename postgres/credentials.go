package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway"
)

var _ slipway.RepoCredentialService = (*SecretService)(nil)

func cloneTokenAD(repoID int64) string { return fmt.Sprintf("repo:%d:clone_token", repoID) }
func deployKeyAD(repoID int64) string  { return fmt.Sprintf("repo:%d:deploy_key", repoID) }

func (s *SecretService) credentialsReady() error {
	if s.sealer == nil {
		return slipway.Errorf(slipway.EUNAVAILABLE, "Per-repository clone credentials need SLIPWAY_SECRET_KEY to be set.")
	}
	return nil
}

// SetCloneToken implements slipway.RepoCredentialService.
func (s *SecretService) SetCloneToken(ctx context.Context, repoID int64, username, token string) error {
	if err := s.credentialsReady(); err != nil {
		return err
	}
	if err := slipway.CheckCloneToken(username, token); err != nil {
		return err
	}
	tag, err := s.db.pool.Exec(ctx, `-- SetCloneToken
UPDATE repos SET clone_token_enc = $2, clone_token_username = $3, updated_at = now() WHERE id = $1`,
		repoID, s.sealer.Seal([]byte(token), cloneTokenAD(repoID)), username)
	if err != nil {
		return fmt.Errorf("setting the clone token of repo %d: %w", repoID, interpretError(err))
	}
	if tag.RowsAffected() == 0 {
		return slipway.Errorf(slipway.ENOTFOUND, "Repository %d not found.", repoID)
	}
	return nil
}

// DeleteCloneToken implements slipway.RepoCredentialService.
func (s *SecretService) DeleteCloneToken(ctx context.Context, repoID int64) error {
	tag, err := s.db.pool.Exec(ctx, `-- DeleteCloneToken
UPDATE repos SET clone_token_enc = NULL, clone_token_username = '', updated_at = now()
WHERE id = $1 AND clone_token_enc IS NOT NULL`, repoID)
	if err != nil {
		return fmt.Errorf("deleting the clone token of repo %d: %w", repoID, interpretError(err))
	}
	if tag.RowsAffected() == 0 {
		return slipway.Errorf(slipway.ENOTFOUND, "The repository has no clone token.")
	}
	return nil
}

// SetDeployKey implements slipway.RepoCredentialService.
func (s *SecretService) SetDeployKey(ctx context.Context, repoID int64, privateKey []byte) (*slipway.DeployKeyInfo, error) {
	if err := s.credentialsReady(); err != nil {
		return nil, err
	}
	info, err := slipway.ParseDeployKey(privateKey)
	if err != nil {
		return nil, err
	}
	tag, err := s.db.pool.Exec(ctx, `-- SetDeployKey
UPDATE repos SET deploy_key_enc = $2, deploy_key_public = $3, deploy_key_fingerprint = $4, updated_at = now() WHERE id = $1`,
		repoID, s.sealer.Seal(privateKey, deployKeyAD(repoID)), info.PublicKey, info.Fingerprint)
	if err != nil {
		return nil, fmt.Errorf("setting the deploy key of repo %d: %w", repoID, interpretError(err))
	}
	if tag.RowsAffected() == 0 {
		return nil, slipway.Errorf(slipway.ENOTFOUND, "Repository %d not found.", repoID)
	}
	return info, nil
}

// DeleteDeployKey implements slipway.RepoCredentialService.
func (s *SecretService) DeleteDeployKey(ctx context.Context, repoID int64) error {
	tag, err := s.db.pool.Exec(ctx, `-- DeleteDeployKey
UPDATE repos SET deploy_key_enc = NULL, deploy_key_public = '', deploy_key_fingerprint = '', updated_at = now()
WHERE id = $1 AND deploy_key_enc IS NOT NULL`, repoID)
	if err != nil {
		return fmt.Errorf("deleting the deploy key of repo %d: %w", repoID, interpretError(err))
	}
	if tag.RowsAffected() == 0 {
		return slipway.Errorf(slipway.ENOTFOUND, "The repository has no deploy key.")
	}
	return nil
}

// OpenRepoCredentials implements slipway.RepoCredentialService.
func (s *SecretService) OpenRepoCredentials(ctx context.Context, repoID int64) (*slipway.RepoCredentials, error) {
	var (
		out                 slipway.RepoCredentials
		tokenEnc, deployEnc []byte
	)
	err := s.db.pool.QueryRow(ctx, `-- OpenRepoCredentials
SELECT clone_url, clone_token_enc, clone_token_username, deploy_key_enc FROM repos WHERE id = $1`, repoID).
		Scan(&out.CloneURL, &tokenEnc, &out.CloneUsername, &deployEnc)
	if err == pgx.ErrNoRows {
		return nil, slipway.Errorf(slipway.ENOTFOUND, "Repository %d not found.", repoID)
	} else if err != nil {
		return nil, fmt.Errorf("reading the clone credentials of repo %d: %w", repoID, unavailable(err))
	}
	if (tokenEnc != nil || deployEnc != nil) && s.sealer == nil {
		return nil, s.credentialsReady()
	}
	if tokenEnc != nil {
		v, err := s.sealer.Open(tokenEnc, cloneTokenAD(repoID))
		if err != nil {
			return nil, fmt.Errorf("clone token of repo %d: %w", repoID, err)
		}
		out.CloneToken = string(v)
	}
	if deployEnc != nil {
		v, err := s.sealer.Open(deployEnc, deployKeyAD(repoID))
		if err != nil {
			return nil, fmt.Errorf("deploy key of repo %d: %w", repoID, err)
		}
		out.DeployKey = v
	}
	return &out, nil
}
