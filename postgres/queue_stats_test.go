package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestJobStats(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	s, err := b.db.JobStats(ctx)
	require.NoError(t, err)
	require.Zero(t, s.Available)
	require.Zero(t, s.Running)
	require.Zero(t, s.OldestAvailable, "no job waits, so nothing is old")

	for i := range 3 {
		// Three branches: pushes to one branch would supersede each other.
		_, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: fmt.Sprint(i), Ref: fmt.Sprintf("refs/heads/b%d", i)}), "reg/acme/app")
		require.NoError(t, err)
	}
	// Age the first job so the oldest wait is known without waiting.
	_, err = b.db.Pool().Exec(ctx, `UPDATE jobs SET created_at = now() - interval '90 seconds' WHERE id = (SELECT min(id) FROM jobs)`)
	require.NoError(t, err)
	claimed, err := b.jobs.JobClaim(ctx, "w1", 1)
	require.NoError(t, err)
	require.Len(t, claimed, 1)

	s, err = b.db.JobStats(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, s.Available)
	require.Equal(t, 1, s.Running)
	// The claimed (oldest) job no longer waits: the oldest wait is the newer ones'.
	require.Less(t, s.OldestAvailable, 60*time.Second)

	_, err = b.db.Pool().Exec(ctx, `UPDATE jobs SET created_at = now() - interval '90 seconds' WHERE state = 'available'`)
	require.NoError(t, err)
	s, err = b.db.JobStats(ctx)
	require.NoError(t, err)
	require.InDelta(t, 90, s.OldestAvailable.Seconds(), 5)
}
