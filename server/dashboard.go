package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/hlog"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/web"
)

// Cookie names of the dashboard. The session cookie holds the API token the
// reader signed in with: each request authenticates it again, so a deleted
// token ends its sessions, and any server replica can answer.
const (
	sessionCookie = "slipway_session"
	sessionMaxAge = 12 * time.Hour
)

// dashboard serves the server-rendered pages.
type dashboard struct {
	cfg        Config
	tmpl       *template.Template
	auth       *authenticator
	builds     slipway.BuildService
	svc        Services
	secureOnly bool // cookies get Secure: slipway is reached over TLS
	sameOrigin *http.CrossOriginProtection
	now        *nowHub      // the Now page's live body, one render per change for all viewers
	streams    *streamLimit // nil: no cap
}

func newDashboard(logger zerolog.Logger, cfg Config, auth *authenticator, builds slipway.BuildService, svc Services) *dashboard {
	tmpl, err := web.Templates(dashboardFuncs)
	if err != nil {
		// The templates are embedded at build time; a parse error is a bug that
		// every test run would catch.
		panic(err)
	}
	d := &dashboard{cfg: cfg, tmpl: tmpl, auth: auth, builds: builds, svc: svc,
		secureOnly: strings.HasPrefix(cfg.PublicURL, "https://")}
	d.sameOrigin = newSameOrigin(cfg.PublicURL)
	d.now = newNowHub(d.renderNowBody, cfg.Changes, logger)
	return d
}

// routes adds the dashboard's pages to r.
func (d *dashboard) routes(r chi.Router) {
	r.Group(func(r chi.Router) {
		// Errors on these routes are pages (writeError); a POST from another
		// site is refused before anything else, the session included.
		r.Use(withErrorPage(d.errorPage), d.form)
		static, _ := fs.Sub(web.FS, "static")
		r.Get("/static/*", http.StripPrefix("/static/", staticHandler(static)).ServeHTTP)
		r.Get("/signin", d.handleSignInForm)
		r.Post("/signin", d.handleSignIn)
		r.Post("/signout", d.handleSignOut)
		r.Group(func(r chi.Router) {
			r.Use(d.reader)
			r.With(timeout(requestTimeout)).Get("/", d.handleNow)
			r.With(d.streams.limit).Get("/events/now", d.handleNowEvents)
			r.With(timeout(requestTimeout)).Get("/builds/{id}", d.handleBuild)
			r.Get("/builds/{id}/log", d.handleBuildLog)
			r.With(timeout(requestTimeout)).Get("/repos", d.handleRepos)
			r.With(timeout(requestTimeout)).Get("/repos/*", d.handleRepo)
			r.With(timeout(requestTimeout)).Get("/builds", d.handleBuilds)
			r.With(d.need(slipway.RoleDeveloper), timeout(requestTimeout)).Post("/repos/*", d.handleBuildRef)
			r.With(d.need(slipway.RoleAdmin), timeout(requestTimeout)).Get("/tokens", d.handleTokens)
			r.With(d.need(slipway.RoleAdmin), timeout(requestTimeout)).Post("/tokens", d.handleTokenCreateForm)
			r.With(d.need(slipway.RoleAdmin), timeout(requestTimeout)).Post("/tokens/{id}/delete", d.handleTokenDeleteForm)
			r.With(timeout(requestTimeout)).Get("/promotions", d.handlePromotions)
			r.With(timeout(requestTimeout)).Get("/releases/*", d.handleReleases)
			r.With(d.need(slipway.RoleDeveloper), timeout(requestTimeout)).Post("/builds/{id}/cancel", d.handleCancel)
			r.With(d.need(slipway.RoleDeveloper), timeout(requestTimeout)).Post("/builds/{id}/approve", d.handleApprove)
			r.With(d.need(slipway.RoleDeveloper), timeout(requestTimeout)).Post("/builds/{id}/retry", d.handleRetry)
			// Promotion checks the role itself, so a refusal is audited as in the API.
			r.With(d.need(slipway.RoleViewer), timeout(requestTimeout)).Post("/builds/{id}/promote", d.handlePromote)
		})
	})
}

// staticHandler serves embedded assets with a day of caching.
func staticHandler(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=86400")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}

// reader lets a request through with a valid session, or without one when the
// dashboard is public; otherwise it sends the browser to the sign-in page.
func (d *dashboard) reader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := d.session(r)
		if err != nil && slipway.ErrorCode(err) != slipway.EUNAUTHORIZED {
			writeError(w, r, err)
			return
		}
		if err != nil && !d.cfg.DashboardPublic {
			if r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/events/") && !strings.HasSuffix(r.URL.Path, "/log") {
				http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(withPrincipal(r.Context(), p)))
	})
}

// need answers 403 (or 401 without a session) unless the reader's role allows role.
func (d *dashboard) need(role slipway.Role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := principalFrom(r.Context())
			if p.Name == "" {
				writeError(w, r, slipway.Errorf(slipway.EUNAUTHORIZED, "Sign in with a token that has the %s role.", role))
				return
			}
			if !p.Role.Allows(role) {
				writeError(w, r, slipway.Errorf(slipway.EFORBIDDEN,
					"This needs the %s role; token %q has the %s role.", role, p.Name, p.Role))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// session returns the principal of the request's session cookie, a random
// id the session store knows; EUNAUTHORIZED without a live session (none,
// expired, signed out, its token deleted, or the admin token changed since).
func (d *dashboard) session(r *http.Request) (principal, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" || d.svc.Sessions == nil {
		return principal{}, slipway.Errorf(slipway.EUNAUTHORIZED, "Sign in with an API token to see this page.")
	}
	s, err := d.svc.Sessions.FindSession(r.Context(), c.Value)
	ended := slipway.Errorf(slipway.EUNAUTHORIZED, "Your session has ended (signed out, expired, or its token was deleted); sign in again.")
	switch {
	case slipway.ErrorCode(err) == slipway.ENOTFOUND:
		return principal{}, ended
	case err != nil:
		return principal{}, err
	case s.Token != nil:
		return principal{Name: s.Token.Name, Role: s.Token.Role}, nil
	case d.auth.hasAdmin && subtle.ConstantTimeCompare(s.AdminSHA256, d.auth.adminSum[:]) == 1:
		return principal{Name: adminActor, Role: slipway.RoleAdmin}, nil
	}
	return principal{}, ended
}

// form guards every dashboard route's POSTs (GET, HEAD and OPTIONS pass):
// the browser must say the form comes from a page of this site
// (http.CrossOriginProtection: Sec-Fetch-Site, else Origin against Host or
// SLIPWAY_PUBLIC_URL), so another site cannot make a signed-in browser
// cancel, promote or create tokens; and a body is at most 64 KiB. Clients that send neither header (curl, the CLI) are no browser and
// carry no session cookie a third party could borrow.
func (d *dashboard) form(next http.Handler) http.Handler {
	guarded := d.sameOrigin.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		guarded.ServeHTTP(w, r)
	})
}

// newSameOrigin returns the cross-origin check of the dashboard's forms.
// publicURL's origin is trusted as well, for a proxy that rewrites Host; a
// refusal is a 403 error page (or JSON) saying what happened.
func newSameOrigin(publicURL string) *http.CrossOriginProtection {
	c := http.NewCrossOriginProtection()
	if u, err := url.Parse(publicURL); err == nil && u.Scheme != "" && u.Host != "" {
		// AddTrustedOrigin fails only on a malformed origin, which Parse has ruled out.
		_ = c.AddTrustedOrigin(u.Scheme + "://" + u.Host)
	}
	c.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, slipway.Errorf(slipway.EFORBIDDEN,
			"This form was sent from another site, so it was refused. Open the page on %s and send it from there.", siteOf(publicURL, r)))
	}))
	return c
}

// siteOf names the site a reader should use: the public URL, else the Host asked for.
func siteOf(publicURL string, r *http.Request) string {
	if publicURL != "" {
		return publicURL
	}
	return r.Host
}

// page is what every template gets.
type page struct {
	Title     string
	Nav       string // which menu entry is current
	Who       principal
	Public    bool
	PublicURL string
	Data      any
}

// can reports whether the reader's role allows role.
func (p page) Can(role string) bool { return p.Who.Role.Allows(slipway.Role(role)) }

// render executes the named template into a buffer, then answers with it.
func (d *dashboard) render(w http.ResponseWriter, r *http.Request, status int, name, title, nav string, data any) {
	pg := page{Title: title, Nav: nav, Who: principalFrom(r.Context()), Public: d.cfg.DashboardPublic, PublicURL: d.cfg.PublicURL, Data: data}
	var buf bytes.Buffer
	if err := d.tmpl.ExecuteTemplate(&buf, name, pg); err != nil {
		hlog.FromRequest(r).Error().Err(err).Str("template", name).Msg("Rendering a page")
		http.Error(w, "The page could not be rendered.", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// errorPage renders the error page, in the dashboard's look; writeError
// calls it on the dashboard's routes.
func (d *dashboard) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	d.render(w, r, status, "error.html", http.StatusText(status), "", struct {
		Status  int
		Message string
	}{status, msg})
}

// handleSignInForm shows the sign-in form.
func (d *dashboard) handleSignInForm(w http.ResponseWriter, r *http.Request) {
	d.render(w, r, http.StatusOK, "signin.html", "Sign in", "signin", struct{ Next, Error string }{safeNext(r.URL.Query().Get("next")), ""})
}

// handleSignIn checks the token and starts a session.
func (d *dashboard) handleSignIn(w http.ResponseWriter, r *http.Request) {
	token := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	p, tokenID, err := d.auth.identify(r.Context(), token, slipway.RoleViewer)
	if token == "" || err != nil {
		if err != nil && slipway.ErrorCode(err) != slipway.EUNAUTHORIZED {
			writeError(w, r, err)
			return
		}
		d.render(w, r, http.StatusUnauthorized, "signin.html", "Sign in", "signin",
			struct{ Next, Error string }{next, "That token is unknown or deleted. Ask an admin for one (`slipway token create`)."})
		return
	}
	if d.svc.Sessions == nil {
		writeError(w, r, unavailable("Signing in"))
		return
	}
	// The cookie is a random session id, never the token: signing out ends
	// it for good, and it is worth nothing on the API.
	id := newSessionID()
	var adminSum []byte
	if tokenID == nil {
		adminSum = d.auth.adminSum[:]
	}
	if err := d.svc.Sessions.CreateSession(r.Context(), id, tokenID, adminSum, time.Now().Add(sessionMaxAge)); err != nil {
		writeError(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true,
		Secure: d.secureOnly, SameSite: http.SameSiteLaxMode, MaxAge: int(sessionMaxAge / time.Second)})
	hlog.FromRequest(r).Info().Str("actor", p.Name).Msg("Signed in to the dashboard")
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// handleSignOut ends the session.
func (d *dashboard) handleSignOut(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" && d.svc.Sessions != nil {
		if err := d.svc.Sessions.DeleteSession(r.Context(), c.Value); err != nil {
			writeError(w, r, err)
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true,
		Secure: d.secureOnly, SameSite: http.SameSiteLaxMode, MaxAge: -1})
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

// safeNext keeps a redirect target on this site: a path that starts with one
// "/", holds no backslash, space or control character (browsers drop tabs and
// newlines from a URL, so "/\t/evil.example" would become "//evil.example")
// and is valid UTF-8, and that parses as a URL with neither scheme nor host.
// Anything else becomes "/".
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || !utf8.ValidString(next) {
		return "/"
	}
	for _, c := range next {
		if c == '\\' || unicode.IsSpace(c) || unicode.IsControl(c) {
			return "/"
		}
	}
	if u, err := url.Parse(next); err != nil || u.Scheme != "" || u.Host != "" {
		return "/"
	}
	return next
}

// handleCancel cancels a build and goes back to its page.
func (d *dashboard) handleCancel(w http.ResponseWriter, r *http.Request) {
	id, err := buildID(r)
	if err == nil {
		_, err = d.builds.CancelBuild(r.Context(), id, "canceled from the dashboard by "+principalFrom(r.Context()).Name)
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/builds/%d", id), http.StatusSeeOther)
}

// handleApprove lets a fork's pull-request build that waits for approval run.
func (d *dashboard) handleApprove(w http.ResponseWriter, r *http.Request) {
	id, err := buildID(r)
	if err == nil {
		_, err = d.builds.ApproveBuild(r.Context(), id, principalFrom(r.Context()).Name)
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	hlog.FromRequest(r).Info().Int64("build_id", id).Msg("Build approved")
	http.Redirect(w, r, fmt.Sprintf("/builds/%d", id), http.StatusSeeOther)
}

// handleRetry queues the build's commit again and opens the new build.
func (d *dashboard) handleRetry(w http.ResponseWriter, r *http.Request) {
	b, err := requestBuild(r, d.builds)
	if err != nil {
		writeError(w, r, err)
		return
	}
	t, err := retryTrigger(r, d.svc.Repos, b)
	if err != nil {
		writeError(w, r, err)
		return
	}
	res, err := d.builds.EnqueueTrigger(r.Context(), t, b.Image)
	if err != nil {
		writeError(w, r, err)
		return
	}
	hlog.FromRequest(r).Info().Int64("build_id", res.Build.ID).Str("repo", b.Repo).Msg("Build queued")
	http.Redirect(w, r, fmt.Sprintf("/builds/%d", res.Build.ID), http.StatusSeeOther)
}

// handleBuildLog streams a build's log for the build page (see streamBuildLog).
func (d *dashboard) handleBuildLog(w http.ResponseWriter, r *http.Request) {
	handleBuildLogs(d.builds, d.cfg.Logs, d.streams).ServeHTTP(w, r)
}

// withPrincipal stores p in ctx for principalFrom.
func withPrincipal(ctx context.Context, p principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// notFound answers browsers outside the API with the error page, and
// everything else with api.
func (d *dashboard) notFound(api http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") || !strings.Contains(r.Header.Get("Accept"), "text/html") {
			api(w, r)
			return
		}
		// The page is outside the signed-in routes: read the session here, so
		// a signed-in reader sees their name, not "Sign in".
		if p, err := d.session(r); err == nil {
			r = r.WithContext(withPrincipal(r.Context(), p))
		}
		writeError(w, r.WithContext(context.WithValue(r.Context(), errorPageKey{}, errorPage(d.errorPage))),
			slipway.Errorf(slipway.ENOTFOUND, "There is no page at %s.", r.URL.Path))
	}
}

// newSessionID returns a random dashboard session id: 32 random bytes in
// URL-safe base64.
func newSessionID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}
