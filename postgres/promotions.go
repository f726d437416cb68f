package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway"
)

// PromotionService implements slipway.PromotionService.
type PromotionService struct {
	db *DB
}

var _ slipway.PromotionService = (*PromotionService)(nil)

// NewPromotionService returns a PromotionService over db.
func NewPromotionService(db *DB) *PromotionService { return &PromotionService{db: db} }

type promotionRow struct {
	ID             int64     `db:"id"`
	BuildID        int64     `db:"build_id"`
	Actor          string    `db:"actor"`
	Digest         string    `db:"digest"`
	Source         string    `db:"source"`
	Target         string    `db:"target"`
	TargetRepo     string    `db:"target_repo"`
	Tag            string    `db:"tag"`
	PreviousDigest string    `db:"previous_digest"`
	Forced         bool      `db:"forced"`
	Outcome        string    `db:"outcome"`
	Reason         string    `db:"reason"`
	CreatedAt      time.Time `db:"created_at"`
}

const promotionColumns = `id, build_id, actor, digest, source, target, target_repo, tag,
	previous_digest, forced, outcome, reason, created_at`

// CreatePromotions implements slipway.PromotionService: one multi-row insert in
// one statement, so an attempt's rows are all stored or none.
func (s *PromotionService) CreatePromotions(ctx context.Context, ps []*slipway.Promotion) error {
	if len(ps) == 0 {
		return nil
	}
	var (
		values []string
		args   []any
	)
	for _, p := range ps {
		n := len(args)
		values = append(values, fmt.Sprintf("($%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d)",
			n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9, n+10, n+11))
		args = append(args, p.BuildID, p.Actor, p.Digest, p.Source, p.Target, p.TargetRepo, p.Tag,
			p.PreviousDigest, p.Forced, string(p.Outcome), slipway.Truncate(p.Reason, 4096))
	}
	rows, err := s.db.pool.Query(ctx, `-- CreatePromotions
INSERT INTO promotions (build_id, actor, digest, source, target, target_repo, tag, previous_digest, forced, outcome, reason)
VALUES `+strings.Join(values, ",")+` RETURNING id, created_at`, args...)
	if err != nil {
		return fmt.Errorf("recording promotions of build %d: %w", ps[0].BuildID, interpretError(err))
	}
	defer rows.Close()
	for i := 0; rows.Next(); i++ {
		if err := rows.Scan(&ps[i].ID, &ps[i].CreatedAt); err != nil {
			return fmt.Errorf("recording promotions of build %d: %w", ps[0].BuildID, unavailable(err))
		}
		ps[i].CreatedAt = ps[i].CreatedAt.UTC()
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("recording promotions of build %d: %w", ps[0].BuildID, interpretError(err))
	}
	return nil
}

// FindPromotions implements slipway.PromotionService.
func (s *PromotionService) FindPromotions(ctx context.Context, f slipway.PromotionFilter) ([]*slipway.Promotion, error) {
	where, args := []string{"TRUE"}, []any{}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Repo != "" {
		// The full repository (registry/owner/name) or its owner/name ending.
		add("(target_repo = $%[1]d OR target_repo LIKE '%%/' || $%[1]d)", f.Repo)
	}
	if f.Tag != "" {
		add("tag = $%d", f.Tag)
	}
	if f.BuildID != 0 {
		add("build_id = $%d", f.BuildID)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	args = append(args, min(limit, 500))
	rows, err := s.db.pool.Query(ctx, fmt.Sprintf(`-- FindPromotions
SELECT %s FROM promotions WHERE %s ORDER BY id DESC LIMIT $%d`, promotionColumns, strings.Join(where, " AND "), len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("finding promotions: %w", unavailable(err))
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[promotionRow])
	if err != nil {
		return nil, fmt.Errorf("finding promotions: %w", unavailable(err))
	}
	out := make([]*slipway.Promotion, len(list))
	for i, r := range list {
		out[i] = &slipway.Promotion{ID: r.ID, BuildID: r.BuildID, Actor: r.Actor, Digest: r.Digest,
			Source: r.Source, Target: r.Target, TargetRepo: r.TargetRepo, Tag: r.Tag,
			PreviousDigest: r.PreviousDigest, Forced: r.Forced, Outcome: slipway.PromotionOutcome(r.Outcome),
			Reason: r.Reason, CreatedAt: r.CreatedAt.UTC()}
	}
	return out, nil
}

// LockTarget implements slipway.PromotionService with a PostgreSQL session
// advisory lock (pg_advisory_lock) keyed by a 64-bit hash of repo, held on
// one connection of the pool until unlock is called, so promotions to one
// repository are serialized across every server and worker process. Waiting
// ends with ctx (the error wraps ctx.Err()). unlock never fails: when the
// unlock statement does not go through, the connection is closed, which ends
// the lock too. Two repositories whose hashes collide merely wait for each
// other.
func (s *PromotionService) LockTarget(ctx context.Context, repo string) (unlock func(), err error) {
	conn, err := s.db.pool.Acquire(ctx)
	if err != nil {
		return nil, unavailable(fmt.Errorf("locking promotions to %s: %w", repo, err))
	}
	key := "slipway.promote:" + repo
	if _, err := conn.Exec(ctx, `-- LockTarget
		SELECT pg_advisory_lock(hashtextextended($1, 0))`, key); err != nil {
		// The wait may have been cut short mid-statement: do not hand the
		// connection back in an unknown state.
		_ = conn.Conn().Close(context.WithoutCancel(ctx))
		conn.Release()
		return nil, unavailable(fmt.Errorf("locking promotions to %s: %w", repo, err))
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `-- UnlockTarget
			SELECT pg_advisory_unlock(hashtextextended($1, 0))`, key); err != nil {
			_ = conn.Conn().Close(uctx)
		}
		conn.Release()
	}, nil
}
