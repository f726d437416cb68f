package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/hlog"
	"github.com/slipway-ci/slipway"
)

// logClientIP adds the client IP found by chi's ClientIPFrom* middleware to the
// request's logger under key.
func logClientIP(key string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ip := middleware.GetClientIP(r.Context()); ip != "" {
				hlog.FromRequest(r).UpdateContext(func(c zerolog.Context) zerolog.Context {
					return c.Str(key, ip)
				})
			}
			next.ServeHTTP(w, r)
		})
	}
}

// logAccess writes the access log line of a request. Probes that pass log at
// debug level: a kubelet asks every few seconds.
func logAccess(r *http.Request, status, size int, d time.Duration) {
	l := hlog.FromRequest(r)
	var e *zerolog.Event
	switch {
	case status >= 500:
		e = l.Warn()
	case status < 400 && (r.URL.Path == "/healthz" || r.URL.Path == "/readyz"):
		e = l.Debug()
	default:
		e = l.Info()
	}
	e.Str("method", r.Method).
		Str("path", r.URL.Path).
		Int("status", status).
		Int("size", size).
		Dur("duration", d).
		Msg("Request")
}

// recoverer turns a panic in a handler into a logged 500. http.ErrAbortHandler
// passes through: it is how a handler aborts a response it already started.
func recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			hlog.FromRequest(r).Error().
				Interface("panic", v).
				Bytes("stack", debug.Stack()).
				Msg("Handler panicked")
			// If the handler had started its answer this status is dropped
			// (net/http logs a superfluous WriteHeader) and the body is cut short.
			writeJSON(w, r, http.StatusInternalServerError, errorResponse{Error: errorBody{
				Code: slipway.EINTERNAL, Message: slipway.ErrorMessage(errors.New("panic")),
			}})
		}()
		next.ServeHTTP(w, r)
	})
}

// timeout gives the request context a deadline. Unlike chi's Timeout it writes
// nothing itself: a handler whose store call ran out of time answers through
// writeError, so no second status line is attempted.
func timeout(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), d)
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// requireAdmin lets a request through only with "Authorization: Bearer <token>".
// The comparison is constant-time over SHA-256 digests, so neither the token's
// bytes nor its length leak through timing. An empty token locks the API (503)
// instead of opening it.
func requireAdmin(token string) func(http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if token == "" {
				writeError(w, r, slipway.Errorf(slipway.EUNAVAILABLE, "The API is disabled: SLIPWAY_ADMIN_TOKEN is unset."))
				return
			}
			got, ok := bearerToken(r)
			sum := sha256.Sum256([]byte(got))
			if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="slipway"`)
				writeError(w, r, slipway.Errorf(slipway.EUNAUTHORIZED, "A valid bearer token is required: Authorization: Bearer <token>."))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// bearerToken returns the token of an "Authorization: Bearer <token>" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
