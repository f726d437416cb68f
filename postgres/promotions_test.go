package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
)

// TestLockTarget: the lock per promotion target holds across two pools of
// one database, as across two server processes; another target is free;
// unlock frees it; a wait ends with its context.
func TestLockTarget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db1, url := pgtest.NewDBURL(t)
	db2, err := postgres.Open(ctx, url)
	require.NoError(t, err)
	t.Cleanup(db2.Close)
	a, b := postgres.NewPromotionService(db1), postgres.NewPromotionService(db2)

	unlock, err := a.LockTarget(ctx, "registry.test/acme/app")
	require.NoError(t, err)

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = b.LockTarget(short, "registry.test/acme/app")
	cancel()
	require.Error(t, err, "the other process waits while the lock is held")
	require.ErrorIs(t, err, context.DeadlineExceeded)

	other, err := b.LockTarget(ctx, "registry.test/acme/other")
	require.NoError(t, err, "another target is not held")
	other()

	got := make(chan error, 1)
	go func() {
		u, err := b.LockTarget(ctx, "registry.test/acme/app")
		if err == nil {
			u()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("took a held lock: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	unlock()
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not get the lock after unlock")
	}
	// The waiter gave the connection back without leaking the lock.
	again, err := a.LockTarget(ctx, "registry.test/acme/app")
	require.NoError(t, err)
	again()
}
