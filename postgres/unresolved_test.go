package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
)

// TestUnresolvedBuild: a build queued through the API without a commit
// (issue 12: the server runs no git) keeps its short ref and commit "" until
// the worker records what it resolved; the record lands only over an empty
// commit, the subject only over an empty message or the old placeholder; no
// commit status goes out before the commit is known, and none for a build
// that ended unresolved; the schema keeps an unresolved build from testing or
// succeeding.
func TestUnresolvedBuild(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	outbox := postgres.NewStatusOutbox(b.db)
	tr := newTrigger(triggerOpts{Delivery: "api-1", Ref: "main"})
	tr.Commit, tr.Message, tr.Event = "", "", "api"
	res, err := b.builds.EnqueueTrigger(ctx, tr, "reg/acme/app")
	require.NoError(t, err)
	require.Equal(t, "", res.Build.Commit)
	require.Equal(t, "main", res.Build.Ref)

	claimStatuses := func() []*slipway.StatusEvent {
		t.Helper()
		events, err := outbox.StatusClaim(ctx, 10, time.Minute)
		require.NoError(t, err)
		return events
	}
	require.Empty(t, claimStatuses(), "no commit yet: the queued status waits")

	// A full ref is needed once the commit is known, and a 40-hex commit.
	job := b.claimOne(t, "w1")
	require.NotNil(t, job)
	bad := "main"
	commit := strings.Repeat("ab", 20)
	require.Error(t, b.jobs.JobUpdateBuild(ctx, job, slipway.BuildUpdate{Ref: &bad, Commit: &commit}))
	short := "abc"
	full := "refs/heads/main"
	require.Error(t, b.jobs.JobUpdateBuild(ctx, job, slipway.BuildUpdate{Ref: &full, Commit: &short}))
	inTests := slipway.BuildTesting
	require.Error(t, b.jobs.JobUpdateBuild(ctx, job, slipway.BuildUpdate{State: &inTests}), "an unresolved build never tests")

	require.NoError(t, b.jobs.JobUpdateBuild(ctx, job, slipway.BuildUpdate{Ref: &full, Commit: &commit}))
	got := b.build(t, res.Build.ID)
	require.Equal(t, full, got.Ref)
	require.Equal(t, commit, got.Commit)
	other, otherRef := strings.Repeat("cd", 20), "refs/heads/evil"
	require.NoError(t, b.jobs.JobUpdateBuild(ctx, job, slipway.BuildUpdate{Ref: &otherRef, Commit: &other}))
	got = b.build(t, res.Build.ID)
	require.Equal(t, commit, got.Commit, "a known commit is never replaced")
	require.Equal(t, full, got.Ref)

	subject, later := "Add the login page", "something else"
	require.NoError(t, b.jobs.JobUpdateBuild(ctx, job, slipway.BuildUpdate{Message: &subject}))
	require.NoError(t, b.jobs.JobUpdateBuild(ctx, job, slipway.BuildUpdate{Message: &later}))
	require.Equal(t, subject, b.build(t, res.Build.ID).Message, "only an empty message is filled")

	events := claimStatuses()
	require.Len(t, events, 1, "once resolved, the newest status goes out")
	require.Equal(t, slipway.BuildRunning, events[0].State)
	require.Equal(t, commit, events[0].Commit)

	// A push's message is the forge's: the worker's subject never replaces it.
	push, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "push-1", Ref: "refs/tags/v1"}), "reg/acme/app")
	require.NoError(t, err)
	pushJob := b.claimOne(t, "w1")
	require.Equal(t, push.Build.ID, pushJob.BuildID)
	require.NoError(t, b.jobs.JobUpdateBuild(ctx, pushJob, slipway.BuildUpdate{Message: &subject}))
	require.Equal(t, "fix it", b.build(t, push.Build.ID).Message)
	canceled, why := slipway.BuildCanceled, "done with it"
	require.NoError(t, b.jobs.JobComplete(ctx, pushJob, slipway.BuildUpdate{State: &canceled, Error: &why}))

	// A build that ends unresolved (a ref the repository lacks) gets no
	// status: there is no commit to put it on.
	tr = newTrigger(triggerOpts{Delivery: "api-2", Ref: "no-such-branch"})
	tr.Commit = ""
	gone, err := b.builds.EnqueueTrigger(ctx, tr, "reg/acme/app")
	require.NoError(t, err)
	goneJob := b.claimOne(t, "w1")
	require.Equal(t, gone.Build.ID, goneJob.BuildID)
	failed, msg := slipway.BuildFailed, `the repository has no branch or tag "no-such-branch"`
	require.NoError(t, b.jobs.JobComplete(ctx, goneJob, slipway.BuildUpdate{State: &failed, Error: &msg}))
	for _, e := range claimStatuses() {
		require.NotEqual(t, gone.Build.ID, e.BuildID, "no status for a build without a commit")
	}
	var outcomes []string
	rows, err := b.db.Pool().Query(ctx, `SELECT outcome FROM forge_statuses WHERE build_id = $1 ORDER BY id`, gone.Build.ID)
	require.NoError(t, err)
	for rows.Next() {
		var o string
		require.NoError(t, rows.Scan(&o))
		outcomes = append(outcomes, o)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"superseded", "superseded", "skipped"}, outcomes)
	require.Equal(t, "", b.build(t, gone.Build.ID).Commit)
}

// TestSupersedeUnresolved: a push of a branch supersedes an older API build
// of that branch still waiting, by its short name, for the worker.
func TestSupersedeUnresolved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	tr := newTrigger(triggerOpts{Delivery: "api-1", Ref: "main"})
	tr.Commit = ""
	api, err := b.builds.EnqueueTrigger(ctx, tr, "reg/acme/app")
	require.NoError(t, err)
	tr = newTrigger(triggerOpts{Delivery: "api-2", Ref: "v1"})
	tr.Commit = ""
	tag, err := b.builds.EnqueueTrigger(ctx, tr, "reg/acme/app")
	require.NoError(t, err)
	b.enqueue(t, "App", "refs/heads/main")
	require.Equal(t, slipway.BuildCanceled, b.build(t, api.Build.ID).State)
	require.Equal(t, slipway.BuildQueued, b.build(t, tag.Build.ID).State, "another ref is not touched")

	list, err := b.builds.FindBuilds(ctx, slipway.BuildFilter{Repo: "acme/app", Ref: "v1"})
	require.NoError(t, err)
	require.Len(t, list, 1, "a short-ref filter finds the unresolved build")
	require.Equal(t, tag.Build.ID, list[0].ID)
	list, err = b.builds.FindBuilds(ctx, slipway.BuildFilter{Repo: "acme/app", Ref: "refs/tags/v1"})
	require.NoError(t, err)
	require.Len(t, list, 1)
}
