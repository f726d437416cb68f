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

// adminActor names the bootstrap admin (SLIPWAY_ADMIN_TOKEN) in audit rows. It
// cannot be the name of a stored token, which may not start with "$".
const adminActor = "$SLIPWAY_ADMIN_TOKEN"

// principal is who sent a request: the name and role of its token.
type principal struct {
	Name string
	Role slipway.Role
}

type principalKey struct{}

// principalFrom returns the principal authenticate stored in ctx.
func principalFrom(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// authenticator checks bearer tokens: the bootstrap admin token of the
// configuration, then the stored tokens.
type authenticator struct {
	adminSum [32]byte
	hasAdmin bool
	tokens   slipway.TokenService // nil: only the admin token works
}

func newAuthenticator(adminToken string, tokens slipway.TokenService) *authenticator {
	return &authenticator{adminSum: sha256.Sum256([]byte(adminToken)), hasAdmin: adminToken != "", tokens: tokens}
}

// require lets a request through only with "Authorization: Bearer <token>" of
// a token whose role allows need: 401 without a token or with an unknown one,
// 403 when the role is too low; both messages name the role needed. The admin
// token is compared in constant time over SHA-256 digests, so neither its bytes
// nor its length leak through timing; stored tokens are looked up by their
// SHA-256. With neither an admin token nor a token store the API is locked (503).
func (a *authenticator) require(need slipway.Role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !a.hasAdmin && a.tokens == nil {
				writeError(w, r, slipway.Errorf(slipway.EUNAVAILABLE, "The API is disabled: SLIPWAY_ADMIN_TOKEN is unset."))
				return
			}
			p, err := a.authenticate(r, need)
			if err != nil {
				if slipway.ErrorCode(err) == slipway.EUNAUTHORIZED {
					w.Header().Set("WWW-Authenticate", `Bearer realm="slipway"`)
				}
				writeError(w, r, err)
				return
			}
			if !p.Role.Allows(need) {
				writeError(w, r, slipway.Errorf(slipway.EFORBIDDEN,
					"This needs the %s role; token %q has the %s role.", need, p.Name, p.Role))
				return
			}
			hlog.FromRequest(r).UpdateContext(func(c zerolog.Context) zerolog.Context {
				return c.Str("actor", p.Name)
			})
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
		})
	}
}

func (a *authenticator) authenticate(r *http.Request, need slipway.Role) (principal, error) {
	missing := slipway.Errorf(slipway.EUNAUTHORIZED,
		"This needs a token with the %s role or higher: Authorization: Bearer <token> (`slipway token create` makes one).", need)
	got, ok := bearerToken(r)
	if !ok {
		return principal{}, missing
	}
	return a.authenticateToken(r.Context(), got, need)
}

// authenticateToken finds the principal of an API token, from a bearer header
// or a dashboard session.
func (a *authenticator) authenticateToken(ctx context.Context, got string, need slipway.Role) (principal, error) {
	p, _, err := a.identify(ctx, got, need)
	return p, err
}

// identify is authenticateToken that also tells which token it was: the
// stored token's id, or nil for the bootstrap admin token.
func (a *authenticator) identify(ctx context.Context, got string, need slipway.Role) (principal, *int64, error) {
	missing := slipway.Errorf(slipway.EUNAUTHORIZED,
		"This needs a token with the %s role or higher (`slipway token create` makes one).", need)
	sum := sha256.Sum256([]byte(got))
	if a.hasAdmin && subtle.ConstantTimeCompare(sum[:], a.adminSum[:]) == 1 {
		return principal{Name: adminActor, Role: slipway.RoleAdmin}, nil, nil
	}
	if a.tokens == nil {
		return principal{}, nil, missing
	}
	t, err := a.tokens.AuthenticateToken(ctx, got)
	if slipway.ErrorCode(err) == slipway.ENOTFOUND {
		return principal{}, nil, slipway.Errorf(slipway.EUNAUTHORIZED,
			"Unknown or deleted token; this needs a token with the %s role or higher (`slipway token create` makes one).", need)
	} else if err != nil {
		return principal{}, nil, err
	}
	return principal{Name: t.Name, Role: t.Role}, &t.ID, nil
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
