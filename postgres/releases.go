package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway"
)

// ReleaseService implements slipway.ReleaseService.
type ReleaseService struct {
	db *DB
}

var _ slipway.ReleaseService = (*ReleaseService)(nil)

// NewReleaseService returns a ReleaseService over db.
func NewReleaseService(db *DB) *ReleaseService { return &ReleaseService{db: db} }

type releaseRow struct {
	ID              int64     `db:"id"`
	RepoID          int64     `db:"repo_id"`
	Owner           string    `db:"owner"`
	Name            string    `db:"name"`
	Version         string    `db:"version"`
	Tag             string    `db:"tag"`
	Tags            []string  `db:"tags"`
	Image           string    `db:"image"`
	Commit          string    `db:"commit_sha"`
	IndexDigest     string    `db:"index_digest"`
	Platforms       []byte    `db:"platforms"`
	SourceBuildID   int64     `db:"source_build_id"`
	BuildID         int64     `db:"build_id"`
	ChartRef        string    `db:"chart_ref"`
	ChartDigest     string    `db:"chart_digest"`
	ChartVersion    string    `db:"chart_version"`
	ChartAppVersion string    `db:"chart_app_version"`
	ReleasedBy      string    `db:"released_by"`
	PromotionIDs    []int64   `db:"promotion_ids"`
	ReleasedAt      time.Time `db:"released_at"`
}

const releaseColumns = `rl.id, rl.repo_id, r.owner, r.name, rl.version, rl.tag, rl.tags, rl.image,
	rl.commit_sha, rl.index_digest, rl.platforms, rl.source_build_id, rl.build_id, rl.chart_ref,
	rl.chart_digest, rl.chart_version, rl.chart_app_version, rl.released_by, rl.promotion_ids, rl.released_at`

func (row releaseRow) toRelease() (*slipway.Release, error) {
	r := &slipway.Release{ID: row.ID, RepoID: row.RepoID, Repo: row.Owner + "/" + row.Name, Version: row.Version,
		Tag: row.Tag, Tags: row.Tags, Image: row.Image, Commit: row.Commit, IndexDigest: row.IndexDigest,
		SourceBuildID: row.SourceBuildID, BuildID: row.BuildID, ReleasedBy: row.ReleasedBy,
		PromotionIDs: row.PromotionIDs, ReleasedAt: row.ReleasedAt.UTC()}
	if err := json.Unmarshal(row.Platforms, &r.Platforms); err != nil {
		return nil, fmt.Errorf("decoding the platforms of release %d: %w", row.ID, err)
	}
	if row.ChartRef != "" {
		name := row.ChartRef[strings.LastIndex(row.ChartRef, "/")+1:]
		name, _, _ = strings.Cut(name, ":")
		r.Chart = &slipway.ReleaseChart{Name: name, Reference: row.ChartRef, Digest: row.ChartDigest,
			Version: row.ChartVersion, AppVersion: row.ChartAppVersion}
	}
	if r.Tags == nil {
		r.Tags = []string{}
	}
	if r.PromotionIDs == nil {
		r.PromotionIDs = []int64{}
	}
	return r, nil
}

// CreateRelease implements slipway.ReleaseService. The repository is the
// build's: r.RepoID is taken from build r.BuildID, so a record cannot name
// another repository's build.
func (s *ReleaseService) CreateRelease(ctx context.Context, r *slipway.Release) error {
	platforms := r.Platforms
	if platforms == nil {
		platforms = []slipway.ReleasePlatform{}
	}
	data, err := json.Marshal(platforms)
	if err != nil {
		return fmt.Errorf("encoding the platforms of release %s: %w", r.Version, err)
	}
	var chart slipway.ReleaseChart
	if r.Chart != nil {
		chart = *r.Chart
	}
	tags, ids := r.Tags, r.PromotionIDs
	if tags == nil {
		tags = []string{}
	}
	if ids == nil {
		ids = []int64{}
	}
	err = s.db.pool.QueryRow(ctx, `-- CreateRelease
INSERT INTO releases (repo_id, version, tag, tags, image, commit_sha, index_digest, platforms,
	source_build_id, build_id, chart_ref, chart_digest, chart_version, chart_app_version, released_by, promotion_ids)
SELECT b.repo_id, $2, $3, $4, $5, $6, $7, $8, $9, b.id, $10, $11, $12, $13, $14, $15 FROM builds b WHERE b.id = $1
ON CONFLICT (repo_id, version) DO UPDATE SET
	tag = excluded.tag, tags = excluded.tags, image = excluded.image, commit_sha = excluded.commit_sha,
	index_digest = excluded.index_digest, platforms = excluded.platforms,
	source_build_id = excluded.source_build_id, build_id = excluded.build_id,
	chart_ref = excluded.chart_ref, chart_digest = excluded.chart_digest,
	chart_version = excluded.chart_version, chart_app_version = excluded.chart_app_version,
	released_by = excluded.released_by, promotion_ids = excluded.promotion_ids, released_at = now()
RETURNING id, repo_id, released_at`,
		r.BuildID, r.Version, r.Tag, tags, r.Image, r.Commit, r.IndexDigest, data, r.SourceBuildID,
		chart.Reference, chart.Digest, chart.Version, chart.AppVersion, r.ReleasedBy, ids).Scan(&r.ID, &r.RepoID, &r.ReleasedAt)
	if err == pgx.ErrNoRows {
		return slipway.Errorf(slipway.ENOTFOUND, "Build %d not found.", r.BuildID)
	}
	if err != nil {
		return fmt.Errorf("recording release %s of build %d: %w", r.Version, r.BuildID, interpretError(err))
	}
	r.ReleasedAt = r.ReleasedAt.UTC()
	return nil
}

// FindRelease implements slipway.ReleaseService.
func (s *ReleaseService) FindRelease(ctx context.Context, repo, version string) (*slipway.Release, error) {
	owner, name := slipway.SplitRepo(repo)
	if owner == "" || name == "" {
		return nil, slipway.Errorf(slipway.EINVALID, "repo must be owner/name, got %q.", repo)
	}
	if version == "" {
		return nil, slipway.Errorf(slipway.EINVALID, "Name a version, such as 1.2.3 or v1.2.3.")
	}
	rows, err := s.db.pool.Query(ctx, `-- FindRelease
SELECT `+releaseColumns+` FROM releases rl JOIN repos r ON r.id = rl.repo_id
WHERE lower(r.owner) = lower($1) AND lower(r.name) = lower($2) AND rl.version IN ($3, $4)
ORDER BY (rl.version = $3) DESC, rl.released_at DESC, rl.id DESC LIMIT 1`,
		owner, name, version, strings.TrimPrefix(version, "v"))
	if err != nil {
		return nil, fmt.Errorf("finding release %s of %s: %w", version, repo, unavailable(err))
	}
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[releaseRow])
	if err == pgx.ErrNoRows {
		return nil, slipway.Errorf(slipway.ENOTFOUND, "%s has no release %s: a version is released by pushing its tag (see GET /api/v1/releases/%s for the ones it has).", repo, version, repo)
	}
	if err != nil {
		return nil, fmt.Errorf("finding release %s of %s: %w", version, repo, unavailable(err))
	}
	return row.toRelease()
}

// FindReleases implements slipway.ReleaseService.
func (s *ReleaseService) FindReleases(ctx context.Context, f slipway.ReleaseFilter) ([]*slipway.Release, error) {
	where, args := []string{"TRUE"}, []any{}
	if f.Repo != "" {
		owner, name := slipway.SplitRepo(f.Repo)
		if owner == "" || name == "" {
			return nil, slipway.Errorf(slipway.EINVALID, "repo must be owner/name, got %q.", f.Repo)
		}
		args = append(args, owner, name)
		where = append(where, fmt.Sprintf("lower(r.owner) = lower($%d) AND lower(r.name) = lower($%d)", len(args)-1, len(args)))
	}
	if f.BuildID != 0 {
		args = append(args, f.BuildID)
		where = append(where, fmt.Sprintf("(rl.source_build_id = $%[1]d OR rl.build_id = $%[1]d)", len(args)))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	args = append(args, min(limit, 500))
	rows, err := s.db.pool.Query(ctx, fmt.Sprintf(`-- FindReleases
SELECT %s FROM releases rl JOIN repos r ON r.id = rl.repo_id
WHERE %s ORDER BY rl.released_at DESC, rl.id DESC LIMIT $%d`, releaseColumns, strings.Join(where, " AND "), len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("finding releases: %w", unavailable(err))
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[releaseRow])
	if err != nil {
		return nil, fmt.Errorf("finding releases: %w", unavailable(err))
	}
	out := make([]*slipway.Release, 0, len(list))
	for _, row := range list {
		r, err := row.toRelease()
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
