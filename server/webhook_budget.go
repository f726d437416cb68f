package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/slipway-ci/slipway"
)

// DefaultWebhookMemory is Config.WebhookMemory when it is zero: room for two
// of the largest deliveries, or thousands of ordinary ones (a push is a few KB).
const DefaultWebhookMemory = 64 << 20

// Defaults of the limits on reading a webhook's body.
const (
	// defaultWebhookBudgetWait is how long a delivery waits for room in the
	// budget before it is answered 503. GitHub gives up on a delivery after 10
	// seconds, so waiting longer only holds the connection.
	defaultWebhookBudgetWait = 3 * time.Second
	// defaultWebhookReadTimeout bounds the time to receive a webhook's body,
	// from the end of its headers: a body that trickles in (one byte every few
	// seconds) would otherwise hold its share of the budget for as long as the
	// sender likes.
	defaultWebhookReadTimeout = 30 * time.Second
	// webhookRetryAfter is the Retry-After of a 503 for a full budget, seconds.
	webhookRetryAfter = 5
	// bodyChunk is the first buffer of a body of unknown length; it doubles.
	bodyChunk = 64 << 10
)

// bodyBudget bounds the bytes that webhook bodies hold at once, process-wide.
// A body is read whole before its signature can be checked, so without a bound
// anyone could make the server hold 25 MB per connection. Safe for concurrent use.
type bodyBudget struct {
	sem         *semaphore.Weighted
	wait        time.Duration
	readTimeout time.Duration
	onWait      func() // tests: called when a body must wait for room
}

func newBodyBudget(cfg Config) *bodyBudget {
	return &bodyBudget{sem: semaphore.NewWeighted(cfg.WebhookMemory),
		wait: cfg.webhookBudgetWait, readTimeout: cfg.webhookReadTimeout, onWait: cfg.webhookOnWait}
}

// errBudgetFull is what a delivery gets while the budget stays full.
var errBudgetFull = slipway.Errorf(slipway.EUNAVAILABLE,
	"Too many webhook deliveries are being received at once; send this one again in a few seconds (forges redeliver failed deliveries, or use the webhook's Redeliver button).")

// hold is the room one body holds in a bodyBudget.
type hold struct {
	b *bodyBudget
	n int64
}

// take adds n bytes of room, waiting at most b.wait for it.
func (h *hold) take(ctx context.Context, n int64) error {
	if n == 0 {
		return nil
	}
	if h.b.sem.TryAcquire(n) {
		h.n += n
		return nil
	}
	if h.b.onWait != nil {
		h.b.onWait()
	}
	ctx, cancel := context.WithTimeout(ctx, h.b.wait)
	defer cancel()
	if err := h.b.sem.Acquire(ctx, n); err != nil {
		return errBudgetFull
	}
	h.n += n
	return nil
}

// give returns n bytes of room.
func (h *hold) give(n int64) {
	h.b.sem.Release(n)
	h.n -= n
}

// release returns all the room held; it may be called more than once.
func (h *hold) release() {
	if h.n > 0 {
		h.give(h.n)
	}
}

// readBody reads the whole request body, at most limit bytes, holding its size
// in b until release is called (release is never nil and may be called more
// than once). A body whose Content-Length is known takes its room up front, so
// once reading starts it is not refused halfway; one of unknown length takes
// room as its buffer grows. The body must arrive within b.readTimeout.
//
// Errors: ETOOLARGE over limit (refused from Content-Length when the client
// sent one), EUNAVAILABLE (with a Retry-After header set on w) when the budget
// stays full for b.wait, EINVALID when the body does not arrive in time or the
// connection breaks.
func (b *bodyBudget) readBody(w http.ResponseWriter, r *http.Request, limit int64) (body []byte, release func(), err error) {
	h := &hold{b: b}
	body, err = b.read(w, r, limit, h)
	if err != nil {
		h.release()
		if errors.Is(err, errBudgetFull) {
			w.Header().Set("Retry-After", strconv.Itoa(webhookRetryAfter))
		}
		// Close the connection after the answer: net/http would otherwise
		// read what is left of the body first, at the sender's pace.
		w.Header().Set("Connection", "close")
		return nil, h.release, err
	}
	return body, h.release, nil
}

func (b *bodyBudget) read(w http.ResponseWriter, r *http.Request, limit int64, h *hold) ([]byte, error) {
	tooLarge := slipway.Errorf(slipway.ETOOLARGE, "The body is larger than %d bytes.", limit)
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	if r.ContentLength >= 0 {
		if err := h.take(r.Context(), r.ContentLength); err != nil {
			return nil, err
		}
	}
	// The deadline covers the body only (from the end of the wait). It is
	// lifted once the body is in, or the connection's watcher would cancel
	// the request's context while the handler still works on it; after an
	// error it stays, and the connection is closed.
	rc := http.NewResponseController(w)
	deadline := rc.SetReadDeadline(time.Now().Add(b.readTimeout)) == nil
	in := http.MaxBytesReader(w, r.Body, limit)
	var (
		body []byte
		err  error
	)
	if r.ContentLength >= 0 {
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(in, body)
	} else {
		body, err = readGrowing(r.Context(), in, limit, h)
	}
	var maxErr *http.MaxBytesError
	switch {
	case err == nil:
		if deadline {
			_ = rc.SetReadDeadline(time.Time{})
		}
		return body, nil
	case errors.Is(err, errBudgetFull):
		return nil, err
	case errors.As(err, &maxErr):
		return nil, tooLarge
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, slipway.Errorf(slipway.EINVALID, "The body did not arrive within %s; send it at once.", b.readTimeout)
	default:
		return nil, slipway.Errorf(slipway.EINVALID, "Reading the body: %v.", err)
	}
}

// readGrowing reads in to its end (at most limit bytes) into a buffer that
// doubles, holding room in h for the buffer's capacity; while it grows, the
// old and the new buffer are both held.
func readGrowing(ctx context.Context, in io.Reader, limit int64, h *hold) ([]byte, error) {
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) == limit {
				// Full: one more byte is MaxBytesReader's error, or EOF.
				var probe [1]byte
				n, err := io.ReadAtLeast(in, probe[:], 1)
				if err == io.EOF {
					return buf, nil
				}
				if n > 0 {
					err = &http.MaxBytesError{Limit: limit}
				}
				return nil, err
			}
			n := min(max(2*int64(cap(buf)), bodyChunk), limit)
			if err := h.take(ctx, n); err != nil {
				return nil, err
			}
			grown := make([]byte, len(buf), n)
			copy(grown, buf)
			h.give(int64(cap(buf)))
			buf = grown
		}
		n, err := in.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
