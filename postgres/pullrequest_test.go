package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// enqueuePR queues a build of pull request n of acme/app at commit.
func (b *testBundle) enqueuePR(t *testing.T, n int, commit string) int64 {
	t.Helper()
	tr := newTrigger(triggerOpts{Delivery: fmt.Sprintf("pr-%d-%d", n, time.Now().UnixNano()), Ref: slipway.PullRequestRef("github", n)})
	tr.Event, tr.Commit, tr.Name = "pull_request", commit, "app"
	tr.PullRequest = &slipway.PullRequest{Number: n, Title: "Faster", Author: "ada", URL: "https://github.com/acme/app/pull/1", Base: "main"}
	res, err := b.builds.EnqueueTrigger(context.Background(), tr, "reg/acme/app")
	require.NoError(t, err)
	require.True(t, res.Created)
	return res.Build.ID
}

func TestPullRequestBuilds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	main := b.enqueue(t, "app", "refs/heads/main")
	first := b.enqueuePR(t, 7, "1111111111111111111111111111111111111111")
	other := b.enqueuePR(t, 8, "3333333333333333333333333333333333333333")
	second := b.enqueuePR(t, 7, "2222222222222222222222222222222222222222")

	got := b.build(t, first)
	require.Equal(t, slipway.BuildCanceled, got.State, "a new commit supersedes the pull request's older build")
	require.Equal(t, fmt.Sprintf("superseded by build %d", second), got.Error)
	require.Equal(t, slipway.BuildQueued, b.build(t, other).State, "another pull request is untouched")
	require.Equal(t, slipway.BuildQueued, b.build(t, main).State, "the base branch is untouched")

	sec := b.build(t, second)
	require.Equal(t, "refs/pull/7/head", sec.Ref)
	require.Equal(t, &slipway.PullRequest{Number: 7, Title: "Faster", Author: "ada", URL: "https://github.com/acme/app/pull/1", Base: "main"}, sec.PullRequest)
	require.Nil(t, b.build(t, main).PullRequest)

	list, err := b.builds.FindBuilds(ctx, slipway.BuildFilter{PullRequest: 7})
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, []int64{second, first}, []int64{list[0].ID, list[1].ID})

	// Closing: the running build is asked to stop, a queued one ends at once.
	job := b.claimOne(t, "w") // the oldest queued: main
	require.Equal(t, main, job.BuildID)
	ids, err := b.builds.CancelRefBuilds(ctx, "github", "ACME", "APP", "refs/pull/7/head", "pull request 7 was closed")
	require.NoError(t, err)
	require.Equal(t, []int64{second}, ids)
	got = b.build(t, second)
	require.Equal(t, slipway.BuildCanceled, got.State)
	require.Equal(t, "pull request 7 was closed", got.Error)
	require.Equal(t, slipway.BuildQueued, b.build(t, other).State)

	job2 := b.claimOne(t, "w")
	require.Equal(t, other, job2.BuildID)
	ids, err = b.builds.CancelRefBuilds(ctx, "github", "acme", "app", "refs/pull/8/head", "pull request 8 was closed")
	require.NoError(t, err)
	require.Equal(t, []int64{other}, ids)
	hb, err := b.jobs.JobHeartbeat(ctx, []*slipway.Job{job2})
	require.NoError(t, err)
	require.Equal(t, "pull request 8 was closed", hb.Cancel[job2.ID], "the running build's worker learns to stop")

	ids, err = b.builds.CancelRefBuilds(ctx, "github", "nobody", "app", "refs/pull/8/head", "x")
	require.NoError(t, err)
	require.Empty(t, ids)
}
