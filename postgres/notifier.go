package postgres

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
)

// Notification is what a Notifier hands its subscribers.
type Notification struct {
	// Topic is the channel (one of the Channel constants).
	Topic string
	// Payload is the NOTIFY payload; empty when CatchUp is set.
	Payload string
	// CatchUp says notifications of Topic may have been missed: the
	// connection was (re)made and the LISTEN took effect only now. The
	// subscriber should read the tables again, as after any change.
	CatchUp bool
}

// Notifier holds one connection per process that LISTENs on the topics its
// subscribers ask for, and hands each notification to them. Modelled on
// River's notifier: topics are LISTENed while they have a subscriber and
// UNLISTENed after the last one leaves; when the connection fails it
// reconnects with backoff (250ms doubling to 10s), and once the LISTENs of
// the new connection took effect every subscriber gets a CatchUp
// notification, since what was sent meanwhile is lost.
//
// Listen and Unlisten are safe for concurrent use, before or while Run runs.
// Subscribers are called one at a time on Run's goroutine and must not block.
type Notifier struct {
	db     *DB
	logger zerolog.Logger

	mu        sync.Mutex
	subs      map[string]map[*Subscription]struct{}
	interrupt context.CancelFunc // ends the current wait, so Run sees new topics
}

// Subscription is one Listen; Unlisten ends it.
type Subscription struct {
	n     *Notifier
	topic string
	fn    func(Notification)
}

// NewNotifier returns a Notifier on db; call Run to connect.
func NewNotifier(db *DB, logger zerolog.Logger) *Notifier {
	return &Notifier{db: db, logger: logger.With().Str("component", "notifier").Logger(),
		subs: map[string]map[*Subscription]struct{}{}}
}

// Listen calls fn with every notification of topic and with every catch-up,
// until Unlisten. The subscriber reads the state it follows after Listen
// returns; a topic nobody listened on yet is LISTENed shortly after, and its
// subscribers get a catch-up once that took effect.
func (n *Notifier) Listen(topic string, fn func(Notification)) *Subscription {
	s := &Subscription{n: n, topic: topic, fn: fn}
	n.mu.Lock()
	set := n.subs[topic]
	isNew := set == nil
	if isNew {
		set = map[*Subscription]struct{}{}
		n.subs[topic] = set
	}
	set[s] = struct{}{}
	if isNew && n.interrupt != nil {
		n.interrupt()
	}
	n.mu.Unlock()
	return s
}

// Unlisten ends the subscription; fn is not called after it returns, except
// by a delivery already under way. Calling it twice is harmless.
func (s *Subscription) Unlisten() {
	n := s.n
	n.mu.Lock()
	defer n.mu.Unlock()
	set := n.subs[s.topic]
	if _, ok := set[s]; !ok {
		return
	}
	delete(set, s)
	if len(set) == 0 {
		delete(n.subs, s.topic)
		if n.interrupt != nil {
			n.interrupt()
		}
	}
}

// WatchBuilds implements slipway.BuildWatcher on ChannelBuilds and
// ChannelJobs (a new build is announced there only): onChange gets the build
// id of each notification, and 0 on a catch-up or a payload that names no
// build ("released", "rescued").
func (n *Notifier) WatchBuilds(onChange func(buildID int64)) (stop func()) {
	fn := func(m Notification) {
		idText, _, _ := strings.Cut(m.Payload, " ")
		id, err := strconv.ParseInt(idText, 10, 64)
		if m.CatchUp || err != nil {
			id = 0
		}
		onChange(id)
	}
	builds := n.Listen(ChannelBuilds, fn)
	jobs := n.Listen(ChannelJobs, fn)
	return func() { builds.Unlisten(); jobs.Unlisten() }
}

// Run listens until ctx ends, reconnecting with backoff; it returns nil then.
func (n *Notifier) Run(ctx context.Context) error {
	backoff := 250 * time.Millisecond
	for {
		err := n.runConn(ctx)
		if ctx.Err() != nil {
			return nil
		}
		n.logger.Warn().Err(err).Dur("retry_in", backoff).Msg("Notifier lost its connection")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// runConn serves one connection until it fails or ctx ends.
func (n *Notifier) runConn(ctx context.Context) error {
	pc, err := n.db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A hijacked connection leaves the pool for good, so a LISTEN never leaks
	// into another user's session.
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	listening := map[string]bool{}
	for {
		added, err := n.syncTopics(ctx, conn, listening)
		if err != nil {
			return err
		}
		// Anything sent on these topics before their LISTEN took effect was missed.
		for _, topic := range added {
			n.deliver(Notification{Topic: topic, CatchUp: true})
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		n.mu.Lock()
		n.interrupt = cancel
		changed := !n.inSyncLocked(listening)
		n.mu.Unlock()
		if changed {
			cancel() // topics changed while we synced them: sync again first
		}
		msg, err := conn.WaitForNotification(wctx)
		timedOut := errors.Is(wctx.Err(), context.DeadlineExceeded)
		interrupted := wctx.Err() != nil
		cancel()
		n.mu.Lock()
		n.interrupt = nil
		n.mu.Unlock()
		switch {
		case err == nil:
			n.deliver(Notification{Topic: msg.Channel, Payload: msg.Payload})
		case ctx.Err() != nil:
			return ctx.Err()
		case timedOut:
			// Idle: prove the connection still works.
			if err := conn.Ping(ctx); err != nil {
				return err
			}
		case interrupted:
			// Topics changed: sync them at the top of the loop.
		default:
			return err
		}
	}
}

// syncTopics LISTENs on each subscribed topic not listened yet and UNLISTENs
// the ones nobody wants any more; it returns the topics it added.
func (n *Notifier) syncTopics(ctx context.Context, conn *pgx.Conn, listening map[string]bool) ([]string, error) {
	n.mu.Lock()
	var add, drop []string
	for topic := range n.subs {
		if !listening[topic] {
			add = append(add, topic)
		}
	}
	for topic := range listening {
		if n.subs[topic] == nil {
			drop = append(drop, topic)
		}
	}
	n.mu.Unlock()
	var sql []string
	for _, t := range add {
		sql = append(sql, "LISTEN "+pgx.Identifier{t}.Sanitize())
	}
	for _, t := range drop {
		sql = append(sql, "UNLISTEN "+pgx.Identifier{t}.Sanitize())
	}
	if len(sql) == 0 {
		return nil, nil
	}
	if _, err := conn.Exec(ctx, strings.Join(sql, "; ")); err != nil {
		return nil, err
	}
	for _, t := range add {
		listening[t] = true
	}
	for _, t := range drop {
		delete(listening, t)
	}
	return add, nil
}

// inSyncLocked reports whether listening holds exactly the subscribed topics.
// The caller holds mu.
func (n *Notifier) inSyncLocked(listening map[string]bool) bool {
	if len(listening) != len(n.subs) {
		return false
	}
	for topic := range n.subs {
		if !listening[topic] {
			return false
		}
	}
	return true
}

// deliver calls every subscriber of m's topic.
func (n *Notifier) deliver(m Notification) {
	n.mu.Lock()
	fns := make([]func(Notification), 0, len(n.subs[m.Topic]))
	for s := range n.subs[m.Topic] {
		fns = append(fns, s.fn)
	}
	n.mu.Unlock()
	for _, fn := range fns {
		fn(m)
	}
}
