package main

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/buildkit"
	"github.com/slipway-ci/slipway/forge"
	"github.com/slipway-ci/slipway/registry"
	"github.com/slipway-ci/slipway/server"
)

// setting describes one SLIPWAY_* environment variable. This list is the one
// place a setting is described: the README's settings table,
// deploy/settings.txt (which the Helm chart's and compose file's tests read)
// and the comments of the chart's values.yaml config and secrets keys are
// generated from it (go test ./cmd/slipway -run TestSettingsFile
// -update-settings), and TestSettingsFile fails while any is stale.
type setting struct {
	Name    string
	Default string // as the README shows it (Markdown); "" is shown as —
	Roles   string // which subcommands read it
	Doc     string // Markdown, one line
	Secret  bool
}

// settings lists every environment variable slipway reads.
var settings = []setting{
	{"SLIPWAY_DATABASE_URL", "", "all", "PostgreSQL URL or DSN, e.g. `postgres://slipway:pw@db:5432/slipway?sslmode=disable`. Required.", true},
	{"SLIPWAY_ADDR", "`127.0.0.1:8080`", "server, dev", "Address the HTTP server (webhooks, API, dashboard, probes) listens on.", false},
	{"SLIPWAY_PUBLIC_URL", "`http://$SLIPWAY_ADDR`", "server, worker, dev", "URL users and forges reach slipway at; build links in API answers and integration callback URLs start with it.", false},
	{"SLIPWAY_GITHUB_WEBHOOK_SECRET", "", "server, dev", "Secret of the GitHub webhook (HMAC-SHA256 of each delivery). Required unless `SLIPWAY_GITLAB_WEBHOOK_TOKEN` or `SLIPWAY_GITEA_WEBHOOK_SECRET` is set.", true},
	{"SLIPWAY_GITHUB_URL", "`https://github.com`", "server, dev", "GitHub's web URL (Enterprise Server: `https://HOST`). A repository first seen in a delivery is cloned from `<this>/<owner>/<name>.git`, never from the URL the payload names; only the admin API changes it later.", false},
	{"SLIPWAY_GITLAB_URL", "origin of `SLIPWAY_GITLAB_API_URL`", "server, dev", "GitLab's web URL; new projects are cloned from `<this>/<namespace>/<project>.git`.", false},
	{"SLIPWAY_GITEA_URL", "origin of `SLIPWAY_GITEA_API_URL`", "server, dev", "Gitea's or Forgejo's web URL; new repositories are cloned from `<this>/<owner>/<name>.git`. Unset with no API URL: only registered repositories build.", false},
	{"SLIPWAY_DEV_CLONE_URL_FROM_PAYLOAD", "false", "server, dev", "Development only: a repository first seen in a delivery takes the clone URL the payload names (`make run` sets it for its demo repository). Never on a shared slipway.", false},
	{"SLIPWAY_GITHUB_ALLOWED_OWNERS", "any", "server, dev", "Comma-separated GitHub owners (users or organisations) whose pushes are built; others get 403.", false},
	{"SLIPWAY_GITLAB_ALLOWED_OWNERS", "any", "server, dev", "Comma-separated GitLab groups and users whose projects are built (a group allows its subgroups); others get 403.", false},
	{"SLIPWAY_GITEA_ALLOWED_OWNERS", "any", "server, dev", "Comma-separated Gitea or Forgejo owners (users or organisations) whose repositories are built; others get 403.", false},
	{"SLIPWAY_AUTO_REGISTER", "false", "server, dev", "`true` lets a signed delivery of a repository nobody registered register it (with its forge's clone URL and the global webhook secret). `false`: such deliveries get 403 and an admin registers each repository (`slipway repo add`, `POST /api/v1/repos`); `make run` sets `true` for its demo.", false},
	{"SLIPWAY_PROMOTION_TARGETS", "none", "server, dev", "Comma-separated patterns of the image repositories builds may be promoted to besides their own image, `*` matching one path segment and `{owner}`/`{name}` standing for the build's repository: `registry.example.com/releases/{owner}/{name},ghcr.io/{owner}/*`. A repository's own `promotion_targets` replace them. Unset: only the build's own image.", false},
	{"SLIPWAY_GITLAB_WEBHOOK_TOKEN", "", "server, dev", "Secret token of GitLab webhooks (GitLab sends it as `X-Gitlab-Token`). Unset: only repositories with their own webhook secret receive GitLab pushes.", true},
	{"SLIPWAY_GITEA_WEBHOOK_SECRET", "", "server, dev", "Secret of Gitea and Forgejo webhooks (HMAC-SHA256 of each delivery). Unset: only repositories with their own webhook secret receive Gitea pushes.", true},
	{"SLIPWAY_GITHUB_API_URL", "`https://api.github.com`", "server, worker, dev", "GitHub REST API for commit statuses and GitHub App tokens; GitHub Enterprise Server: `https://HOST/api/v3` (clones then send credentials to `https://HOST`).", false},
	{"SLIPWAY_GITHUB_TOKEN", "", "server, worker, dev", "Token for commit statuses (classic `repo:status`, or fine-grained \"Commit statuses: write\") and, with read access to contents, for HTTPS clones of private repositories on github.com (or the Enterprise Server). Unset: no statuses; clones are anonymous unless a GitHub App is set.", true},
	{"SLIPWAY_GITHUB_APP_ID", "", "server, worker, dev", "GitHub App id: clones of private GitHub repositories and commit statuses use an installation token of that app, scoped to the one repository (instead of `SLIPWAY_GITHUB_TOKEN`).", false},
	{"SLIPWAY_GITHUB_APP_PRIVATE_KEY_FILE", "", "server, worker, dev", "PEM file of the GitHub App's private key; required with `SLIPWAY_GITHUB_APP_ID`.", false},
	{"SLIPWAY_GITLAB_API_URL", "`https://gitlab.com/api/v4`", "server, worker, dev", "GitLab REST API for commit statuses: `https://HOST/api/v4`; its origin is where clones send `SLIPWAY_GITLAB_TOKEN`.", false},
	{"SLIPWAY_GITLAB_TOKEN", "", "server, worker, dev", "GitLab access token with the `api` scope: commit statuses (sent as `PRIVATE-TOKEN`) and HTTPS clones of private projects on the host of `SLIPWAY_GITLAB_API_URL` (as user `oauth2`). Unset: no statuses; clones are anonymous.", true},
	{"SLIPWAY_GITEA_API_URL", "", "server, worker, dev", "Gitea or Forgejo API for commit statuses: `https://HOST/api/v1`; its origin is where clones send `SLIPWAY_GITEA_TOKEN`. Required with `SLIPWAY_GITEA_TOKEN`.", false},
	{"SLIPWAY_GITEA_TOKEN", "", "server, worker, dev", "Gitea or Forgejo access token with repository write access: commit statuses and HTTP(S) clones of private repositories on the host of `SLIPWAY_GITEA_API_URL`. Unset: no statuses; clones are anonymous.", true},
	{"SLIPWAY_ADMIN_TOKEN", "", "server, dev", "Bootstrap admin bearer token for the REST API (make more with `slipway token create`). Required; at least 8 characters.", true},
	{"SLIPWAY_DASHBOARD_PUBLIC", "`false`", "server, dev", "`true` opens the dashboard's read-only pages without signing in; promoting, cancelling and retrying still need a token.", false},
	{"SLIPWAY_WEBHOOK_MEMORY", "`64MiB`", "server, dev", "Most memory the bodies of webhook deliveries being received hold at once, across all forges (bytes, or with `KiB`, `MiB`, `GiB`). A body is read whole before its signature can be checked, so anyone who can reach `/webhooks/` can make the server hold this much, and no more. A delivery that finds no room within 3 s gets 503 with `Retry-After` (forges redeliver; GitHub has a Redeliver button). At least `25MiB`, the largest delivery. A body must also arrive within 30 s of its headers, and headers within 10 s.", false},
	{"SLIPWAY_MAX_LOG_FOLLOWERS", "`500`", "server, dev", "Most live streams one server process holds open at once: log follows (`?follow=1`, the build page's log) and the dashboard's Now page. Beyond it they get 503 with `Retry-After` and a message; the plain log (without `follow`) is always served. Run more server replicas for more.", false},
	{"SLIPWAY_REGISTRY", "", "server, worker, dev", "Registry `host[:port][/prefix]` images are pushed to: `$SLIPWAY_REGISTRY/<owner>/<name>`. Required.", false},
	{"SLIPWAY_REGISTRY_INSECURE", "`true` for loopback hosts", "server, worker, dev", "Talk plain HTTP to the registry.", false},
	{"SLIPWAY_DOCKER_CONFIG", "", "server, worker, dev", "Path of a Docker `config.json` (`auths`, `credHelpers`: what `docker login` writes, or the `.dockerconfigjson` key of a `kubernetes.io/dockerconfigjson` Secret) with the credentials of every registry slipway talks to: pushes, `FROM` pulls, caches, verification, test pulls, promotion (see Push to ghcr.io). Read again on each use. Unset: anonymous.", false},
	{"SLIPWAY_CA_BUNDLE", "", "server, worker, dev", "Path of a PEM file of CAs trusted besides the system's, for registries and forges behind a private CA (see Your own CA).", false},
	{"SLIPWAY_BUILDKIT_ADDR", "", "worker, dev", "buildkitd address: `unix:///run/buildkit/buildkitd.sock` or `tcp://buildkitd:1234`; or a builder pool, `linux/amd64=unix:///…,linux/arm64=tcp://arm-node:1234` with TLS options (see Builder pool). Required.", false},
	{"SLIPWAY_CACHE_REPOSITORY", "the image's repository", "worker, dev", "Registry `host[:port][/prefix]` for BuildKit's registry caches: `$SLIPWAY_CACHE_REPOSITORY/<owner>/<name>:buildcache-<os>-<arch>`. It must speak the same http/https as `SLIPWAY_REGISTRY`.", false},
	{"SLIPWAY_SECRET_KEY", "", "server, worker, dev", "32-byte key, 64 hex digits or base64 (`openssl rand -hex 32`), sealing secrets in the database (AES-256-GCM). Server and workers need the same key. Unset: no build secrets and no per-repository webhook secrets.", true},
	{"SLIPWAY_WORKER_ID", "`<hostname>-<pid>`", "worker, dev", "Name of the worker in job leases and logs.", false},
	{"SLIPWAY_WORKER_CONCURRENCY", "`1`", "worker, dev", "Builds one worker runs at once.", false},
	{"SLIPWAY_WORKER_ADDR", "`127.0.0.1:8081`", "worker", "Address `slipway worker` serves `/healthz`, `/readyz` and `/metrics` on; `off` disables.", false},
	{"SLIPWAY_POLL_INTERVAL", "`5s`", "worker, dev", "How often an idle worker polls the queue (a NOTIFY wakes it at once).", false},
	{"SLIPWAY_HEARTBEAT_INTERVAL", "`5s`", "worker, dev", "How often a running build's lease is renewed.", false},
	{"SLIPWAY_STALE_AFTER", "`30s`", "worker, dev", "Age of a lease after which another worker takes the build over; at least twice the heartbeat.", false},
	{"SLIPWAY_BUILD_TIMEOUT", "`1h`", "worker, dev", "Longest one attempt of a build may run.", false},
	{"SLIPWAY_PODMAN", "`podman`", "worker, dev", "The podman executable that runs the Pods of tests with services (a path, or a name found in PATH). Podman runs as root on the worker's host; a worker without it runs every other test, and builds with services fail saying why (see Integration tests with services).", false},
	{"SLIPWAY_POD_CPU", "`2`", "worker, dev", "CPU limit of each container of a test Pod, in Kubernetes quantity syntax (`2`, `500m`).", false},
	{"SLIPWAY_POD_MEMORY", "`2Gi`", "worker, dev", "Memory limit of each container of a test Pod, in Kubernetes quantity syntax (`2Gi`, `512Mi`).", false},
	{"SLIPWAY_MAX_ATTEMPTS", "`3`", "worker, dev", "Most attempts of a build that meets infrastructure failures (buildkitd unreachable or crashed, registry 5xx or timeout, worker lost); user errors are never retried. Attempts handed back at shutdown do not count.", false},
	{"SLIPWAY_RETRY_BACKOFF", "`10s`", "worker, dev", "Wait before retrying a build after an infrastructure failure; doubles with each further attempt.", false},
	{"SLIPWAY_RETRY_MAX_BACKOFF", "`5m`", "worker, dev", "Longest wait between two attempts.", false},
	{"SLIPWAY_SHUTDOWN_GRACE", "`30s`", "worker, dev", "On SIGTERM a worker claims no more builds and lets running ones finish for this long, then hands them back to the queue (not failed). Keep it below your orchestrator's kill timeout.", false},
	{"SLIPWAY_WORKSPACE_DIR", "`$TMPDIR/slipway-work`", "worker, dev", "Where checkouts are made (one folder per build, removed afterwards).", false},
	{"SLIPWAY_GIT_DEV_PROTOCOLS", "false", "worker, dev", "Development only: also clone over `git://`, `http://` and `file://` (no server authentication, or the worker's own disk; `make run` sets it for its git daemon). Off, git gets only `https` and `ssh` (`GIT_ALLOW_PROTOCOL`, so no remote helpers such as `ext::`) and another clone URL fails the build with this setting's name. Every git the worker runs gets none of the worker's own variables (`SLIPWAY_SECRET_KEY`, the database URL, tokens), only `PATH`, `HOME`, locale, proxy, CA and git/ssh configuration variables.", false},
	{"SLIPWAY_SUBMODULE_HOSTS", "none", "worker, dev", "Comma-separated hosts (host or host:port) besides the repository's own that submodules may be fetched from.", false},
	{"SLIPWAY_SSH_KNOWN_HOSTS", "none", "worker, dev", "Path of an OpenSSH known_hosts file: ssh:// clone URLs (with the repository's deploy key) check the server's host key against it only (StrictHostKeyChecking=yes). Unset: an ssh:// clone fails saying so.", false},
	{"SLIPWAY_OUTBOUND_ALLOWED_HOSTS", "none", "worker, dev", "Comma-separated hosts a repository's `integration.webhook` may call: names (`qa.example.com`), `*.example.com` (subdomains), IPs and CIDRs (`10.0.0.0/8`). A name never reaches a loopback, link-local (cloud metadata) or other special address it resolves to; only an IP or CIDR entry allows those (`make run` and the tests list `127.0.0.1`). Redirects to another host are not followed; proxy variables are ignored. Unset: no integration webhook is called.", false},
	{"SLIPWAY_INTEGRATION_SECRET", "", "worker, dev", "Key of the HMAC-SHA256 signature (`X-Slipway-Signature-256`) on calls to a repository's `integration.webhook`. Builds that use one fail while it is unset.", true},
	{"SLIPWAY_SERVER", "", "repo, promote, builds, logs, cancel, retry, wait", "URL of the slipway server the client commands call, e.g. `https://ci.example.com` (or `--server`).", false},
	{"SLIPWAY_TOKEN", "", "repo, promote, builds, logs, cancel, retry, wait", "API token the client commands send (or `--token`).", true},
	{"SLIPWAY_LOG_LEVEL", "`info`", "all", "`debug`, `info`, `warn` or `error`.", false},
	{"SLIPWAY_LOG_FORMAT", "`auto`", "all", "`json`, `console`, or `auto` (console when stderr is a terminal).", false},
}

// config is every setting, parsed.
type config struct {
	DatabaseURL         string
	Addr                string
	PublicURL           string
	GitHubWebhookSecret string
	GitHubAllowedOwners []string
	PromotionTargets    []string
	GitLabAllowedOwners []string
	GiteaAllowedOwners  []string
	AutoRegister        bool
	GitHubURL           string
	GitLabURL           string
	GiteaURL            string
	CloneURLFromPayload bool
	GitLabWebhookToken  string
	GiteaWebhookSecret  string
	GitHubAPIURL        string
	GitHubToken         string
	GitHubAppID         int64
	GitHubAppKeyFile    string
	GitLabAPIURL        string
	GitLabToken         string
	GiteaAPIURL         string
	GiteaToken          string
	AdminToken          string
	Registry            string
	RegistryInsecure    bool
	DockerConfig        string
	CABundle            string
	BuildkitAddr        string
	Builders            []buildkit.Endpoint
	SecretKey           string
	CacheRepository     string
	WorkerID            string
	WorkerConcurrency   int
	WorkerAddr          string
	PollInterval        time.Duration
	HeartbeatInterval   time.Duration
	StaleAfter          time.Duration
	BuildTimeout        time.Duration
	Podman              string
	PodCPU              string
	PodMemory           string
	MaxAttempts         int
	RetryBackoff        time.Duration
	RetryMaxBackoff     time.Duration
	ShutdownGrace       time.Duration
	WorkspaceDir        string
	SubmoduleHosts      []string
	SSHKnownHosts       string
	GitDevProtocols     bool
	IntegrationSecret   string
	Outbound            *slipway.OutboundPolicy
	LogLevel            string
	LogFormat           string
	DashboardPublic     bool
	WebhookMemory       int64
	MaxLogFollowers     int
}

// role says which settings a subcommand needs.
type role struct{ server, worker bool }

// literalDefault returns the value a setting takes when it is unset: its
// Default when that is one `literal` (not a placeholder such as
// `<hostname>-<pid>` or a sentence), else "". The defaults are written once,
// in settings.
func literalDefault(name string) string {
	for _, s := range settings {
		if s.Name != name {
			continue
		}
		v, ok := strings.CutPrefix(s.Default, "`")
		if v, ok2 := strings.CutSuffix(v, "`"); ok && ok2 && v != "" && !strings.ContainsAny(v, "`$<> ") {
			return v
		}
		return ""
	}
	return ""
}

// loadConfig reads the settings a role needs from getenv; an error names the variable.
func loadConfig(getenv func(string) string, r role, tmpDir string) (*config, error) {
	// get returns the setting, or the default its entry in settings gives.
	get := func(name string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return literalDefault(name)
	}
	var errs []string
	bad := func(name, format string, args ...any) {
		errs = append(errs, name+": "+fmt.Sprintf(format, args...))
	}
	// boolSetting reads a true/false setting; empty is false.
	boolSetting := func(name string) bool {
		switch v := strings.ToLower(get(name)); v {
		case "", "false", "0":
			return false
		case "true", "1":
			return true
		default:
			bad(name, "%q is not true or false", v)
			return false
		}
	}
	required := func(name string) string {
		v := get(name)
		if v == "" {
			bad(name, "is required")
		}
		return v
	}
	// quantity is a positive Kubernetes quantity (2, 500m, 2Gi), as given.
	quantity := func(name string) string {
		v := get(name)
		if q, err := resource.ParseQuantity(v); err != nil || q.Sign() <= 0 {
			bad(name, "%q is not a positive Kubernetes quantity (such as 2, 500m, 2Gi)", v)
		}
		return v
	}
	duration := func(name string) time.Duration {
		v := get(name)
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			bad(name, "%q is not a positive duration such as 30s or 5m", v)
		}
		return d
	}

	c := &config{
		Addr:         get("SLIPWAY_ADDR"),
		PublicURL:    strings.TrimRight(get("SLIPWAY_PUBLIC_URL"), "/"),
		WorkerID:     get("SLIPWAY_WORKER_ID"),
		WorkspaceDir: get("SLIPWAY_WORKSPACE_DIR"),
		LogLevel:     strings.ToLower(get("SLIPWAY_LOG_LEVEL")),
		LogFormat:    strings.ToLower(get("SLIPWAY_LOG_FORMAT")),
	}
	c.DatabaseURL = required("SLIPWAY_DATABASE_URL")
	c.GitDevProtocols = boolSetting("SLIPWAY_GIT_DEV_PROTOCOLS")
	c.SubmoduleHosts = listSetting(get, "SLIPWAY_SUBMODULE_HOSTS")
	c.SSHKnownHosts = get("SLIPWAY_SSH_KNOWN_HOSTS")
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("SLIPWAY_LOG_LEVEL", "%q is not debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "auto", "json", "console":
	default:
		bad("SLIPWAY_LOG_FORMAT", "%q is not json, console or auto", c.LogFormat)
	}

	if r.server {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			bad("SLIPWAY_ADDR", "%q is not host:port", c.Addr)
		}
		if c.PublicURL == "" {
			c.PublicURL = "http://" + c.Addr
		} else if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("SLIPWAY_PUBLIC_URL", "%q is not an http(s) URL", c.PublicURL)
		}
		// A GitLab- or Gitea-only installation needs no GitHub secret.
		c.GitHubWebhookSecret = get("SLIPWAY_GITHUB_WEBHOOK_SECRET")
		if c.GitHubWebhookSecret == "" && get("SLIPWAY_GITLAB_WEBHOOK_TOKEN") == "" && get("SLIPWAY_GITEA_WEBHOOK_SECRET") == "" {
			bad("SLIPWAY_GITHUB_WEBHOOK_SECRET", "is required (unless SLIPWAY_GITLAB_WEBHOOK_TOKEN or SLIPWAY_GITEA_WEBHOOK_SECRET is set)")
		}
		c.AdminToken = required("SLIPWAY_ADMIN_TOKEN")
		if c.AdminToken != "" && len(c.AdminToken) < 8 {
			bad("SLIPWAY_ADMIN_TOKEN", "must be at least 8 characters")
		}
		c.DashboardPublic = boolSetting("SLIPWAY_DASHBOARD_PUBLIC")
		c.MaxLogFollowers = server.DefaultMaxLogFollowers
		if v := get("SLIPWAY_MAX_LOG_FOLLOWERS"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1_000_000 {
				bad("SLIPWAY_MAX_LOG_FOLLOWERS", "%q is not a number from 1 to 1000000", v)
			}
			c.MaxLogFollowers = n
		}
		c.WebhookMemory = server.DefaultWebhookMemory
		if v := get("SLIPWAY_WEBHOOK_MEMORY"); v != "" {
			n, err := parseBytes(v)
			if err != nil || n < server.DefaultMaxWebhookBytes {
				bad("SLIPWAY_WEBHOOK_MEMORY", "%q is not a size of at least 25MiB (the largest delivery), such as 64MiB or 1GiB", v)
			}
			c.WebhookMemory = n
		}
		c.GitLabWebhookToken = get("SLIPWAY_GITLAB_WEBHOOK_TOKEN")
		c.GiteaWebhookSecret = get("SLIPWAY_GITEA_WEBHOOK_SECRET")
		c.GitHubAllowedOwners = listSetting(get, "SLIPWAY_GITHUB_ALLOWED_OWNERS")
		c.GitLabAllowedOwners = listSetting(get, "SLIPWAY_GITLAB_ALLOWED_OWNERS")
		c.GiteaAllowedOwners = listSetting(get, "SLIPWAY_GITEA_ALLOWED_OWNERS")
		c.AutoRegister = boolSetting("SLIPWAY_AUTO_REGISTER")
		c.PromotionTargets = listSetting(get, "SLIPWAY_PROMOTION_TARGETS")
		if err := slipway.ValidatePromotionTargets("SLIPWAY_PROMOTION_TARGETS", c.PromotionTargets); err != nil {
			bad("SLIPWAY_PROMOTION_TARGETS", "%s", slipway.ErrorMessage(err))
		}
	}
	if r.server || r.worker {
		// The server sets commit statuses, the worker clones private
		// repositories: both use the forges' tokens.
		apiURL := func(name, def string) string {
			v := strings.TrimRight(get(name), "/")
			if v == "" {
				return def
			}
			if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad(name, "%q is not an http(s) URL", v)
			}
			return v
		}
		c.GitHubAPIURL = apiURL("SLIPWAY_GITHUB_API_URL", "")
		c.GitLabAPIURL = apiURL("SLIPWAY_GITLAB_API_URL", "")
		c.GiteaAPIURL = apiURL("SLIPWAY_GITEA_API_URL", "")
		c.GitHubToken = get("SLIPWAY_GITHUB_TOKEN")
		c.GitLabToken = get("SLIPWAY_GITLAB_TOKEN")
		c.GiteaToken = get("SLIPWAY_GITEA_TOKEN")
		if c.GiteaToken != "" && c.GiteaAPIURL == "" {
			bad("SLIPWAY_GITEA_API_URL", "is required with SLIPWAY_GITEA_TOKEN (e.g. https://gitea.example.com/api/v1)")
		}
		webURL := func(name, def string) string {
			v := strings.TrimRight(get(name), "/")
			if v == "" {
				return def
			}
			if u, err := url.Parse(v); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http" && u.Scheme != "ssh" && u.Scheme != "git") {
				bad(name, "%q is not a URL with a scheme and a host, e.g. https://gitlab.example.com", v)
			}
			return v
		}
		c.GitHubURL = webURL("SLIPWAY_GITHUB_URL", "")
		c.GitLabURL = webURL("SLIPWAY_GITLAB_URL", forge.OriginOf(c.GitLabAPIURL))
		c.GiteaURL = webURL("SLIPWAY_GITEA_URL", forge.OriginOf(c.GiteaAPIURL))
		c.CloneURLFromPayload = boolSetting("SLIPWAY_DEV_CLONE_URL_FROM_PAYLOAD")
		if v := get("SLIPWAY_GITHUB_APP_ID"); v != "" {
			id, err := strconv.ParseInt(v, 10, 64)
			if err != nil || id <= 0 {
				bad("SLIPWAY_GITHUB_APP_ID", "%q is not a GitHub App id (a positive number)", v)
			}
			c.GitHubAppID = id
			c.GitHubAppKeyFile = get("SLIPWAY_GITHUB_APP_PRIVATE_KEY_FILE")
			if c.GitHubAppKeyFile == "" {
				bad("SLIPWAY_GITHUB_APP_PRIVATE_KEY_FILE", "is required with SLIPWAY_GITHUB_APP_ID")
			}
		}
	}
	c.Registry = strings.TrimRight(required("SLIPWAY_REGISTRY"), "/")
	if c.Registry != "" {
		if strings.Contains(c.Registry, "://") {
			bad("SLIPWAY_REGISTRY", "%q must be host[:port][/prefix] without a scheme", c.Registry)
		} else if c.Registry != strings.ToLower(c.Registry) {
			bad("SLIPWAY_REGISTRY", "%q must be lower case", c.Registry)
		}
	}
	// The server promotes images, the worker pushes them: both talk to the registry.
	c.RegistryInsecure = isLoopbackHost(c.Registry)
	if v := get("SLIPWAY_REGISTRY_INSECURE"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("SLIPWAY_REGISTRY_INSECURE", "%q is not true or false", v)
		}
		c.RegistryInsecure = b
	}
	c.DockerConfig = get("SLIPWAY_DOCKER_CONFIG")
	if c.DockerConfig != "" {
		if _, err := registry.LoadDockerConfig(c.DockerConfig); err != nil {
			bad("SLIPWAY_DOCKER_CONFIG", "%v", err)
		}
	}
	c.CABundle = get("SLIPWAY_CA_BUNDLE")
	if c.CABundle != "" {
		if _, err := registry.LoadCABundle(c.CABundle); err != nil {
			bad("SLIPWAY_CA_BUNDLE", "%v", err)
		}
	}
	c.SecretKey = get("SLIPWAY_SECRET_KEY")
	if c.SecretKey != "" {
		if _, err := slipway.NewSealer(c.SecretKey); err != nil {
			bad("SLIPWAY_SECRET_KEY", "%v", err)
		}
	}
	if r.worker {
		c.BuildkitAddr = required("SLIPWAY_BUILDKIT_ADDR")
		if c.BuildkitAddr != "" && !strings.Contains(c.BuildkitAddr, "://") {
			bad("SLIPWAY_BUILDKIT_ADDR", "%q needs a scheme: unix://, tcp://", c.BuildkitAddr)
		} else if c.BuildkitAddr != "" {
			eps, err := buildkit.ParseEndpoints(c.BuildkitAddr)
			if err != nil {
				bad("SLIPWAY_BUILDKIT_ADDR", "%v", err)
			}
			c.Builders = eps
		}
		c.CacheRepository = strings.TrimRight(get("SLIPWAY_CACHE_REPOSITORY"), "/")
		if strings.Contains(c.CacheRepository, "://") || c.CacheRepository != strings.ToLower(c.CacheRepository) {
			bad("SLIPWAY_CACHE_REPOSITORY", "%q must be lower-case host[:port][/prefix] without a scheme", c.CacheRepository)
		}
		c.WorkerConcurrency = 1
		if v := get("SLIPWAY_WORKER_CONCURRENCY"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 256 {
				bad("SLIPWAY_WORKER_CONCURRENCY", "%q is not a number from 1 to 256", v)
			}
			c.WorkerConcurrency = n
		}
		switch v := get("SLIPWAY_WORKER_ADDR"); v {
		case "":
		case "off":
			c.WorkerAddr = ""
		default:
			if _, _, err := net.SplitHostPort(v); err != nil {
				bad("SLIPWAY_WORKER_ADDR", "%q is not host:port or off", v)
			}
			c.WorkerAddr = v
		}
		c.PollInterval = duration("SLIPWAY_POLL_INTERVAL")
		c.HeartbeatInterval = duration("SLIPWAY_HEARTBEAT_INTERVAL")
		c.StaleAfter = duration("SLIPWAY_STALE_AFTER")
		if c.StaleAfter < 2*c.HeartbeatInterval {
			bad("SLIPWAY_STALE_AFTER", "%s must be at least twice SLIPWAY_HEARTBEAT_INTERVAL (%s)", c.StaleAfter, c.HeartbeatInterval)
		}
		c.BuildTimeout = duration("SLIPWAY_BUILD_TIMEOUT")
		c.Podman = get("SLIPWAY_PODMAN")
		c.PodCPU = quantity("SLIPWAY_POD_CPU")
		c.PodMemory = quantity("SLIPWAY_POD_MEMORY")
		c.IntegrationSecret = get("SLIPWAY_INTEGRATION_SECRET")
		if p, err := slipway.ParseOutboundPolicy(get("SLIPWAY_OUTBOUND_ALLOWED_HOSTS")); err != nil {
			bad("SLIPWAY_OUTBOUND_ALLOWED_HOSTS", "%s", slipway.ErrorMessage(err))
		} else {
			c.Outbound = p
		}
		if !r.server && c.PublicURL != "" {
			if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad("SLIPWAY_PUBLIC_URL", "%q is not an http(s) URL", c.PublicURL)
			}
		}
		c.MaxAttempts = 3
		if v := get("SLIPWAY_MAX_ATTEMPTS"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 100 {
				bad("SLIPWAY_MAX_ATTEMPTS", "%q is not a number from 1 to 100", v)
			}
			c.MaxAttempts = n
		}
		c.RetryBackoff = duration("SLIPWAY_RETRY_BACKOFF")
		c.RetryMaxBackoff = duration("SLIPWAY_RETRY_MAX_BACKOFF")
		if c.RetryMaxBackoff < c.RetryBackoff {
			bad("SLIPWAY_RETRY_MAX_BACKOFF", "%s is shorter than SLIPWAY_RETRY_BACKOFF (%s)", c.RetryMaxBackoff, c.RetryBackoff)
		}
		c.ShutdownGrace = duration("SLIPWAY_SHUTDOWN_GRACE")
		if c.WorkspaceDir == "" {
			c.WorkspaceDir = tmpDir + "/slipway-work"
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return c, nil
}

// parseBytes reads a size: a whole number of bytes, or one followed by KiB,
// MiB or GiB.
func parseBytes(v string) (int64, error) {
	num, unit := v, int64(1)
	for suffix, u := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if n, ok := strings.CutSuffix(v, suffix); ok {
			num, unit = strings.TrimSpace(n), u
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/unit {
		return 0, fmt.Errorf("%q is not a size such as 64MiB", v)
	}
	return n * unit, nil
}

func isLoopbackHost(registry string) bool {
	host := strings.SplitN(registry, "/", 2)[0]
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// listSetting splits the comma-separated setting name into its non-empty,
// trimmed entries (nil when unset).
func listSetting(get func(string) string, name string) []string {
	var out []string
	for _, v := range strings.Split(get(name), ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
