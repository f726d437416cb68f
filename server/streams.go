package server

import (
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/slipway-ci/slipway"
)

// DefaultMaxLogFollowers is Config.MaxLogFollowers when it is zero.
const DefaultMaxLogFollowers = 500

// streamsRetryAfter is the Retry-After, in seconds, of a stream refused for
// the cap.
const streamsRetryAfter = 10

// streamLimit caps the live streams (log follows, the Now page's events) one
// server process holds open at once: each holds a connection, a goroutine and
// a LISTEN subscription or a polling loop for as long as the client likes.
// Safe for concurrent use; a nil *streamLimit limits nothing.
type streamLimit struct {
	max  int64
	open atomic.Int64
}

func newStreamLimit(max int) *streamLimit { return &streamLimit{max: int64(max)} }

// enter counts one more open stream and returns the function that ends it, or
// answers w with 503 (and Retry-After) and returns ok false when max streams
// are open already.
func (l *streamLimit) enter(w http.ResponseWriter, r *http.Request) (leave func(), ok bool) {
	if l == nil {
		return func() {}, true
	}
	if l.open.Add(1) > l.max {
		l.open.Add(-1)
		w.Header().Set("Retry-After", strconv.Itoa(streamsRetryAfter))
		writeError(w, r, slipway.Errorf(slipway.EUNAVAILABLE,
			"This server already streams %d live logs and pages, its limit (SLIPWAY_MAX_LOG_FOLLOWERS); try again in a minute, or fetch the log once without follow=1.", l.max))
		return nil, false
	}
	return func() { l.open.Add(-1) }, true
}

// limit is enter as middleware, for routes that always stream.
func (l *streamLimit) limit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leave, ok := l.enter(w, r)
		if !ok {
			return
		}
		defer leave()
		next.ServeHTTP(w, r)
	})
}
