package server

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-ci/slipway"
)

const (
	// nowRefresh is how often the Now page is rendered again without a change
	// being heard: with a BuildWatcher only for its relative times ("4m ago",
	// "starts in about"), without one it is the poll.
	nowRefresh = 15 * time.Second
	// nowPoll is the refresh without a BuildWatcher, as before there was one.
	nowPoll = 2 * time.Second
	// nowCoalesce is the least time between two renders: a burst of changes
	// (a build's platforms changing steps together, many builds at once)
	// becomes one render, so the page costs at most five queries a second
	// however busy the queue; a lone change is rendered at once.
	nowCoalesce = time.Second
)

// nowHub renders the body of the Now page once per change for all of its
// live viewers (GET /events/now), instead of once per viewer per tick: the
// database work per change does not grow with the number of viewers. It runs
// while it has subscribers: the first starts its goroutine, the last one
// leaving stops it and waits for it. Safe for concurrent use.
type nowHub struct {
	render  func(ctx context.Context) ([]byte, error) // the body, as the template writes it
	watcher slipway.BuildWatcher                      // nil: poll every nowPoll
	logger  zerolog.Logger

	renders atomic.Int64 // bodies rendered, for tests and the benchmark

	mu   sync.Mutex
	subs map[*nowSub]struct{}
	last []byte        // the body sent last; nil before the first render
	stop func()        // ends the running loop and waits for it; nil when stopped
	kick chan struct{} // a change was heard (capacity 1)
}

// nowSub is one viewer: it receives the newest body, older unread ones are
// replaced, so a slow viewer never holds the others up.
type nowSub struct {
	ch chan []byte // capacity 1
}

func newNowHub(render func(context.Context) ([]byte, error), watcher slipway.BuildWatcher, logger zerolog.Logger) *nowHub {
	return &nowHub{render: render, watcher: watcher, logger: logger, subs: map[*nowSub]struct{}{}, kick: make(chan struct{}, 1)}
}

// subscribe adds a viewer. Its channel receives the current body at once
// when there is one, then each changed body; leave ends it.
func (h *nowHub) subscribe() (bodies <-chan []byte, leave func()) {
	s := &nowSub{ch: make(chan []byte, 1)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	if h.last != nil {
		s.ch <- h.last
	}
	if h.stop == nil {
		h.start()
	}
	h.mu.Unlock()
	return s.ch, func() {
		h.mu.Lock()
		delete(h.subs, s)
		var stop func()
		if len(h.subs) == 0 && h.stop != nil {
			stop, h.stop = h.stop, nil
			h.last = nil // stale once nobody keeps it current
		}
		h.mu.Unlock()
		if stop != nil {
			stop()
		}
	}
}

// start runs the loop; the caller holds mu.
func (h *nowHub) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	unwatch := func() {}
	refresh := nowPoll
	if h.watcher != nil {
		unwatch = h.watcher.WatchBuilds(func(int64) { h.changed() })
		refresh = nowRefresh
	}
	go func() {
		defer close(done)
		h.loop(ctx, refresh)
	}()
	h.stop = func() {
		unwatch()
		cancel()
		<-done
	}
}

// changed tells the loop a build changed; it never blocks.
func (h *nowHub) changed() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// loop renders at once, then after each change (at most every nowCoalesce)
// and every refresh, until ctx ends.
func (h *nowHub) loop(ctx context.Context, refresh time.Duration) {
	ticker := time.NewTicker(refresh)
	defer ticker.Stop()
	failing := false
	for {
		began := time.Now()
		// Bounded like a page request, so a stuck database cannot keep the
		// last viewer's leave waiting for ever.
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		body, err := h.render(rctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				h.logger.Error().Err(err).Msg("Rendering the Now page for its live viewers")
			}
			failing = true
		default:
			failing = false
			h.renders.Add(1)
			h.publish(body)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-h.kick:
		}
		// Let a burst of changes settle into one render.
		if wait := nowCoalesce - time.Since(began); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		select {
		case <-h.kick: // heard during the wait: this render covers it
		default:
		}
	}
}

// publish hands body to every viewer when it differs from the last one.
func (h *nowHub) publish(body []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.last != nil && bytes.Equal(body, h.last) {
		return
	}
	h.last = body
	for s := range h.subs {
		select {
		case <-s.ch: // unread: replaced by the newer body
		default:
		}
		s.ch <- body
	}
}
