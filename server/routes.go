package server

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/hlog"
	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/metrics"
)

// requestTimeout bounds every route that answers from the database in one go.
// Log routes go without it: they will stream (see STYLE.md, HTTP with chi).
const requestTimeout = 60 * time.Second

// newRouter lists every route slipway serves.
func newRouter(logger zerolog.Logger, cfg Config, builds slipway.BuildService, checks []Check, svc Services) *chi.Mux {
	r := chi.NewRouter()
	r.Use(
		hlog.NewHandler(logger),
		hlog.RequestIDHandler("request_id", "X-Request-ID"),
		// The TCP peer is the client: slipway has no trusted-proxy setting yet, and
		// chi's RealIP would believe any X-Forwarded-For a client sends.
		middleware.ClientIPFromRemoteAddr,
		logClientIP("ip"),
		hlog.AccessHandler(logAccess),
		recoverer,
	)
	auth := newAuthenticator(cfg.AdminToken, svc.Tokens)
	streams := newStreamLimit(cfg.MaxLogFollowers) // one for the API and the dashboard
	dash := newDashboard(logger, cfg, auth, builds, svc)
	dash.streams = streams
	r.NotFound(dash.notFound(handleNotFound()))
	r.MethodNotAllowed(handleMethodNotAllowed(r))

	r.Get("/healthz", handleHealthz())
	r.Get("/readyz", handleReadyz(checks))
	r.Get("/metrics", metrics.Handler().ServeHTTP)

	// Only webhook routes are counted (and wrapped): a wrapped writer would hide
	// the Flusher that streaming routes need.
	countWebhooks := metrics.CountWebhooks(webhookForge)
	budget := newBodyBudget(cfg) // one for all forges
	for _, hook := range webhookHooks(cfg) {
		r.With(countWebhooks, timeout(requestTimeout)).Post("/webhooks/"+hook.Name(), handleWebhook(cfg, budget, hook, svc.Repos, builds))
	}

	dash.routes(r)

	r.Route("/api/v1", func(r chi.Router) {
		// The API description is public: it holds nothing a token protects, and
		// tools fetch it before they know about tokens.
		r.Get("/openapi.json", handleOpenAPI())
		viewer, developer, admin := auth.require(slipway.RoleViewer), auth.require(slipway.RoleDeveloper),
			auth.require(slipway.RoleAdmin)
		r.With(viewer, timeout(requestTimeout)).Get("/builds", handleBuildList(builds))
		r.With(viewer, timeout(requestTimeout)).Get("/builds/{id}", handleBuildView(builds))
		r.With(viewer, timeout(requestTimeout)).Get("/builds/{id}/test-cases", handleBuildTestCases(builds, svc.TestCases))
		r.With(viewer).Get("/builds/{id}/logs", handleBuildLogs(builds, cfg.Logs, streams))
		r.With(developer, timeout(requestTimeout)).Post("/repos/{owner}/{name}/builds", handleTrigger(cfg, builds, svc.Repos))
		r.With(developer, timeout(requestTimeout)).Post("/builds/{id}/retry", handleRetry(cfg, builds, svc.Repos))
		r.With(developer, timeout(requestTimeout)).Post("/builds/{id}/cancel", handleBuildCancel(builds))
		r.With(developer, timeout(requestTimeout)).Post("/builds/{id}/approve", handleBuildApprove(builds))
		// Promotion checks the release-manager role itself: a refusal for a
		// role too low is audited like every other refusal.
		r.With(viewer, timeout(requestTimeout)).Post("/builds/{id}/promote", handlePromote(builds, cfg, svc))
		r.With(viewer, timeout(requestTimeout)).Get("/promotions", handlePromotionList(svc.Promotions))
		r.With(viewer, timeout(requestTimeout)).Get("/releases/{owner}/{name}", handleReleaseList(svc.Releases))
		r.With(viewer, timeout(requestTimeout)).Get("/releases/{owner}/{name}/{version}", handleReleaseView(cfg, svc.Releases, builds))
		// The external test system authenticates with the build's one-time
		// callback token, not with an API token.
		r.With(timeout(requestTimeout)).Post("/builds/{id}/tests", handleIntegrationReport(svc.Integrations))
		r.With(admin, timeout(requestTimeout)).Post("/tokens", handleTokenCreate(svc.Tokens))
		r.With(admin, timeout(requestTimeout)).Get("/tokens", handleTokenList(svc.Tokens))
		r.With(admin, timeout(requestTimeout)).Delete("/tokens/{id}", handleTokenDelete(svc.Tokens))
		r.With(viewer, timeout(requestTimeout)).Get("/repos", handleRepoList(svc.Repos))
		r.With(viewer, timeout(requestTimeout)).Get("/repos/{owner}/{name}", handleRepoView(svc.Repos))
		r.With(admin, timeout(requestTimeout)).Post("/repos", handleRepoCreate(cfg, svc.Repos))
		r.With(admin, timeout(requestTimeout)).Patch("/repos/{owner}/{name}", handleRepoUpdate(cfg, svc.Repos))
		r.With(admin, timeout(requestTimeout)).Delete("/repos/{owner}/{name}", handleRepoDelete(svc.Repos))
		r.With(admin, timeout(requestTimeout)).Get("/repos/{owner}/{name}/secrets", handleSecretList(cfg.Secrets))
		r.With(admin, timeout(requestTimeout)).Put("/repos/{owner}/{name}/secrets/{secret}", handleSecretPut(cfg.Secrets))
		r.With(admin, timeout(requestTimeout)).Delete("/repos/{owner}/{name}/secrets/{secret}", handleSecretDelete(cfg.Secrets))
		r.With(admin, timeout(requestTimeout)).Put("/repos/{owner}/{name}/clone-token", handleCloneTokenPut(cfg.Secrets, cfg.Credentials))
		r.With(admin, timeout(requestTimeout)).Delete("/repos/{owner}/{name}/clone-token", handleCloneTokenDelete(cfg.Secrets, cfg.Credentials))
		r.With(admin, timeout(requestTimeout)).Put("/repos/{owner}/{name}/deploy-key", handleDeployKeyPut(cfg.Secrets, cfg.Credentials))
		r.With(admin, timeout(requestTimeout)).Delete("/repos/{owner}/{name}/deploy-key", handleDeployKeyDelete(cfg.Secrets, cfg.Credentials))
		r.With(admin, timeout(requestTimeout)).Get("/repos/{owner}/{name}/registry-auth", handleRegistryAuthList(cfg.Secrets, cfg.RegistryAuths))
		r.With(admin, timeout(requestTimeout)).Put("/repos/{owner}/{name}/registry-auth", handleRegistryAuthPut(cfg.Secrets, cfg.RegistryAuths))
		r.With(admin, timeout(requestTimeout)).Delete("/repos/{owner}/{name}/registry-auth/{registry}", handleRegistryAuthDelete(cfg.Secrets, cfg.RegistryAuths))
	})
	return r
}

// handleNotFound answers unknown paths with a JSON 404.
func handleNotFound() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, slipway.Errorf(slipway.ENOTFOUND, "No route for %s.", r.URL.Path))
	}
}

// handleMethodNotAllowed answers a known path asked with the wrong method, with
// a JSON error and the Allow header (chi sets it only in its own handler).
func handleMethodNotAllowed(routes chi.Routes) http.HandlerFunc {
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions}
	return func(w http.ResponseWriter, r *http.Request) {
		for _, m := range methods {
			if routes.Match(chi.NewRouteContext(), m, r.URL.Path) {
				w.Header().Add("Allow", m)
			}
		}
		writeJSON(w, r, http.StatusMethodNotAllowed, errorResponse{Error: errorBody{
			Code:    "method_not_allowed",
			Message: "Method " + r.Method + " is not allowed here.",
		}})
	}
}

// webhookForge names the forge of a request routed to /webhooks/{forge}, for
// metrics.CountWebhooks; "" for every other route (and unknown forges).
func webhookForge(r *http.Request) string {
	rc := chi.RouteContext(r.Context())
	if rc == nil {
		return ""
	}
	forge, ok := strings.CutPrefix(rc.RoutePattern(), "/webhooks/")
	if !ok || strings.ContainsAny(forge, "/{*") {
		return ""
	}
	return forge
}

// repoParams reads {owner} and {name} of a /repos/{owner}/{name}/… path. A
// GitLab owner with subgroups ("group/sub") comes percent-encoded, as in
// GitLab's own API: /api/v1/repos/group%2Fsub/app.
func repoParams(r *http.Request) (owner, name string) {
	owner = chi.URLParam(r, "owner")
	if u, err := url.PathUnescape(owner); err == nil {
		owner = u
	}
	return owner, chi.URLParam(r, "name")
}
