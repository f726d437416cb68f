// Package server is slipway's HTTP plumbing: it routes each request (webhooks,
// the REST API under /api/v1, probes, the dashboard), checks who sent it, and
// answers it with calls on the domain services of package slipway and the
// forges of package forge, never talking to Postgres itself.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/rs/zerolog/hlog"
	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/promote"
)

// DefaultMaxWebhookBytes caps a webhook body when Config.MaxWebhookBytes is zero.
// GitHub itself caps payloads at 25 MB.
const DefaultMaxWebhookBytes = 25 << 20

// Config configures the HTTP server. The zero value of an optional field takes its
// default; main validates the required ones and names the environment variable.
type Config struct {
	// Logs wakes live log streams (GET /api/v1/builds/{id}/logs?follow=1); nil
	// makes them poll only.
	Logs slipway.LogFollower
	// Changes tells when builds change (postgres.Notifier): the Now page's
	// live viewers get a new body once per change, rendered once for all of
	// them. nil: it is rendered every 2s instead (still once for all).
	Changes slipway.BuildWatcher
	// Secrets stores build secrets for the admin secrets API; nil answers 503.
	Secrets slipway.SecretService
	// Credentials stores repositories' own clone tokens and deploy keys for
	// the admin API (repositories found through Secrets); nil answers 503.
	Credentials slipway.RepoCredentialService
	// RegistryAuths stores repositories' own registry credentials for the
	// admin API (repositories found through Secrets); nil answers 503.
	RegistryAuths slipway.RegistryAuthService
	// GitHubWebhookSecret keys the HMAC-SHA256 of GitHub deliveries
	// (SLIPWAY_GITHUB_WEBHOOK_SECRET). While it is empty only repositories with
	// a webhook secret of their own receive GitHub deliveries; others get 503.
	GitHubWebhookSecret string
	// GitLabWebhookToken is the secret token GitLab sends in X-Gitlab-Token
	// (SLIPWAY_GITLAB_WEBHOOK_TOKEN). While it is empty only repositories with a
	// webhook secret of their own receive GitLab deliveries.
	GitLabWebhookToken string
	// GiteaWebhookSecret keys the HMAC-SHA256 of Gitea and Forgejo deliveries
	// (SLIPWAY_GITEA_WEBHOOK_SECRET); empty as for GitLabWebhookToken.
	GiteaWebhookSecret string
	// GitHubAllowedOwners lists the owners whose pushes are built
	// (SLIPWAY_GITHUB_ALLOWED_OWNERS); compared case-insensitively. Empty allows any.
	GitHubAllowedOwners []string
	// GitLabAllowedOwners and GiteaAllowedOwners do the same for GitLab groups
	// and users (a group allows its subgroups) and for Gitea or Forgejo owners
	// (SLIPWAY_GITLAB_ALLOWED_OWNERS, SLIPWAY_GITEA_ALLOWED_OWNERS).
	GitLabAllowedOwners, GiteaAllowedOwners []string
	// AutoRegister lets a signed delivery of a repository nobody registered
	// register it (SLIPWAY_AUTO_REGISTER). Off, such a delivery is refused
	// with 403 and an admin registers repositories (slipway repo add, POST
	// /api/v1/repos): anyone with a forge's global webhook secret could
	// otherwise register any number of repositories.
	AutoRegister bool
	// GitHubURL, GitLabURL and GiteaURL are the forges' base URLs
	// (SLIPWAY_GITHUB_URL, SLIPWAY_GITLAB_URL, SLIPWAY_GITEA_URL): a
	// repository first seen in a delivery is cloned from
	// <base>/<owner>/<name>.git, never from the URL the payload names, and
	// only the admin API changes a repository's clone URL afterwards. An empty
	// base: a delivery of a repository nobody registered is refused.
	GitHubURL, GitLabURL, GiteaURL string
	// CloneURLFromPayload lets a repository first seen in a delivery take the
	// payload's clone URL instead (SLIPWAY_DEV_CLONE_URL_FROM_PAYLOAD): for a
	// development machine, whose demo repositories are not on a forge.
	CloneURLFromPayload bool
	// Registry is host[:port][/prefix] (SLIPWAY_REGISTRY). A repository's image is
	// Registry + "/" + lower(owner) + "/" + lower(name).
	Registry string
	// AdminToken is the bootstrap admin's bearer token (SLIPWAY_ADMIN_TOKEN).
	// While it is empty only stored tokens work (and with no token store the
	// API answers 503).
	AdminToken string
	// PublicURL is where users reach slipway (SLIPWAY_PUBLIC_URL), for example
	// http://127.0.0.1:8080. Build URLs in responses start with it; when it is
	// empty they are relative.
	PublicURL string
	// DashboardPublic opens the dashboard's read-only pages without signing in
	// (SLIPWAY_DASHBOARD_PUBLIC).
	DashboardPublic bool
	// PromotionTargets are path.Match patterns of the repositories that any
	// repository's builds may be promoted to besides their own image
	// (SLIPWAY_PROMOTION_TARGETS; see slipway.PromotionTargetAllowed). A
	// repository's own promotion_targets replace them. Empty: only the build's
	// own image.
	PromotionTargets []string
	// MaxWebhookBytes caps a webhook body; beyond it the answer is 413.
	// Zero means DefaultMaxWebhookBytes.
	MaxWebhookBytes int64
	// WebhookMemory bounds the bytes of webhook bodies the server holds at
	// once, across all forges (SLIPWAY_WEBHOOK_MEMORY): bodies are read whole
	// before their signature is checked, so this is memory anyone can make the
	// server use. A delivery that finds no room within a few seconds gets 503
	// with Retry-After. Zero means DefaultWebhookMemory; it is raised to
	// MaxWebhookBytes if smaller, so every delivery the cap allows can fit.
	WebhookMemory int64

	// MaxLogFollowers caps the live streams the server holds open at once
	// (SLIPWAY_MAX_LOG_FOLLOWERS): log follows (?follow=1, the build page's
	// log) and the dashboard's Now page; beyond it they get 503. Zero means
	// DefaultMaxLogFollowers.
	MaxLogFollowers int

	// webhookBudgetWait and webhookReadTimeout replace their defaults in
	// tests; webhookOnWait, when set, is called when a body waits for room.
	webhookBudgetWait, webhookReadTimeout time.Duration
	webhookOnWait                         func()
}

// withDefaults returns c with its defaults filled in and its lists normalized.
func (c Config) withDefaults() Config {
	if c.MaxWebhookBytes <= 0 {
		c.MaxWebhookBytes = DefaultMaxWebhookBytes
	}
	if c.WebhookMemory <= 0 {
		c.WebhookMemory = DefaultWebhookMemory
	}
	c.WebhookMemory = max(c.WebhookMemory, c.MaxWebhookBytes)
	if c.MaxLogFollowers <= 0 {
		c.MaxLogFollowers = DefaultMaxLogFollowers
	}
	if c.webhookBudgetWait <= 0 {
		c.webhookBudgetWait = defaultWebhookBudgetWait
	}
	if c.webhookReadTimeout <= 0 {
		c.webhookReadTimeout = defaultWebhookReadTimeout
	}
	c.Registry = strings.TrimRight(c.Registry, "/")
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	c.GitHubAllowedOwners = lowerList(c.GitHubAllowedOwners)
	c.GitLabAllowedOwners = lowerList(c.GitLabAllowedOwners)
	c.GiteaAllowedOwners = lowerList(c.GiteaAllowedOwners)
	return c
}

// Check is a readiness check for /readyz. Func returns nil when the dependency
// Name stands for is usable. It runs with a 2 second deadline, possibly at the
// same time as other checks, and its error text is logged but not shown: a
// *slipway.Error's Message is shown as is, anything else as a generic failure.
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

// Services are the dependencies of the API routes beyond builds. Each must be
// safe for concurrent use. A nil one makes the routes that need it answer 503.
type Services struct {
	Repos  slipway.RepoService
	Tokens slipway.TokenService
	// Sessions stores dashboard sign-ins; nil: the dashboard cannot sign in.
	Sessions   slipway.SessionService
	Promotions slipway.PromotionService
	// Releases stores release records (GET /api/v1/releases, the release pages).
	Releases     slipway.ReleaseService
	Integrations slipway.IntegrationService
	// TestCases stores the cases of the tests' JUnit reports
	// (GET /api/v1/builds/{id}/test-cases, the build page).
	TestCases slipway.TestCaseService
	// Registry promotes images (see package promote); *registry.Client
	// implements it.
	Registry promote.Registry
}

// New returns slipway's HTTP handler. builds must be safe for concurrent use;
// logger is the root logger that every request's logger derives from. See
// routes.go for what it serves.
func New(logger zerolog.Logger, cfg Config, builds slipway.BuildService, checks []Check, svc Services) http.Handler {
	return newRouter(logger, cfg.withDefaults(), builds, checks, svc)
}

// errorResponse is the JSON body of every error answer.
type errorResponse struct {
	Error errorBody `json:"error"`
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// errorStatus maps slipway error codes to HTTP statuses.
var errorStatus = map[string]int{
	slipway.ECONFLICT:     http.StatusConflict,
	slipway.EINTERNAL:     http.StatusInternalServerError,
	slipway.EINVALID:      http.StatusBadRequest,
	slipway.ENOTFOUND:     http.StatusNotFound,
	slipway.EUNAUTHORIZED: http.StatusUnauthorized,
	slipway.EFORBIDDEN:    http.StatusForbidden,
	slipway.ETOOLARGE:     http.StatusRequestEntityTooLarge,
	slipway.EUNAVAILABLE:  http.StatusServiceUnavailable,
}

// writeError answers with err: the JSON error body, or on the dashboard's
// routes (withErrorPage) the error page in the dashboard's look, unless the
// client asks for JSON only. It is the only error writer and the only place
// that logs internal errors: users see slipway.ErrorMessage(err), the log
// gets the whole chain. A request whose context ended (the client left, or
// the route timeout passed) is answered 503 and not logged as an error.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := slipway.ErrorCode(err), slipway.ErrorMessage(err)
	if code == slipway.EINTERNAL && r.Context().Err() != nil &&
		(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// The store saw our own deadline or the client hanging up; neither is a
		// fault of ours worth an error line. The access log still shows the 503.
		hlog.FromRequest(r).Debug().Err(err).Msg("Request ended before its answer")
		code, msg = slipway.EUNAVAILABLE, "The request timed out or was canceled."
	} else if code == slipway.EINTERNAL {
		hlog.FromRequest(r).Error().Err(err).Msg("Internal error")
	}
	status, ok := errorStatus[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if page, ok := r.Context().Value(errorPageKey{}).(errorPage); ok && !wantsJSON(r) {
		page(w, r, status, msg)
		return
	}
	writeJSON(w, r, status, errorResponse{Error: errorBody{Code: code, Message: msg}})
}

// errorPage renders an error answer as an HTML page: status, and the message
// a person can act on.
type errorPage func(w http.ResponseWriter, r *http.Request, status int, msg string)

type errorPageKey struct{}

// withErrorPage makes writeError answer the routes it wraps with page.
func withErrorPage(page errorPage) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), errorPageKey{}, page)))
		})
	}
}

// wantsJSON tells whether the request's Accept header asks for JSON and not
// for HTML (a script's "Accept: application/json"); a browser's Accept, a
// missing one and "*/*" do not.
func wantsJSON(r *http.Request) bool {
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html")
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		// Headers are gone; all that is left to do is note it. Usually the
		// client left.
		hlog.FromRequest(r).Debug().Err(err).Msg("Writing JSON answer")
	}
}

// lowerList is list trimmed, lower-cased and without empty entries.
func lowerList(list []string) []string {
	var out []string
	for _, o := range list {
		if o = strings.ToLower(strings.TrimSpace(o)); o != "" {
			out = append(out, o)
		}
	}
	return out
}
