package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
)

const testKey = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

func newRepoService(t *testing.T, db *postgres.DB, key string) *postgres.RepoService {
	t.Helper()
	if key == "" {
		return postgres.NewRepoService(db, nil)
	}
	s, err := slipway.NewSealer(key)
	require.NoError(t, err)
	return postgres.NewRepoService(db, s)
}

func TestRepoService(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	create := slipway.RepoCreate{Forge: "gitea", Owner: "Acme", Name: "App", CloneURL: "https://gitea.example/acme/app.git",
		Image: "registry.test/acme/app", WebhookSecret: "own-secret"}

	t.Run("SecretSealedAndBoundToRow", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewDB(t)
		repos := newRepoService(t, db, testKey)
		a, err := repos.CreateRepo(ctx, create)
		require.NoError(t, err)
		require.True(t, a.HasWebhookSecret)
		require.Equal(t, 2, a.MaxRunning)
		require.True(t, a.Supersede)

		repo, secret, err := repos.FindRepoWebhookSecret(ctx, "gitea", "acme", "app")
		require.NoError(t, err)
		require.Equal(t, "own-secret", secret)
		require.Equal(t, a.ID, repo.ID)

		// A sealed value copied to another repository does not open there.
		b, err := repos.CreateRepo(ctx, slipway.RepoCreate{Forge: "gitea", Owner: "Acme", Name: "Other",
			CloneURL: "https://gitea.example/acme/other.git", Image: "registry.test/acme/other"})
		require.NoError(t, err)
		_, err = db.Pool().Exec(ctx, `UPDATE repos SET webhook_secret_enc = (SELECT webhook_secret_enc FROM repos WHERE id = $1) WHERE id = $2`, a.ID, b.ID)
		require.NoError(t, err)
		_, _, err = repos.FindRepoWebhookSecret(ctx, "gitea", "acme", "other")
		require.Error(t, err)
		require.NotContains(t, err.Error(), "own-secret")

		// Another key cannot open it either.
		other := newRepoService(t, db, "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
		_, _, err = other.FindRepoWebhookSecret(ctx, "gitea", "acme", "app")
		require.ErrorContains(t, err, "SLIPWAY_SECRET_KEY")
		// Without a key, the repository says why it cannot receive webhooks.
		_, _, err = newRepoService(t, db, "").FindRepoWebhookSecret(ctx, "gitea", "acme", "app")
		require.Equal(t, slipway.EUNAVAILABLE, slipway.ErrorCode(err))
	})
	t.Run("UnknownRepoHasNoSecret", func(t *testing.T) {
		t.Parallel()
		repos := newRepoService(t, pgtest.NewDB(t), testKey)
		repo, secret, err := repos.FindRepoWebhookSecret(ctx, "github", "nobody", "nothing")
		require.NoError(t, err)
		require.Nil(t, repo)
		require.Empty(t, secret)
	})
	t.Run("UpdateLeavesNilFields", func(t *testing.T) {
		t.Parallel()
		repos := newRepoService(t, pgtest.NewDB(t), testKey)
		_, err := repos.CreateRepo(ctx, create)
		require.NoError(t, err)
		branches := []string{"main"}
		n := 5
		r, err := repos.UpdateRepo(ctx, slipway.RepoKey{Owner: "ACME", Name: "app"}, slipway.RepoUpdate{AllowedBranches: &branches, MaxRunning: &n})
		require.NoError(t, err)
		require.Equal(t, []string{"main"}, r.AllowedBranches)
		require.Equal(t, 5, r.MaxRunning)
		require.Equal(t, "registry.test/acme/app", r.Image)
		require.True(t, r.HasWebhookSecret)
		empty := ""
		r, err = repos.UpdateRepo(ctx, slipway.RepoKey{Owner: "acme", Name: "app"}, slipway.RepoUpdate{WebhookSecret: &empty})
		require.NoError(t, err)
		require.False(t, r.HasWebhookSecret)
		_, err = repos.UpdateRepo(ctx, slipway.RepoKey{Owner: "acme", Name: "none"}, slipway.RepoUpdate{MaxRunning: &n})
		require.Equal(t, slipway.ENOTFOUND, slipway.ErrorCode(err))
		bad := 0
		_, err = repos.UpdateRepo(ctx, slipway.RepoKey{Owner: "acme", Name: "app"}, slipway.RepoUpdate{MaxRunning: &bad})
		require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err), "the CHECK constraint backs the API's validation")
	})
	t.Run("DeleteTakesBuilds", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewDB(t)
		repos := newRepoService(t, db, testKey)
		builds := postgres.NewBuildService(db)
		_, err := builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "d-1"}), "registry.test/acme/app")
		require.NoError(t, err)
		require.NoError(t, repos.DeleteRepo(ctx, slipway.RepoKey{Owner: "acme", Name: "app"}))
		for _, table := range []string{"repos", "builds", "jobs", "forge_statuses"} {
			require.Equal(t, 0, count(t, db, table), table)
		}
	})
}

// outboxStates returns the states queued in build id's commit-status outbox,
// oldest first.
func outboxStates(t *testing.T, b *testBundle, id int64) []string {
	t.Helper()
	rows, err := b.db.Pool().Query(context.Background(), `SELECT state FROM forge_statuses WHERE build_id = $1 ORDER BY id`, id)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// TestStatusOutbox checks that a build's state changes queue the statuses a
// forge sees, testing not among them. Each is written by the statement that
// changes the state (statusOutbox), so they commit together or not at all.
func TestStatusOutbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	res, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "d-1"}), "registry.test/acme/app")
	require.NoError(t, err)
	states := func() []string { return outboxStates(t, b, res.Build.ID) }
	require.Equal(t, []string{"queued"}, states())
	jobs, err := b.jobs.JobClaim(ctx, "w1", 1)
	require.NoError(t, err)
	inTests := slipway.BuildTesting
	require.NoError(t, b.jobs.JobUpdateBuild(ctx, jobs[0], slipway.BuildUpdate{State: &inTests}))
	succeeded := slipway.BuildSucceeded
	require.NoError(t, b.jobs.JobComplete(ctx, jobs[0], slipway.BuildUpdate{State: &succeeded}))
	require.Equal(t, []string{"queued", "running", "succeeded"}, states(), "testing is not sent")

}

// TestStatusOutboxEveryPath: a cancel, a superseding push, a rescued
// worker's build and a retry each queue the statuses a forge must see.
func TestStatusOutboxEveryPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("Cancel", func(t *testing.T) {
		b := setup(t)
		res, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "c-1"}), "registry.test/acme/app")
		require.NoError(t, err)
		_, err = b.builds.CancelBuild(ctx, res.Build.ID, "canceled by mona")
		require.NoError(t, err)
		require.Equal(t, []string{"queued", "canceled"}, outboxStates(t, b, res.Build.ID))
	})
	t.Run("Superseded", func(t *testing.T) {
		b := setup(t)
		first, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "s-1"}), "registry.test/acme/app")
		require.NoError(t, err)
		second, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "s-2"}), "registry.test/acme/app")
		require.NoError(t, err)
		require.Equal(t, []string{"queued", "canceled"}, outboxStates(t, b, first.Build.ID))
		require.Equal(t, []string{"queued"}, outboxStates(t, b, second.Build.ID))
	})
	t.Run("RescuedThenRetried", func(t *testing.T) {
		b := setup(t)
		res, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "r-1"}), "registry.test/acme/app")
		require.NoError(t, err)
		_, err = b.jobs.JobClaim(ctx, "w1", 1)
		require.NoError(t, err)
		b.exec(t, "UPDATE jobs SET heartbeat_at = now() - interval '1 hour' WHERE state = 'running'")
		n, err := b.jobs.JobRescueStuck(ctx, time.Minute, slipway.RetryPolicy{MaxAttempts: 3})
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.Equal(t, []string{"queued", "running", "queued"}, outboxStates(t, b, res.Build.ID))
		jobs, err := b.jobs.JobClaim(ctx, "w2", 1)
		require.NoError(t, err)
		require.Len(t, jobs, 1)
		// A second UpdateBuild to the same state queues nothing more.
		running := slipway.BuildRunning
		require.NoError(t, b.jobs.JobUpdateBuild(ctx, jobs[0], slipway.BuildUpdate{State: &running}))
		failed := slipway.BuildFailed
		require.NoError(t, b.jobs.JobComplete(ctx, jobs[0], slipway.BuildUpdate{State: &failed}))
		require.Equal(t, []string{"queued", "running", "queued", "running", "failed"}, outboxStates(t, b, res.Build.ID))
	})
}
