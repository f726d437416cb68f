package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway"
)

// BuildService implements slipway.BuildService.
type BuildService struct {
	db     *DB
	intake intake // batches EnqueueTriggerID's deliveries
}

var _ slipway.BuildService = (*BuildService)(nil)

// NewBuildService returns a BuildService over db.
func NewBuildService(db *DB) *BuildService { return &BuildService{db: db} }

// buildRow is a builds row joined with its repository's owner and name.
type buildRow struct {
	ID          int64      `db:"id"`
	RepoID      int64      `db:"repo_id"`
	Forge       string     `db:"forge"`
	Owner       string     `db:"owner"`
	Name        string     `db:"name"`
	Ref         string     `db:"ref"`
	CommitSHA   string     `db:"commit_sha"`
	Message     string     `db:"message"`
	Sender      string     `db:"sender"`
	DeliveryID  string     `db:"delivery_id"`
	CloneURL    string     `db:"clone_url"`
	State       string     `db:"state"`
	Image       string     `db:"image"`
	ImageRef    string     `db:"image_ref"`
	IndexDigest string     `db:"index_digest"`
	Platforms   []byte     `db:"platforms"`
	Tests       []byte     `db:"tests"`
	Tags        []string   `db:"tags"`
	SkippedTags []byte     `db:"skipped_tags"`
	Error       string     `db:"error"`
	Attempt     int        `db:"attempt"`
	CreatedAt   time.Time  `db:"created_at"`
	StartedAt   *time.Time `db:"started_at"`
	FinishedAt  *time.Time `db:"finished_at"`

	TargetPlatforms []string   `db:"target_platforms"`
	PullRequest     *int       `db:"pull_request"`
	PRTitle         string     `db:"pr_title"`
	PRAuthor        string     `db:"pr_author"`
	PRURL           string     `db:"pr_url"`
	PRFork          bool       `db:"pr_fork"`
	PRBase          string     `db:"pr_base"`
	PRAssociation   string     `db:"pr_association"`
	Approval        string     `db:"approval"`
	ApprovedBy      string     `db:"approved_by"`
	ApprovedAt      *time.Time `db:"approved_at"`
	VerifyRef       bool       `db:"verify_ref"`
	// The latest commit status of the build (NULL before any).
	StatusState     *string    `db:"fs_state"`
	StatusOutcome   *string    `db:"fs_outcome"`
	StatusAttempts  *int       `db:"fs_attempts"`
	StatusError     *string    `db:"fs_error"`
	StatusUpdatedAt *time.Time `db:"fs_updated_at"`
}

const buildColumns = buildOwnColumns + `, fs.state AS fs_state, fs.outcome AS fs_outcome, fs.attempts AS fs_attempts,
	fs.last_error AS fs_error, fs.updated_at AS fs_updated_at`

// buildOwnColumns are the columns of buildRow but the latest commit status:
// a build b joined with its repository r.
const buildOwnColumns = `b.id, b.repo_id, r.forge, r.owner, r.name, b.ref, b.commit_sha, b.message, b.sender,
	b.delivery_id, b.clone_url, b.state, b.image, b.image_ref, b.index_digest, b.platforms, b.tests,
	b.tags, b.error, b.attempt, b.created_at, b.started_at, b.finished_at, b.target_platforms,
	b.pull_request, b.pr_title, b.pr_author, b.pr_url, b.pr_fork, b.pr_base, b.pr_association, b.approval, b.approved_by, b.approved_at,
	b.skipped_tags, b.verify_ref`

// buildFrom joins a build with its repository and its latest commit status.
const buildFrom = `builds b JOIN repos r ON r.id = b.repo_id
LEFT JOIN LATERAL (
    SELECT state, outcome, attempts, last_error, updated_at FROM forge_statuses f
    WHERE f.build_id = b.id ORDER BY f.id DESC LIMIT 1
) fs ON true`

func (r buildRow) toBuild() (*slipway.Build, error) {
	b := &slipway.Build{
		ID: r.ID, RepoID: r.RepoID, Repo: r.Owner + "/" + r.Name, Forge: r.Forge, Ref: r.Ref,
		Commit: r.CommitSHA, Message: r.Message, Sender: r.Sender, DeliveryID: r.DeliveryID,
		CloneURL: r.CloneURL, State: slipway.BuildState(r.State), Image: r.Image, ImageRef: r.ImageRef,
		IndexDigest: r.IndexDigest, Tags: r.Tags, Error: r.Error, Attempt: r.Attempt,
		CreatedAt: r.CreatedAt.UTC(), StartedAt: utc(r.StartedAt), FinishedAt: utc(r.FinishedAt),
		Platforms: []slipway.PlatformDigest{}, Tests: []slipway.TestResult{},
		TargetPlatforms: r.TargetPlatforms,
		Approval:        r.Approval, ApprovedBy: r.ApprovedBy, ApprovedAt: utc(r.ApprovedAt),
		VerifyRef: r.VerifyRef,
	}
	if r.StatusState != nil {
		b.ForgeStatus = &slipway.ForgeStatus{
			State: slipway.BuildState(*r.StatusState), Outcome: slipway.StatusOutcome(*r.StatusOutcome),
			Attempts: *r.StatusAttempts, Error: *r.StatusError, UpdatedAt: r.StatusUpdatedAt.UTC(),
		}
	}
	if b.Tags == nil {
		b.Tags = []string{}
	}
	if r.PullRequest != nil {
		b.PullRequest = &slipway.PullRequest{Number: *r.PullRequest, Title: r.PRTitle, Author: r.PRAuthor, URL: r.PRURL, Fork: r.PRFork, Base: r.PRBase,
			AuthorAssociation: r.PRAssociation}
	}
	if len(r.SkippedTags) > 0 {
		if err := json.Unmarshal(r.SkippedTags, &b.SkippedTags); err != nil {
			return nil, fmt.Errorf("decoding skipped tags of build %d: %w", r.ID, err)
		}
	}
	if err := json.Unmarshal(r.Platforms, &b.Platforms); err != nil {
		return nil, fmt.Errorf("decoding platforms of build %d: %w", r.ID, err)
	}
	if err := json.Unmarshal(r.Tests, &b.Tests); err != nil {
		return nil, fmt.Errorf("decoding tests of build %d: %w", r.ID, err)
	}
	return b, nil
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// querier is what both a pool and a transaction offer.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// FindBuildByID implements slipway.BuildService.
func (s *BuildService) FindBuildByID(ctx context.Context, id int64) (*slipway.Build, error) {
	b, err := findBuildByID(ctx, s.db.pool, id)
	if err != nil {
		return nil, unavailable(fmt.Errorf("finding build %d: %w", id, err))
	}
	if b.Attempts, err = findAttempts(ctx, s.db.pool, id); err != nil {
		return nil, unavailable(fmt.Errorf("finding attempts of build %d: %w", id, err))
	}
	return b, nil
}

func findBuildByID(ctx context.Context, q querier, id int64) (*slipway.Build, error) {
	rows, err := q.Query(ctx, `-- FindBuildByID
SELECT `+buildColumns+` FROM `+buildFrom+` WHERE b.id = $1`, id)
	if err != nil {
		return nil, err
	}
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[buildRow])
	if err != nil {
		if err == pgx.ErrNoRows {
			return nil, slipway.Errorf(slipway.ENOTFOUND, "Build %d not found.", id)
		}
		return nil, interpretError(err)
	}
	return row.toBuild()
}

// FindBuilds implements slipway.BuildService.
func (s *BuildService) FindBuilds(ctx context.Context, f slipway.BuildFilter) ([]*slipway.Build, error) {
	where, args := []string{"TRUE"}, []any{}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Repo != "" {
		owner, name := slipway.SplitRepo(f.Repo)
		if owner == "" {
			return nil, slipway.Errorf(slipway.EINVALID, "repo must be owner/name, got %q.", f.Repo)
		}
		add("lower(r.owner) = lower($%d)", owner)
		add("lower(r.name) = lower($%d)", name)
	}
	if f.Ref != "" {
		ref := f.Ref
		// A build not resolved yet may still carry the short name it was
		// triggered with.
		if !strings.HasPrefix(ref, "refs/") {
			add("(b.ref IN ('refs/heads/' || $%[1]d, 'refs/tags/' || $%[1]d) OR (b.commit_sha = '' AND b.ref = $%[1]d))", ref)
		} else {
			add("(b.ref = $%[1]d OR (b.commit_sha = '' AND $%[1]d IN ('refs/heads/' || b.ref, 'refs/tags/' || b.ref)))", ref)
		}
	}
	if f.Commit != "" {
		add("b.commit_sha = lower($%d)", f.Commit)
	}
	if f.PullRequest > 0 {
		add("b.pull_request = $%d", f.PullRequest)
	}
	if f.State != "" {
		if !f.State.Valid() {
			return nil, slipway.Errorf(slipway.EINVALID, "Unknown build state %q.", f.State)
		}
		add("b.state = $%d", string(f.State))
	}
	if f.Before > 0 {
		add("b.id < $%d", f.Before)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	} else if limit > 500 {
		limit = 500
	}
	args = append(args, limit)
	query := fmt.Sprintf(`-- FindBuilds
SELECT %s FROM %s
WHERE %s ORDER BY b.id DESC LIMIT $%d`, buildColumns, buildFrom, strings.Join(where, " AND "), len(args))
	rows, err := s.db.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, unavailable(fmt.Errorf("finding builds: %w", err))
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[buildRow])
	if err != nil {
		return nil, unavailable(fmt.Errorf("finding builds: %w", err))
	}
	builds := make([]*slipway.Build, 0, len(list))
	for _, r := range list {
		b, err := r.toBuild()
		if err != nil {
			return nil, err
		}
		builds = append(builds, b)
	}
	return builds, nil
}

// logLine is the stored form of one log line; short keys keep chunks small.
type logLine struct {
	Time     time.Time `json:"t"`
	Platform string    `json:"p,omitempty"`
	Step     string    `json:"s,omitempty"`
	Text     string    `json:"m"`
}

// AppendLog implements slipway.BuildService. The chunk is tagged with the build's
// current attempt, so the log of a retried build shows each attempt in order.
// Its lines are numbered under the build row's lock, and readers are notified
// in the same transaction with a payload of "<build id> <last line>".
func (s *BuildService) AppendLog(ctx context.Context, buildID int64, lines []slipway.LogLine) error {
	if len(lines) == 0 {
		return nil
	}
	stored := make([]logLine, len(lines))
	for i, l := range lines {
		// Postgres text cannot hold NUL bytes.
		stored[i] = logLine{Time: l.Time.UTC(), Platform: l.Platform, Step: l.Step, Text: strings.ToValidUTF8(strings.ReplaceAll(l.Text, "\x00", ""), "\uFFFD")}
	}
	data, err := json.Marshal(stored)
	if err != nil {
		return fmt.Errorf("encoding log of build %d: %w", buildID, err)
	}
	platforms, steps := lastSteps(stored)
	err = pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		var (
			last    int64
			attempt int
		)
		err := tx.QueryRow(ctx, `-- AppendLog
WITH b AS (UPDATE builds SET log_lines = log_lines + $3 WHERE id = $1 RETURNING id, attempt, log_lines)
INSERT INTO build_log_chunks (build_id, attempt, lines, first_line, line_count)
SELECT id, attempt, $2, log_lines - $3 + 1, $3 FROM b RETURNING first_line + line_count - 1, attempt`,
			buildID, data, len(stored)).Scan(&last, &attempt)
		if err != nil {
			return err
		}
		// Live log readers hear of every chunk; the Now page only of a
		// platform's step that changed (the upsert returns no row otherwise).
		_, err = tx.Exec(ctx, `-- AppendLog: steps
WITH changed AS (
    INSERT INTO build_steps AS s (build_id, platform, step, attempt)
    SELECT $1::bigint, u.platform, u.step, $4 FROM unnest($5::text[], $6::text[]) AS u(platform, step)
    ON CONFLICT (build_id, platform) DO UPDATE SET step = EXCLUDED.step, attempt = EXCLUDED.attempt, updated_at = now()
    WHERE (s.step, s.attempt) IS DISTINCT FROM (EXCLUDED.step, EXCLUDED.attempt)
    RETURNING 1)
SELECT pg_notify($2, $3), CASE WHEN EXISTS (SELECT 1 FROM changed) THEN pg_notify($7, $1::bigint::text) END`,
			buildID, ChannelLogs, fmt.Sprintf("%d %d", buildID, last), attempt, platforms, steps, ChannelBuilds)
		return err
	})
	if err != nil {
		return fmt.Errorf("appending log of build %d: %w", buildID, interpretError(err))
	}
	return nil
}

// lastSteps returns, for each platform with a step in lines, its last step
// (cut to what build_steps holds), platforms in their first order.
func lastSteps(lines []logLine) (platforms, steps []string) {
	at := map[string]int{}
	for _, l := range lines {
		if l.Step == "" {
			continue
		}
		p := slipway.Truncate(l.Platform, 100)
		i, ok := at[p]
		if !ok {
			i = len(platforms)
			at[p] = i
			platforms = append(platforms, p)
			steps = append(steps, "")
		}
		steps[i] = slipway.Truncate(l.Step, 200)
	}
	return platforms, steps
}

// FindBuildSteps implements slipway.BuildService.
func (s *BuildService) FindBuildSteps(ctx context.Context, ids []int64) (map[int64][]slipway.PlatformStep, error) {
	out := map[int64][]slipway.PlatformStep{}
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := s.db.pool.Query(ctx, `-- FindBuildSteps: the current attempt's steps only
SELECT s.build_id, s.platform, s.step FROM build_steps s JOIN builds b ON b.id = s.build_id AND b.attempt = s.attempt
WHERE s.build_id = ANY($1) ORDER BY s.build_id, s.platform`, ids)
	if err != nil {
		return nil, fmt.Errorf("finding build steps: %w", unavailable(err))
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id int64
			ps slipway.PlatformStep
		)
		if err := rows.Scan(&id, &ps.Platform, &ps.Step); err != nil {
			return nil, fmt.Errorf("finding build steps: %w", unavailable(err))
		}
		out[id] = append(out[id], ps)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("finding build steps: %w", unavailable(err))
	}
	return out, nil
}

// WriteLog implements slipway.BuildService. Lines read "15:04:05 [platform] text".
func (s *BuildService) WriteLog(ctx context.Context, buildID int64, w io.Writer) error {
	rows, err := s.db.pool.Query(ctx, `-- WriteLog
SELECT attempt, lines FROM build_log_chunks WHERE build_id = $1 ORDER BY id`, buildID)
	if err != nil {
		return unavailable(fmt.Errorf("reading log of build %d: %w", buildID, err))
	}
	defer rows.Close()
	var sb strings.Builder
	attempt := 0
	for rows.Next() {
		var (
			a     int
			data  []byte
			lines []logLine
		)
		if err := rows.Scan(&a, &data); err != nil {
			return unavailable(fmt.Errorf("reading log of build %d: %w", buildID, err))
		}
		if err := json.Unmarshal(data, &lines); err != nil {
			return fmt.Errorf("decoding log of build %d: %w", buildID, err)
		}
		if a != attempt {
			if attempt != 0 {
				fmt.Fprintf(&sb, "\n")
			}
			fmt.Fprintf(&sb, "==> attempt %d\n", a)
			attempt = a
		}
		for _, l := range lines {
			sb.WriteString(l.Time.Format("15:04:05"))
			if l.Platform != "" {
				sb.WriteString(" [" + l.Platform + "]")
			}
			sb.WriteString(" " + l.Text + "\n")
		}
		if sb.Len() > 64<<10 {
			if _, err := io.WriteString(w, sb.String()); err != nil {
				return err
			}
			sb.Reset()
		}
	}
	if err := rows.Err(); err != nil {
		return unavailable(fmt.Errorf("reading log of build %d: %w", buildID, err))
	}
	_, err = io.WriteString(w, sb.String())
	return err
}
