package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/postgres"
)

// TestEnqueuePlanLooksUpJobsByBuild: the supersede step of webhook intake
// (sqlEnqueue) finds the older builds of the new build's ref, then each
// one's job by its build_id. The plan of a plain join, made while the queue
// was short and kept by the prepared statement, scanned every active job of
// the queue instead (jobs_repo_active), so each delivery got slower with
// every build waiting: slipbench's 6,000 deliveries ran at about 500 a
// second, and at about 1,450 with the lookup per build. Nor may the older
// builds be found by a scan of the repository's history (builds_repo_id),
// as the lookup by a branch's short name was; nor may a trigger's repository
// or earlier delivery be found by a scan (a hashed subplan over every
// delivery received made each batch slower than the one before).
func TestEnqueuePlanLooksUpJobsByBuild(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for i := range 3 {
		b.enqueue(t, "app", fmt.Sprintf("refs/heads/b%d", i))
	}

	// The generic plan is made while the queue is short, as on a fresh
	// installation, and kept (a prepared statement keeps it until the
	// tables are analyzed again) while 2,000 deliveries of other branches
	// wait, and the repository's finished builds of main grow.
	explain := "EXPLAIN EXECUTE enqueue (" + strings.Repeat("'{}', ", 19) + "'a', 'b')"
	conn, err := b.db.Pool().Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	for _, q := range []string{"SET plan_cache_mode = force_generic_plan",
		"PREPARE enqueue AS " + postgres.SQLEnqueue,
		explain} {
		_, err = conn.Exec(ctx, q)
		require.NoError(t, err, q)
	}
	defer conn.Exec(ctx, "DEALLOCATE enqueue; RESET plan_cache_mode") //nolint:errcheck
	b.exec(t, `INSERT INTO builds (repo_id, ref, commit_sha, clone_url, image)
SELECT repo_id, 'refs/heads/burst' || i, commit_sha, clone_url, image FROM builds, generate_series(1, 700) i`)
	b.exec(t, `INSERT INTO jobs (build_id, repo_id) SELECT b.id, b.repo_id FROM builds b WHERE NOT EXISTS (SELECT FROM jobs j WHERE j.build_id = b.id)`)
	b.exec(t, `INSERT INTO builds (repo_id, ref, commit_sha, clone_url, image, state, finished_at)
SELECT repo_id, 'refs/heads/main', commit_sha, clone_url, image, 'succeeded', now() FROM builds, generate_series(1, 3) i`)

	rows, err := conn.Query(ctx, explain)
	require.NoError(t, err)
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	text := strings.Join(plan, "\n")
	// Each trigger's repository and earlier delivery are index lookups,
	// never scans of every repository or every delivery received.
	nb := planSection(t, text, "CTE nb", "CTE delivery")
	require.NotContains(t, nb, "Seq Scan", "the plan scans a table for each batch:\n%s", text)
	require.NotContains(t, nb, "hashed SubPlan", "the plan hashes every delivery received:\n%s", text)
	require.Contains(t, nb, "Index Scan using repos_forge_owner_name", text)
	require.Contains(t, nb, "using webhook_deliveries_pkey", text)

	older := planSection(t, text, "CTE older", "CTE stopped")
	require.NotContains(t, older, "builds_repo_id", "the plan scans the repository's history:\n%s", text)
	require.NotContains(t, older, "jobs_repo_active", "the plan scans the active jobs:\n%s", text)
	require.Regexp(t, `(?s)Subquery Scan on j\b.*Limit.*on jobs`, older, "each older build's job is a lookup of its own:\n%s", text)
}

// planSection is the part of an EXPLAIN text from the line naming from to
// the one naming to: one CTE's plan.
func planSection(t *testing.T, text, from, to string) string {
	t.Helper()
	_, after, ok := strings.Cut(text, from)
	require.True(t, ok, "no %s in the plan:\n%s", from, text)
	section, _, ok := strings.Cut(after, to)
	require.True(t, ok, "no %s after %s in the plan:\n%s", to, from, text)
	return section
}
