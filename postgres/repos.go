package postgres

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway"
)

// RepoService implements slipway.RepoService. Webhook secrets are sealed with
// the Sealer given to NewRepoService, bound to the row ("repo:<id>:webhook_secret"),
// so a sealed value copied to another repository does not open.
type RepoService struct {
	db     *DB
	sealer *slipway.Sealer
}

var _ slipway.RepoService = (*RepoService)(nil)

// NewRepoService returns a RepoService over db. sealer may be nil (no
// SLIPWAY_SECRET_KEY): then setting a webhook secret is refused with
// EUNAVAILABLE and repositories that have one cannot receive webhooks.
func NewRepoService(db *DB, sealer *slipway.Sealer) *RepoService {
	return &RepoService{db: db, sealer: sealer}
}

type repoRow struct {
	ID               int64     `db:"id"`
	Forge            string    `db:"forge"`
	Owner            string    `db:"owner"`
	Name             string    `db:"name"`
	CloneURL         string    `db:"clone_url"`
	Image            string    `db:"image"`
	WebhookSecretEnc []byte    `db:"webhook_secret_enc"`
	HasCloneToken    bool      `db:"has_clone_token"`
	DeployKeyFP      string    `db:"deploy_key_fingerprint"`
	RegistryAuths    []string  `db:"registry_auths"`
	Platforms        []string  `db:"platforms"`
	AllowedBranches  []string  `db:"allowed_branches"`
	PromotionTargets []string  `db:"promotion_targets"`
	TrustedAssoc     []string  `db:"trusted_associations"`
	MaxRunning       int       `db:"max_running"`
	Supersede        bool      `db:"supersede"`
	DefaultBranch    string    `db:"default_branch"`
	CreatedAt        time.Time `db:"created_at"`
	UpdatedAt        time.Time `db:"updated_at"`
}

const repoColumns = `id, forge, owner, name, clone_url, image, webhook_secret_enc,
	clone_token_enc IS NOT NULL AS has_clone_token, deploy_key_fingerprint,
	ARRAY(SELECT a.registry FROM repo_registry_auths a WHERE a.repo_id = repos.id ORDER BY a.registry) AS registry_auths, platforms,
	allowed_branches, promotion_targets, trusted_associations, max_running, supersede, default_branch, created_at, updated_at`

func (r repoRow) toRepo() *slipway.Repo {
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	return &slipway.Repo{
		ID: r.ID, Forge: r.Forge, Owner: r.Owner, Name: r.Name, CloneURL: r.CloneURL, Image: r.Image,
		HasWebhookSecret: r.WebhookSecretEnc != nil, HasCloneToken: r.HasCloneToken,
		HasDeployKey: r.DeployKeyFP != "", DeployKeyFingerprint: r.DeployKeyFP, RegistryAuths: nonNil(r.RegistryAuths), Platforms: nonNil(r.Platforms),
		AllowedBranches: nonNil(r.AllowedBranches), PromotionTargets: nonNil(r.PromotionTargets),
		TrustedAssociations: nonNil(r.TrustedAssoc), MaxRunning: r.MaxRunning, Supersede: r.Supersede,
		DefaultBranch: r.DefaultBranch, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(),
	}
}

func webhookSecretAD(id int64) string { return "repo:" + strconv.FormatInt(id, 10) + ":webhook_secret" }

// FindRepos implements slipway.RepoService.
func (s *RepoService) FindRepos(ctx context.Context) ([]*slipway.Repo, error) {
	rows, err := s.db.pool.Query(ctx, `-- FindRepos
SELECT `+repoColumns+` FROM repos ORDER BY forge, lower(owner), lower(name)`)
	if err != nil {
		return nil, fmt.Errorf("finding repositories: %w", unavailable(err))
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[repoRow])
	if err != nil {
		return nil, fmt.Errorf("finding repositories: %w", unavailable(err))
	}
	repos := make([]*slipway.Repo, len(list))
	for i, r := range list {
		repos[i] = r.toRepo()
	}
	return repos, nil
}

// FindRepo implements slipway.RepoService.
func (s *RepoService) FindRepo(ctx context.Context, k slipway.RepoKey) (*slipway.Repo, error) {
	r, err := findRepo(ctx, s.db.pool, k, false)
	if err != nil {
		return nil, fmt.Errorf("finding repository %s/%s: %w", k.Owner, k.Name, unavailable(err))
	}
	return r.toRepo(), nil
}

// findRepo returns the one repository k names, locked FOR UPDATE when lock is set.
func findRepo(ctx context.Context, q querier, k slipway.RepoKey, lock bool) (repoRow, error) {
	// With the forge known (every webhook) the lookup is one probe of the
	// unique index repos_forge_owner_name.
	query := `-- FindRepo
SELECT ` + repoColumns + ` FROM repos
WHERE lower(owner) = lower($1) AND lower(name) = lower($2)`
	args := []any{k.Owner, k.Name}
	if k.Forge != "" {
		query += ` AND forge = $3`
		args = append(args, k.Forge)
	}
	query += ` ORDER BY forge LIMIT 2`
	if lock {
		query += ` FOR UPDATE`
	}
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return repoRow{}, err
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[repoRow])
	switch {
	case err != nil:
		return repoRow{}, interpretError(err)
	case len(list) == 0:
		return repoRow{}, slipway.Errorf(slipway.ENOTFOUND, "Repository %s/%s not found.", k.Owner, k.Name)
	case len(list) > 1:
		return repoRow{}, slipway.Errorf(slipway.ECONFLICT,
			"Repository %s/%s exists on %s and %s; add ?forge= to say which.", k.Owner, k.Name, list[0].Forge, list[1].Forge)
	}
	return list[0], nil
}

// CreateRepo implements slipway.RepoService.
func (s *RepoService) CreateRepo(ctx context.Context, c slipway.RepoCreate) (*slipway.Repo, error) {
	if c.WebhookSecret != "" && s.sealer == nil {
		return nil, errNoSealer()
	}
	maxRunning := c.MaxRunning
	if maxRunning == 0 {
		maxRunning = 2
	}
	supersede := c.Supersede == nil || *c.Supersede
	var repo *slipway.Repo
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `-- CreateRepo
INSERT INTO repos (forge, owner, name, clone_url, image, platforms, allowed_branches, max_running, supersede, promotion_targets,
    trusted_associations)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING `+repoColumns,
			c.Forge, c.Owner, c.Name, c.CloneURL, c.Image, nonNilList(c.Platforms), nonNilList(c.AllowedBranches), maxRunning, supersede,
			nonNilList(c.PromotionTargets), nonNilList(c.TrustedAssociations))
		if err != nil {
			return err
		}
		row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[repoRow])
		if err != nil {
			return err
		}
		if c.WebhookSecret != "" {
			if row, err = s.setSecret(ctx, tx, row.ID, c.WebhookSecret); err != nil {
				return err
			}
		}
		repo = row.toRepo()
		return nil
	})
	if err != nil {
		err = interpretError(err)
		if slipway.ErrorCode(err) == slipway.ECONFLICT {
			err = slipway.Errorf(slipway.ECONFLICT, "Repository %s/%s on %s already exists.", c.Owner, c.Name, c.Forge)
		}
		return nil, fmt.Errorf("creating repository %s/%s: %w", c.Owner, c.Name, unavailable(err))
	}
	return repo, nil
}

func errNoSealer() error {
	return slipway.Errorf(slipway.EUNAVAILABLE, "Per-repository secrets are disabled: SLIPWAY_SECRET_KEY is unset.")
}

func nonNilList(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// setSecret seals secret for repository id ("" removes it).
func (s *RepoService) setSecret(ctx context.Context, tx pgx.Tx, id int64, secret string) (repoRow, error) {
	var enc []byte
	if secret != "" {
		enc = s.sealer.Seal([]byte(secret), webhookSecretAD(id))
	}
	rows, err := tx.Query(ctx, `-- UpdateRepo
UPDATE repos SET webhook_secret_enc = $2, updated_at = now() WHERE id = $1 RETURNING `+repoColumns, id, enc)
	if err != nil {
		return repoRow{}, err
	}
	return pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[repoRow])
}

// UpdateRepo implements slipway.RepoService.
func (s *RepoService) UpdateRepo(ctx context.Context, k slipway.RepoKey, u slipway.RepoUpdate) (*slipway.Repo, error) {
	if u.WebhookSecret != nil && *u.WebhookSecret != "" && s.sealer == nil {
		return nil, errNoSealer()
	}
	var platforms, branches, targets, trusted []string
	if u.PromotionTargets != nil {
		targets = nonNilList(*u.PromotionTargets)
	}
	if u.TrustedAssociations != nil {
		trusted = nonNilList(*u.TrustedAssociations)
	}
	if u.Platforms != nil {
		platforms = nonNilList(*u.Platforms)
	}
	if u.AllowedBranches != nil {
		branches = nonNilList(*u.AllowedBranches)
	}
	var repo *slipway.Repo
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		row, err := findRepo(ctx, tx, k, true)
		if err != nil {
			return err
		}
		// A NULL argument leaves the column as is.
		rows, err := tx.Query(ctx, `-- UpdateRepo
UPDATE repos SET
    clone_url        = coalesce($2, clone_url),
    image            = coalesce($3, image),
    platforms        = coalesce($4, platforms),
    allowed_branches = coalesce($5, allowed_branches),
    max_running      = coalesce($6, max_running),
    supersede        = coalesce($7, supersede),
    promotion_targets = coalesce($8, promotion_targets),
    trusted_associations = coalesce($9, trusted_associations),
    updated_at       = now()
WHERE id = $1 RETURNING `+repoColumns, row.ID, u.CloneURL, u.Image, platforms, branches, u.MaxRunning, u.Supersede, targets, trusted)
		if err != nil {
			return err
		}
		if row, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[repoRow]); err != nil {
			return err
		}
		if u.WebhookSecret != nil {
			if row, err = s.setSecret(ctx, tx, row.ID, *u.WebhookSecret); err != nil {
				return err
			}
		}
		repo = row.toRepo()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("updating repository %s/%s: %w", k.Owner, k.Name, interpretError(err))
	}
	return repo, nil
}

// DeleteRepo implements slipway.RepoService.
func (s *RepoService) DeleteRepo(ctx context.Context, k slipway.RepoKey) error {
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		row, err := findRepo(ctx, tx, k, true)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `-- DeleteRepo
DELETE FROM repos WHERE id = $1`, row.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("deleting repository %s/%s: %w", k.Owner, k.Name, interpretError(err))
	}
	return nil
}

// FindRepoWebhookSecret implements slipway.RepoService. It only reads.
func (s *RepoService) FindRepoWebhookSecret(ctx context.Context, forge, owner, name string) (*slipway.Repo, string, error) {
	row, err := findRepo(ctx, s.db.pool, slipway.RepoKey{Forge: forge, Owner: owner, Name: name}, false)
	if slipway.ErrorCode(err) == slipway.ENOTFOUND {
		return nil, "", nil
	} else if err != nil {
		return nil, "", fmt.Errorf("finding repository %s/%s: %w", owner, name, unavailable(err))
	}
	if row.WebhookSecretEnc == nil {
		return row.toRepo(), "", nil
	}
	if s.sealer == nil {
		return nil, "", slipway.Errorf(slipway.EUNAVAILABLE,
			"Repository %s/%s has its own webhook secret, but SLIPWAY_SECRET_KEY is unset, so it cannot be read.", owner, name)
	}
	secret, err := s.sealer.Open(row.WebhookSecretEnc, webhookSecretAD(row.ID))
	if err != nil {
		return nil, "", fmt.Errorf("reading webhook secret of %s/%s: %w", owner, name, unavailable(err))
	}
	return row.toRepo(), string(secret), nil
}
