package postgres_test

import (
	"context"
	"io/fs"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/migrations"
	"github.com/slipway-ci/slipway/postgres"
)

// notes collects what a subscriber receives, on a channel the test reads.
func notes() (chan postgres.Notification, func(postgres.Notification)) {
	ch := make(chan postgres.Notification, 100)
	return ch, func(n postgres.Notification) { ch <- n }
}

func waitNote(t *testing.T, ch <-chan postgres.Notification, want postgres.Notification) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case got := <-ch:
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("no notification %+v", want)
		}
	}
}

func notify(t *testing.T, b *testBundle, topic, payload string) {
	t.Helper()
	_, err := b.db.Pool().Exec(context.Background(), `SELECT pg_notify($1, $2)`, topic, payload)
	require.NoError(t, err)
}

// startNotifier runs n until the test ends.
func startNotifier(t *testing.T, n *postgres.Notifier) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

func TestNotifier(t *testing.T) {
	t.Parallel()

	t.Run("CatchUpThenNotifications", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		n := postgres.NewNotifier(b.db, zerolog.Nop())
		builds, onBuilds := notes()
		logs, onLogs := notes()
		sb := n.Listen(postgres.ChannelBuilds, onBuilds)
		n.Listen(postgres.ChannelLogs, onLogs)
		startNotifier(t, n)
		// The first LISTEN tells every subscriber to read the tables.
		waitNote(t, builds, postgres.Notification{Topic: postgres.ChannelBuilds, CatchUp: true})
		waitNote(t, logs, postgres.Notification{Topic: postgres.ChannelLogs, CatchUp: true})
		notify(t, b, postgres.ChannelBuilds, "42")
		waitNote(t, builds, postgres.Notification{Topic: postgres.ChannelBuilds, Payload: "42"})
		// Each topic reaches its own subscribers only.
		notify(t, b, postgres.ChannelLogs, "42 7")
		waitNote(t, logs, postgres.Notification{Topic: postgres.ChannelLogs, Payload: "42 7"})
		require.Empty(t, builds)

		// After Unlisten nothing more arrives, and the topic is UNLISTENed.
		sb.Unlisten()
		sb.Unlisten() // harmless
		require.Eventually(t, func() bool { return !slices.Contains(listeningChannels(t, b), postgres.ChannelBuilds) },
			10*time.Second, 20*time.Millisecond)
		notify(t, b, postgres.ChannelBuilds, "43")
		notify(t, b, postgres.ChannelLogs, "43 1") // a marker: it comes after "43", if that came at all
		waitNote(t, logs, postgres.Notification{Topic: postgres.ChannelLogs, Payload: "43 1"})
		require.Empty(t, builds)
	})

	t.Run("TopicAddedWhileRunning", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		n := postgres.NewNotifier(b.db, zerolog.Nop())
		startNotifier(t, n)
		jobs, onJobs := notes()
		n.Listen(postgres.ChannelJobs, onJobs)
		// Its LISTEN takes effect shortly after: the catch-up says when.
		waitNote(t, jobs, postgres.Notification{Topic: postgres.ChannelJobs, CatchUp: true})
		notify(t, b, postgres.ChannelJobs, "released")
		waitNote(t, jobs, postgres.Notification{Topic: postgres.ChannelJobs, Payload: "released"})
		// A second subscriber of the same topic hears the same notifications.
		more, onMore := notes()
		n.Listen(postgres.ChannelJobs, onMore)
		notify(t, b, postgres.ChannelJobs, "7")
		waitNote(t, jobs, postgres.Notification{Topic: postgres.ChannelJobs, Payload: "7"})
		waitNote(t, more, postgres.Notification{Topic: postgres.ChannelJobs, Payload: "7"})
	})

	t.Run("ReconnectsAndCatchesUp", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		n := postgres.NewNotifier(b.db, zerolog.Nop())
		builds, onBuilds := notes()
		n.Listen(postgres.ChannelBuilds, onBuilds)
		startNotifier(t, n)
		waitNote(t, builds, postgres.Notification{Topic: postgres.ChannelBuilds, CatchUp: true})

		// Kill the listening backend, as a failover or an admin would.
		var killed int
		require.NoError(t, b.db.Pool().QueryRow(context.Background(), `
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN %'`).Scan(&killed))
		require.Equal(t, 1, killed, "one listening connection per notifier")
		// Sent while nobody listens: lost, which is what the catch-up is for.
		notify(t, b, postgres.ChannelBuilds, "lost")
		waitNote(t, builds, postgres.Notification{Topic: postgres.ChannelBuilds, CatchUp: true})
		notify(t, b, postgres.ChannelBuilds, "after")
		waitNote(t, builds, postgres.Notification{Topic: postgres.ChannelBuilds, Payload: "after"})
	})

	t.Run("WatchBuilds", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ids := watchBuilds(t, b)
		res, err := b.builds.EnqueueTrigger(context.Background(), newTrigger(triggerOpts{Delivery: "w1"}), "reg/acme/app")
		require.NoError(t, err)
		waitID(t, ids, res.Build.ID, "a new build")
	})
}

// watchBuilds runs a Notifier until the test ends and returns the build ids
// its WatchBuilds reports, after the catch-ups of its first LISTEN (a
// catch-up is build 0, one per topic).
func watchBuilds(t *testing.T, b *testBundle) <-chan int64 {
	t.Helper()
	n := postgres.NewNotifier(b.db, zerolog.Nop())
	ids := make(chan int64, 100)
	t.Cleanup(n.WatchBuilds(func(id int64) { ids <- id }))
	startNotifier(t, n)
	waitID(t, ids, 0, "a catch-up of slipway_builds")
	waitID(t, ids, 0, "a catch-up of slipway_jobs")
	return ids
}

func listeningChannels(t *testing.T, b *testBundle) []string {
	t.Helper()
	// pg_listening_channels is per session, so ask pg_stat_activity for the
	// notifier's last statement instead.
	var last string
	err := b.db.Pool().QueryRow(context.Background(), `
SELECT coalesce(string_agg(query, ';'), '') FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ~ '^(UN)?LISTEN '`).Scan(&last)
	require.NoError(t, err)
	var out []string
	for _, m := range regexp.MustCompile(`(?:^|; )LISTEN "([^"]+)"`).FindAllStringSubmatch(last, -1) {
		out = append(out, m[1])
	}
	if regexp.MustCompile(`UNLISTEN`).MatchString(last) {
		return nil // the last statement dropped a topic; good enough for "not listening"
	}
	return out
}

// TestChannelNamesOfMigrations checks that every channel a migration
// notifies on is one of the Go constants, so the names live in one place.
func TestChannelNamesOfMigrations(t *testing.T) {
	t.Parallel()
	notifyRe := regexp.MustCompile(`pg_notify\(\s*'([^']*)'`)
	seen := map[string]bool{}
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		sql, err := fs.ReadFile(migrations.FS, path)
		if err != nil {
			return err
		}
		for _, m := range notifyRe.FindAllSubmatch(sql, -1) {
			name := string(m[1])
			require.Contains(t, postgres.Channels, name, "%s notifies on %q, which is not a postgres.Channel constant", path, name)
			seen[name] = true
		}
		return nil
	})
	require.NoError(t, err)
	// The check must have found the trigger of migration 00006.
	require.True(t, seen[postgres.ChannelLogs], "no migration notifies on %s", postgres.ChannelLogs)
}

func TestBuildSteps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	ids := watchBuilds(t, b)
	res, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "s1"}), "reg/acme/app")
	require.NoError(t, err)
	id := res.Build.ID
	waitID(t, ids, id, "a new build")
	_, err = b.db.Pool().Exec(ctx, `UPDATE builds SET attempt = 1 WHERE id = $1`, id)
	require.NoError(t, err)
	now := time.Now()
	line := func(platform, step string) slipway.LogLine {
		return slipway.LogLine{Time: now, Platform: platform, Step: step, Text: "x"}
	}
	steps := func() []slipway.PlatformStep {
		t.Helper()
		got, err := b.builds.FindBuildSteps(ctx, []int64{id, 999999})
		require.NoError(t, err)
		require.NotContains(t, got, int64(999999))
		return got[id]
	}
	require.Empty(t, steps())

	require.NoError(t, b.builds.AppendLog(ctx, id, []slipway.LogLine{line("", "checkout"), line("linux/arm64", "build"),
		line("linux/amd64", "build"), line("linux/arm64", "test:unit"), {Time: now, Text: "no step"}}))
	require.Equal(t, []slipway.PlatformStep{{Platform: "", Step: "checkout"}, {Platform: "linux/amd64", Step: "build"},
		{Platform: "linux/arm64", Step: "test:unit"}}, steps())
	waitID(t, ids, id, "a step changed")

	// Lines of the steps the build is at already: stored, but the Now page
	// hears nothing (the log readers do).
	require.NoError(t, b.builds.AppendLog(ctx, id, []slipway.LogLine{line("linux/amd64", "build"), line("linux/arm64", "test:unit")}))
	other, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "s2", Ref: "refs/heads/other"}), "reg/acme/app")
	require.NoError(t, err)
	waitID(t, ids, other.Build.ID, "the next notification after unchanged steps")

	// A new attempt shows none of the last one's steps until it logs its own.
	_, err = b.db.Pool().Exec(ctx, `UPDATE builds SET attempt = 2 WHERE id = $1`, id)
	require.NoError(t, err)
	require.Empty(t, steps())
	require.NoError(t, b.builds.AppendLog(ctx, id, []slipway.LogLine{line("linux/amd64", "build")}))
	require.Equal(t, []slipway.PlatformStep{{Platform: "linux/amd64", Step: "build"}}, steps())
	waitID(t, ids, id, "the same step in a new attempt")
}

func waitID(t *testing.T, ch <-chan int64, want int64, what string) {
	t.Helper()
	select {
	case got := <-ch:
		require.Equal(t, want, got, what)
	case <-time.After(10 * time.Second):
		t.Fatalf("no notification: %s", what)
	}
}
