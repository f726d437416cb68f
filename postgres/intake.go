package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/slipway-ci/slipway"
)

// Intake batching (issue 11, Speed). Most of a delivery's cost in
// PostgreSQL is fixed per statement and per transaction: executor start-up,
// plan-cache checks, initplans, foreign-key checks, commit. The intake
// spreads it over the deliveries that arrive while earlier ones are being
// committed: they go to PostgreSQL together, as one transaction of
// multi-row statements (enqueueTx). Nothing waits for a batch to fill: a
// delivery that finds no batch in flight goes at once, alone when it is
// alone, so an idle server answers as fast as before, and a busy one sends
// larger batches.
const (
	// intakeBatches is how many batches may be in flight at once, each on a
	// connection of its own. One: the next batch gathers while the one in
	// flight executes and waits for its WAL flush, and so grows with the
	// load. On 2 cores slipbench measured 3,039 and 3,218 deliveries/s with
	// one, 2,527 and 2,530 with two, 1,886 and 1,678 with four (make bench;
	// durable commits): parallel batches only share the same CPUs, and make
	// each batch smaller.
	intakeBatches = 1
	// intakeBatchMax is the most deliveries in one batch.
	intakeBatchMax = 64
	// intakeTimeout bounds one batch's transaction.
	intakeTimeout = time.Minute
)

// intake gathers the deliveries of EnqueueTriggerID into batches. Its
// goroutines run only while deliveries wait: none is left when the queue is
// empty.
type intake struct {
	mu      sync.Mutex
	queue   []*intakeCall
	busy    map[string]bool // the keys of the calls in flight (intakeCall.keys)
	running int             // batches in flight, each on a goroutine of drain
}

// intakeKeys are the keys no two calls in flight may share: t's ref (as
// sqlRefLock locks it) and its delivery id (unique per forge).
func intakeKeys(t slipway.Trigger) [2]string {
	return [2]string{"ref " + enqueueLockKey(t), "delivery " + t.Forge + " " + t.DeliveryID}
}

// intakeCall is one delivery waiting in the intake.
type intakeCall struct {
	enqueueCall
	keys [2]string         // its ref lock key and delivery id
	done chan intakeAnswer // buffered: drain never blocks on it
}

type intakeAnswer struct {
	id  int64
	err error
}

// enqueue queues t and waits for its batch. It returns the new build's id
// (0: sqlEnqueue skipped t, a redelivery or its repository gone), the error
// of t's own transaction (see send), or ctx's error when ctx ended first. A
// delivery that left while its batch was in flight may still be committed,
// as a delivery whose client left during the COMMIT is.
func (in *intake) enqueue(ctx context.Context, s *BuildService, t slipway.Trigger, image string) (int64, error) {
	c := &intakeCall{
		enqueueCall: enqueueCall{t: t, image: image},
		keys:        intakeKeys(t),
		done:        make(chan intakeAnswer, 1),
	}
	in.mu.Lock()
	in.queue = append(in.queue, c)
	if in.running < intakeBatches {
		in.running++
		go in.drain(s.db)
	}
	in.mu.Unlock()
	select {
	case a := <-c.done:
		return a.id, a.err
	case <-ctx.Done():
		in.mu.Lock()
		for i, q := range in.queue {
			if q == c {
				in.queue = append(in.queue[:i], in.queue[i+1:]...)
				break
			}
		}
		in.mu.Unlock()
		return 0, ctx.Err()
	}
}

// drain sends batches until no call it may take is waiting.
func (in *intake) drain(db *DB) {
	for {
		in.mu.Lock()
		batch := in.take()
		if len(batch) == 0 {
			in.running--
			in.mu.Unlock()
			return
		}
		in.mu.Unlock()

		in.send(db, batch)

		in.mu.Lock()
		for _, c := range batch {
			delete(in.busy, c.keys[0])
			delete(in.busy, c.keys[1])
		}
		in.mu.Unlock()
	}
}

// send commits batch in one transaction and answers its calls. When that
// fails it sends each half of the batch the same way, so an error (a
// delivery id another server is committing at the same time, a value a
// column refuses, a deadlock) reaches only the call it belongs to, and the
// others are still committed together: one bad call among n costs about
// 2·log₂ n transactions more. (A redelivery or a repository deleted
// meanwhile fails nothing: sqlEnqueue skips it.) An error no call can cause
// (PostgreSQL or the network down) answers every call of the batch at once.
// A call of a batch that failed leaves no row behind: the transaction is
// rolled back whole.
func (in *intake) send(db *DB, batch []*intakeCall) {
	calls := make([]enqueueCall, len(batch))
	for i, c := range batch {
		calls[i] = c.enqueueCall
	}
	ctx, cancel := context.WithTimeout(context.Background(), intakeTimeout)
	ids, err := enqueueTx(ctx, db, calls)
	cancel()
	switch {
	case err == nil:
		for i, c := range batch {
			c.done <- intakeAnswer{id: ids[i]}
		}
	case len(batch) == 1 || !ownError(err):
		for _, c := range batch {
			c.done <- intakeAnswer{err: err}
		}
	default:
		in.send(db, batch[:len(batch)/2])
		in.send(db, batch[len(batch)/2:])
	}
}

// take removes from the queue, oldest first, the calls of the next batch:
// at most intakeBatchMax, no two with the same ref or delivery id, none
// with the ref or delivery id of a call in flight, and marks their keys in
// flight. A call left behind keeps its place, and no later call of its ref
// or delivery id overtakes it, so the pushes of one ref are committed in the
// order they came. The caller holds mu.
func (in *intake) take() []*intakeCall {
	if in.busy == nil {
		in.busy = map[string]bool{}
	}
	var batch []*intakeCall
	seen := map[string]bool{}
	rest := in.queue[:0]
	for _, c := range in.queue {
		k0, k1 := c.keys[0], c.keys[1]
		blocked := len(batch) == intakeBatchMax || in.busy[k0] || in.busy[k1] || seen[k0] || seen[k1]
		seen[k0], seen[k1] = true, true
		if blocked {
			rest = append(rest, c)
			continue
		}
		batch = append(batch, c)
	}
	for _, c := range batch {
		in.busy[c.keys[0]], in.busy[c.keys[1]] = true, true
	}
	clear(in.queue[len(rest):])
	in.queue = rest
	return batch
}

// ownError reports whether err may be caused by one call of a batch: a
// value PostgreSQL refuses (class 22), a constraint it breaks (class 23: a
// delivery id another server is committing at the same time), or a
// transaction rolled back for a deadlock or a serialization failure (class
// 40), which a smaller batch may avoid.
func ownError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return strings.HasPrefix(pgErr.Code, "22") || strings.HasPrefix(pgErr.Code, "23") || strings.HasPrefix(pgErr.Code, "40")
}
