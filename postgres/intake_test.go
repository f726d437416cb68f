package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// TestEnqueueTriggerID: the webhook's enqueue answers the build's id without
// reading the build back, and a redelivery's id is the first build's, for a
// repository registered on first sight (alone) and one found by id (the
// intake's batches).
func TestEnqueueTriggerID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	res, err := b.builds.EnqueueTriggerID(ctx, newTrigger(triggerOpts{Delivery: "id-1"}), "reg/acme/app")
	require.NoError(t, err)
	require.True(t, res.Created)
	require.Nil(t, res.Build, "the build is not read back")
	stored, err := b.builds.FindBuildByID(ctx, res.BuildID)
	require.NoError(t, err)
	require.Equal(t, "id-1", stored.DeliveryID)

	again, err := b.builds.EnqueueTriggerID(ctx, newTrigger(triggerOpts{Delivery: "id-1"}), "reg/acme/app")
	require.NoError(t, err)
	require.Equal(t, slipway.EnqueueResult{BuildID: res.BuildID}, again, "a redelivery names the first build, Created false")

	full, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "id-2"}), "reg/acme/app")
	require.NoError(t, err)
	require.Equal(t, full.Build.ID, full.BuildID)
	require.Greater(t, full.BuildID, res.BuildID)

	known := newTrigger(triggerOpts{Delivery: "id-3", Ref: "refs/heads/dev"})
	known.RepoID = stored.RepoID
	known.DefaultBranch = "trunk"
	res3, err := b.builds.EnqueueTriggerID(ctx, known, "ignored")
	require.NoError(t, err)
	require.True(t, res3.Created)
	got := b.build(t, res3.BuildID)
	require.Equal(t, "refs/heads/dev", got.Ref)
	require.Equal(t, stored.Image, got.Image, "the repository's image, not the one passed in")
	var branch string
	require.NoError(t, b.db.Pool().QueryRow(ctx, "SELECT default_branch FROM repos WHERE id = $1", stored.RepoID).Scan(&branch))
	require.Equal(t, "trunk", branch, "the payload's default branch is recorded")

	again3, err := b.builds.EnqueueTriggerID(ctx, known, "ignored")
	require.NoError(t, err)
	require.Equal(t, slipway.EnqueueResult{BuildID: res3.BuildID}, again3)

	gone := newTrigger(triggerOpts{Delivery: "id-4"})
	gone.RepoID = stored.RepoID + 1000
	_, err = b.builds.EnqueueTriggerID(ctx, gone, "ignored")
	require.Equal(t, slipway.ECONFLICT, slipway.ErrorCode(err), "%v", err)
	require.Equal(t, 0, countWhere(t, b, "webhook_deliveries", "delivery_id = 'id-4'"), "nothing is written")
}

// TestIntakeBatchesConcurrentDeliveries: deliveries that arrive together are
// committed in shared transactions, and each still gets what it would get
// alone: its own build, a redelivery the first build's id, a repository
// gone an ECONFLICT, neither failing another delivery, and of many pushes to one
// branch only the last stays queued, the others superseded.
func TestIntakeBatchesConcurrentDeliveries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	first, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "seed"}), "reg/acme/app")
	require.NoError(t, err)
	repoID := first.Build.RepoID

	const (
		branches = 150 // one push each
		hot      = 30  // pushes to one branch
		dups     = 10  // deliveries sent twice
		gone     = 3   // deliveries naming a repository id that is not there
	)
	type call struct {
		t   slipway.Trigger
		res slipway.EnqueueResult
		err error
	}
	var calls []*call
	add := func(delivery, ref string, id int64) {
		tr := newTrigger(triggerOpts{Delivery: delivery, Ref: ref})
		tr.RepoID = id
		calls = append(calls, &call{t: tr})
	}
	for i := range branches {
		add(fmt.Sprintf("branch-%d", i), fmt.Sprintf("refs/heads/b%d", i), repoID)
	}
	for i := range hot {
		add(fmt.Sprintf("hot-%d", i), "refs/heads/hot", repoID)
	}
	for i := range dups {
		add(fmt.Sprintf("dup-%d", i), fmt.Sprintf("refs/heads/d%d", i), repoID)
		add(fmt.Sprintf("dup-%d", i), fmt.Sprintf("refs/heads/d%d", i), repoID)
	}
	for i := range gone {
		add(fmt.Sprintf("gone-%d", i), fmt.Sprintf("refs/heads/g%d", i), repoID+1000)
	}

	run := func(calls []*call) {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, c := range calls {
			wg.Go(func() {
				<-start
				c.res, c.err = b.builds.EnqueueTriggerID(ctx, c.t, "ignored")
			})
		}
		close(start)
		wg.Wait()
	}
	// First the good deliveries alone: they go in shared transactions, and
	// the builds of one transaction have one created_at (now() is the
	// transaction's start).
	good := branches + hot/2
	run(calls[:good])
	var txs int
	require.NoError(t, b.db.Pool().QueryRow(ctx, "SELECT count(DISTINCT created_at) FROM builds WHERE id > $1", first.BuildID).Scan(&txs))
	t.Logf("%d deliveries in %d transactions", good, txs)
	require.Less(t, txs, good/3, "deliveries that arrive together share transactions")
	// Then the rest, the bad ones among them.
	run(calls[good:])

	byDelivery := map[string][]*call{}
	for _, c := range calls {
		byDelivery[c.t.DeliveryID] = append(byDelivery[c.t.DeliveryID], c)
		if c.t.RepoID != repoID {
			require.Equal(t, slipway.ECONFLICT, slipway.ErrorCode(c.err), "%s: %v", c.t.DeliveryID, c.err)
			continue
		}
		require.NoError(t, c.err, c.t.DeliveryID)
		require.NotZero(t, c.res.BuildID, c.t.DeliveryID)
		got := b.build(t, c.res.BuildID)
		require.Equal(t, c.t.DeliveryID, got.DeliveryID)
		require.Equal(t, c.t.Ref, got.Ref)
	}
	for i := range dups {
		pair := byDelivery[fmt.Sprintf("dup-%d", i)]
		require.Equal(t, pair[0].res.BuildID, pair[1].res.BuildID, "both deliveries of an id name one build")
		require.NotEqual(t, pair[0].res.Created, pair[1].res.Created, "exactly one of them created it")
	}
	require.Equal(t, 1+branches+hot+dups, count(t, b.db, "builds"))
	require.Equal(t, 1+branches+hot+dups, count(t, b.db, "webhook_deliveries"))
	require.Equal(t, 1+branches+hot+dups, count(t, b.db, "jobs"))
	require.Zero(t, countWhere(t, b, "webhook_deliveries", "delivery_id LIKE 'gone-%'"))
	// Redeliveries and repositories gone are skipped, not failed: no
	// transaction was rolled back, so no build id was drawn in vain.
	var span int
	require.NoError(t, b.db.Pool().QueryRow(ctx, "SELECT max(id) - min(id) + 1 FROM builds").Scan(&span))
	require.Equal(t, 1+branches+hot+dups, span, "build ids without gaps")

	// The pushes to one branch: the newest build is queued, every older one
	// was superseded by a newer one.
	rows, err := b.db.Pool().Query(ctx, `SELECT id, state, coalesce(error, '') FROM builds WHERE ref = 'refs/heads/hot' ORDER BY id`)
	require.NoError(t, err)
	type hotBuild struct {
		id           int64
		state, error string
	}
	var hots []hotBuild
	for rows.Next() {
		var h hotBuild
		require.NoError(t, rows.Scan(&h.id, &h.state, &h.error))
		hots = append(hots, h)
	}
	require.NoError(t, rows.Err())
	require.Len(t, hots, hot)
	for i, h := range hots[:hot-1] {
		require.Equal(t, "canceled", h.state, "build %d of %d", i+1, hot)
		var by int64
		_, err := fmt.Sscanf(h.error, "superseded by build %d", &by)
		require.NoError(t, err, h.error)
		require.Greater(t, by, h.id)
	}
	require.Equal(t, "queued", hots[hot-1].state)

}

func countWhere(t *testing.T, b *testBundle, table, where string) int {
	t.Helper()
	var n int
	require.NoError(t, b.db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+table+" WHERE "+where).Scan(&n))
	return n
}
