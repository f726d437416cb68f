package forge

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
)

type senderBundle struct {
	db     *postgres.DB
	builds *postgres.BuildService
	jobs   *postgres.JobQueue
	sender *Sender
	forge  *fakeForge
}

func setupSender(t *testing.T, clients func(f *fakeForge) map[string]Client) *senderBundle {
	t.Helper()
	db := pgtest.NewDB(t)
	f := newFakeForge(t)
	logger := zerolog.New(zerolog.NewTestWriter(t))
	s := NewSender(logger, SenderConfig{
		Clients: clients(f), PublicURL: "http://slipway.test",
		MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxAttempts: 3,
	}, postgres.NewStatusOutbox(db))
	return &senderBundle{db: db, builds: postgres.NewBuildService(db), jobs: postgres.NewJobQueue(db, logger), sender: s, forge: f}
}

func githubClients(f *fakeForge) map[string]Client {
	return map[string]Client{slipway.ForgeGitHub: &GitHub{BaseURL: f.URL, Token: testToken}}
}

func (b *senderBundle) enqueue(t *testing.T, delivery string) *slipway.Build {
	t.Helper()
	res, err := b.builds.EnqueueTrigger(context.Background(), slipway.Trigger{
		Forge: "github", DeliveryID: delivery, Event: "push", Owner: "Codertocat", Name: "Hello-World",
		CloneURL: "https://github.com/Codertocat/Hello-World.git", Ref: "refs/heads/main", Commit: testCommit,
	}, "registry.test/codertocat/hello-world")
	require.NoError(t, err)
	return res.Build
}

// sendUntil calls SendDue until the build's latest status has outcome, a
// bounded number of times (retries are due after a millisecond).
func (b *senderBundle) sendUntil(t *testing.T, buildID int64, outcome slipway.StatusOutcome) *slipway.ForgeStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := b.sender.SendDue(context.Background())
		require.NoError(t, err)
		build, err := b.builds.FindBuildByID(context.Background(), buildID)
		require.NoError(t, err)
		if build.ForgeStatus != nil && build.ForgeStatus.Outcome == outcome {
			return build.ForgeStatus
		}
		require.True(t, time.Now().Before(deadline), "status never became %s: %+v", outcome, build.ForgeStatus)
		time.Sleep(5 * time.Millisecond) // polling the database, a separate process
	}
}

func TestSender(t *testing.T) {
	t.Parallel()

	t.Run("QueuedThenRunningSentInOrder", func(t *testing.T) {
		t.Parallel()
		b := setupSender(t, githubClients)
		build := b.enqueue(t, "d-1")
		require.Equal(t, slipway.StatusPending, build.ForgeStatus.Outcome, "the status is queued with the build, in its transaction")
		st := b.sendUntil(t, build.ID, slipway.StatusSent)
		require.Equal(t, slipway.BuildQueued, st.State)

		jobs, err := b.jobs.JobClaim(context.Background(), "w1", 1)
		require.NoError(t, err)
		require.Len(t, jobs, 1)
		st = b.sendUntil(t, build.ID, slipway.StatusSent)
		require.Equal(t, slipway.BuildRunning, st.State)

		reqs := b.forge.recorded()
		require.Len(t, reqs, 2)
		require.Equal(t, "/repos/Codertocat/Hello-World/statuses/"+testCommit, reqs[0].Path)
		require.Equal(t, "pending", reqs[0].Body["state"])
		require.Equal(t, "Build 1 is queued", reqs[0].Body["description"])
		require.Equal(t, "Build 1 is running", reqs[1].Body["description"])
		require.Equal(t, "http://slipway.test/builds/1", reqs[1].Body["target_url"])
	})
	t.Run("OlderPendingStateIsSuperseded", func(t *testing.T) {
		t.Parallel()
		b := setupSender(t, githubClients)
		build := b.enqueue(t, "d-1")
		jobs, err := b.jobs.JobClaim(context.Background(), "w1", 1)
		require.NoError(t, err)
		failed := slipway.BuildFailed
		msg := "build failed: no Dockerfile"
		require.NoError(t, b.jobs.JobComplete(context.Background(), jobs[0], slipway.BuildUpdate{State: &failed, Error: &msg}))
		st := b.sendUntil(t, build.ID, slipway.StatusSent)
		require.Equal(t, slipway.BuildFailed, st.State)
		reqs := b.forge.recorded()
		require.Len(t, reqs, 1, "only the latest state goes out")
		require.Equal(t, "failure", reqs[0].Body["state"])
		require.Equal(t, "Build 1 failed: build failed: no Dockerfile", reqs[0].Body["description"])
		var superseded int
		require.NoError(t, b.db.Pool().QueryRow(context.Background(),
			"SELECT count(*) FROM forge_statuses WHERE outcome = 'superseded'").Scan(&superseded))
		require.Equal(t, 2, superseded)
	})
	t.Run("ForgeDownIsRetriedAndVisible", func(t *testing.T) {
		t.Parallel()
		b := setupSender(t, githubClients)
		b.forge.setStatus(http.StatusBadGateway)
		build := b.enqueue(t, "d-1")
		_, err := b.sender.SendDue(context.Background())
		require.NoError(t, err)
		got, err := b.builds.FindBuildByID(context.Background(), build.ID)
		require.NoError(t, err)
		require.Equal(t, slipway.BuildQueued, got.State, "the build does not care")
		require.Equal(t, slipway.StatusPending, got.ForgeStatus.Outcome)
		require.Equal(t, 1, got.ForgeStatus.Attempts)
		require.Contains(t, got.ForgeStatus.Error, "GitHub answered 502")

		// The build goes on while the forge is down.
		jobs, err := b.jobs.JobClaim(context.Background(), "w1", 1)
		require.NoError(t, err)
		require.Len(t, jobs, 1)

		b.forge.setStatus(0)
		st := b.sendUntil(t, build.ID, slipway.StatusSent)
		require.Equal(t, slipway.BuildRunning, st.State)
		require.Empty(t, st.Error)
	})
	t.Run("GivesUpAfterMaxAttempts", func(t *testing.T) {
		t.Parallel()
		b := setupSender(t, githubClients)
		b.forge.setStatus(http.StatusUnauthorized)
		build := b.enqueue(t, "d-1")
		st := b.sendUntil(t, build.ID, slipway.StatusFailed)
		require.Equal(t, 3, st.Attempts)
		require.Contains(t, st.Error, "gave up after 3 attempts: GitHub answered 401")
		require.Len(t, b.forge.recorded(), 3)
	})
	t.Run("NoTokenSkips", func(t *testing.T) {
		t.Parallel()
		b := setupSender(t, func(*fakeForge) map[string]Client { return nil })
		build := b.enqueue(t, "d-1")
		st := b.sendUntil(t, build.ID, slipway.StatusSkipped)
		require.Contains(t, st.Error, "SLIPWAY_GITHUB_TOKEN")
		require.Empty(t, b.forge.recorded())
	})
	t.Run("WakesOnNotifier", func(t *testing.T) {
		t.Parallel()
		b := setupSender(t, githubClients)
		logger := zerolog.New(zerolog.NewTestWriter(t))
		n := postgres.NewNotifier(b.db, logger)
		// An hour's poll: only a wake-up from the notifier sends in time.
		b.sender = NewSender(logger, SenderConfig{Clients: githubClients(b.forge), PublicURL: "http://slipway.test",
			PollInterval: time.Hour, Changes: n}, postgres.NewStatusOutbox(b.db))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		nDone, sDone := make(chan error, 1), make(chan error, 1)
		go func() { nDone <- n.Run(ctx) }()
		go func() { sDone <- b.sender.Run(ctx) }()
		build := b.enqueue(t, "d-1")
		b.waitOutcome(t, build.ID, slipway.StatusSent)
		// A state change (the claim) is sent at once too.
		jobs, err := b.jobs.JobClaim(context.Background(), "w1", 1)
		require.NoError(t, err)
		require.Len(t, jobs, 1)
		require.Eventually(t, func() bool {
			rec := b.forge.recorded()
			return len(rec) == 2 && strings.Contains(fmt.Sprint(rec[1].Body["description"]), "is running")
		}, 10*time.Second, 10*time.Millisecond, "%+v", b.forge.recorded())
		cancel()
		require.NoError(t, <-sDone)
		require.NoError(t, <-nDone)
	})
	t.Run("RunStopsWithContext", func(t *testing.T) {
		t.Parallel()
		b := setupSender(t, githubClients)
		build := b.enqueue(t, "d-1")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- b.sender.Run(ctx) }()
		b.waitOutcome(t, build.ID, slipway.StatusSent)
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	})
}

// waitOutcome polls the database until the build's status has outcome.
func (b *senderBundle) waitOutcome(t *testing.T, buildID int64, outcome slipway.StatusOutcome) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		build, err := b.builds.FindBuildByID(context.Background(), buildID)
		require.NoError(t, err)
		if build.ForgeStatus != nil && build.ForgeStatus.Outcome == outcome {
			return
		}
		require.True(t, time.Now().Before(deadline), "status never became %s", outcome)
		time.Sleep(10 * time.Millisecond) // polling the database, a separate process
	}
}
