// Command slipway is the slipway build service: one binary for every role.
//
//	slipway server    webhooks, REST API, dashboard
//	slipway worker    runs builds from the queue
//	slipway dev       server and worker in one process, migrating first
//	slipway migrate   applies pending database migrations
//	slipway token     creates, lists and deletes API tokens
//	slipway promote   promotes a build to tags (REST client)
//	slipway builds    lists builds or shows one (REST client)
//	slipway logs      prints or follows a build's log (REST client)
//	slipway cancel    cancels a build (REST client)
//	slipway retry     builds a finished build's commit again (REST client)
//	slipway wait      waits for a build; the exit code tells its final state
//	slipway version   prints the version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/buildkit"
	"github.com/slipway-ci/slipway/forge"
	"github.com/slipway-ci/slipway/metrics"
	"github.com/slipway-ci/slipway/pod"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/registry"
	"github.com/slipway-ci/slipway/server"
	"github.com/slipway-ci/slipway/worker"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "slipway:", err)
		os.Exit(exitCode(err))
	}
}

const usage = `usage: slipway <command>

commands:
  server    serve webhooks, the REST API and the dashboard
  worker    run builds from the queue
  dev       server and worker in one process (migrates the database first)
  migrate   apply pending database migrations
  token     create, list or delete API tokens (in the database)
  repo      register repositories, list them, rotate a webhook secret (REST API)
  promote   point tags at a succeeded build's digest (REST API)
  builds    list builds or show one (REST API)
  logs      print a build's log; --follow streams it (REST API)
  cancel    cancel a queued or running build (REST API)
  retry     build a finished build's commit again (REST API)
  wait      wait for a build: exit 0 succeeded, 7 failed, 8 canceled (REST API)
  version   print the version

Configuration comes from SLIPWAY_* environment variables; see the README.
The REST API commands read SLIPWAY_SERVER and SLIPWAY_TOKEN (or --server, --token).
`

// run is the whole program; main only supplies the process's context, arguments,
// environment and output streams, so tests can run it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmd := args[1]
	var r role
	switch cmd {
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "slipway", versionString())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "server":
		r = role{server: true}
	case "worker":
		r = role{worker: true}
	case "dev":
		r = role{server: true, worker: true}
	case "migrate":
	case "token":
		return runToken(ctx, args[2:], getenv, stdout, stderr)
	case "repo":
		return runRepo(ctx, args[2:], getenv, stdout, stderr)
	case "promote":
		return runPromote(ctx, args[2:], getenv, stdout, stderr)
	case "builds":
		return runBuilds(ctx, args[2:], getenv, stdout, stderr)
	case "logs":
		return runLogs(ctx, args[2:], getenv, stdout, stderr)
	case "cancel":
		return runCancel(ctx, args[2:], getenv, stdout, stderr)
	case "retry":
		return runRetry(ctx, args[2:], getenv, stdout, stderr)
	case "wait":
		return runWait(ctx, args[2:], getenv, stdout, stderr)
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
	if len(args) > 2 {
		return fmt.Errorf("%s takes no arguments (configuration comes from SLIPWAY_* variables)", cmd)
	}
	var cfg *config
	var err error
	if cmd == "migrate" {
		cfg, err = loadConfig(withDefault(getenv, "SLIPWAY_REGISTRY", "unused"), r, os.TempDir())
	} else {
		cfg, err = loadConfig(getenv, r, os.TempDir())
	}
	if err != nil {
		return err
	}
	logger := newLogger(cfg, stderr)
	ctx = logger.WithContext(ctx)

	db, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer db.Close()

	switch cmd {
	case "migrate":
		return migrate(ctx, db, logger)
	case "dev":
		if err := migrate(ctx, db, logger); err != nil {
			return err
		}
	case "server":
		if err := db.SchemaCurrent(ctx); err != nil {
			return fmt.Errorf("refusing to start: %w", err)
		}
	}
	return serve(ctx, cfg, r, db, logger)
}

func withDefault(getenv func(string) string, name, def string) func(string) string {
	return func(k string) string {
		if v := getenv(k); v != "" || k != name {
			return v
		}
		return def
	}
}

func migrate(ctx context.Context, db *postgres.DB, logger zerolog.Logger) error {
	applied, err := db.Migrate(ctx)
	if err != nil {
		return err
	}
	logger.Info().Ints64("applied", applied).Msg("Database schema is current")
	return nil
}

// serve runs the server and/or the worker until ctx ends.
func serve(ctx context.Context, cfg *config, r role, db *postgres.DB, logger zerolog.Logger) error {
	builds := postgres.NewBuildService(db)
	var sealer *slipway.Sealer
	if cfg.SecretKey != "" {
		var err error
		if sealer, err = slipway.NewSealer(cfg.SecretKey); err != nil {
			return fmt.Errorf("SLIPWAY_SECRET_KEY: %w", err)
		}
	}
	secrets := postgres.NewSecretService(db, sealer)
	checks := []server.Check{
		{Name: "database", Func: db.Ping},
		{Name: "schema", Func: db.SchemaCurrent},
	}
	g, ctx := errgroup.WithContext(ctx)
	// One listening connection per process, whatever its roles: workers,
	// live logs, the Now page and the status sender all hear it.
	notifier := postgres.NewNotifier(db, logger)
	g.Go(func() error { return notifier.Run(ctx) })
	if r.worker {
		reg, err := registryClient(cfg)
		if err != nil {
			return err
		}
		bk, err := buildkit.NewPool(ctx, cfg.Builders, reg.MergeIndex)
		if err != nil {
			return err
		}
		defer bk.Close()
		bk.CacheRepository = cfg.CacheRepository
		bk.Auth = buildkit.Auth{DockerConfig: cfg.DockerConfig, CABundle: cfg.CABundle}
		checks = append(checks, server.Check{Name: "buildkit", Func: bk.Ping})
		if err := metrics.RegisterBuilders([]metrics.Builder{{Name: redactAddr(cfg.BuildkitAddr), Platforms: "all", Ping: bk.Ping}}); err != nil {
			return fmt.Errorf("registering builder metrics: %w", err)
		}
		jobs := postgres.NewJobQueue(db, logger)
		auth, err := cloneAuth(cfg)
		if err != nil {
			return err
		}
		// Tests with services run in Pods through Podman; a machine without
		// it still runs every other test (those builds fail saying why).
		pods, podsMissing := worker.Config{}.Pods, ""
		if p, err := pod.NewPodman(ctx, pod.PodmanConfig{Binary: cfg.Podman, Insecure: cfg.RegistryInsecure, AuthFile: cfg.DockerConfig, CAFile: cfg.CABundle}); err != nil {
			podsMissing = podsNotConfigured(cfg.Podman, err)
			logger.Warn().Err(err).Msg("Tests with services cannot run")
		} else {
			pods = p
		}
		w, err := worker.New(logger, worker.Config{
			Pods:              pods,
			PodLimits:         pod.Limits{CPU: cfg.PodCPU, Memory: cfg.PodMemory},
			PodsMissing:       podsMissing,
			ID:                cfg.WorkerID,
			Concurrency:       cfg.WorkerConcurrency,
			PollInterval:      cfg.PollInterval,
			HeartbeatInterval: cfg.HeartbeatInterval,
			StaleAfter:        cfg.StaleAfter,
			BuildTimeout:      cfg.BuildTimeout,
			MaxAttempts:       cfg.MaxAttempts,
			RetryBackoff:      cfg.RetryBackoff,
			RetryMaxBackoff:   cfg.RetryMaxBackoff,
			ShutdownGrace:     cfg.ShutdownGrace,
			WorkspaceDir:      cfg.WorkspaceDir,
			SubmoduleHosts:    cfg.SubmoduleHosts,
			SSHKnownHosts:     cfg.SSHKnownHosts,
			Git:               slipway.GitPolicy{DevProtocols: cfg.GitDevProtocols},
			CloneAuth:         auth,
			InsecureRegistry:  cfg.RegistryInsecure,
			PublicURL:         cfg.PublicURL,
			IntegrationSecret: cfg.IntegrationSecret,
			Outbound:          cfg.Outbound,
			Integrations:      postgres.NewIntegrationService(db),
			Secrets:           secrets,
			RepoCredentials:   secrets,
			RegistryAuths:     secrets,
			DockerConfig:      cfg.DockerConfig,
			Promotions:        postgres.NewPromotionService(db),
			Releases:          postgres.NewReleaseService(db),
			TestCases:         postgres.NewTestCaseService(db),
		}, builds, jobs, bk, reg)
		if err != nil {
			return err
		}
		defer jobs.ListenOn(notifier)()
		g.Go(func() error { return w.Run(ctx) })
		if !r.server && cfg.WorkerAddr != "" {
			g.Go(func() error {
				return listenAndServe(ctx, cfg.WorkerAddr, server.NewProbes(logger, checks), logger)
			})
		}
	}
	if r.server {
		reg, err := registryClient(cfg)
		if err != nil {
			return err
		}
		logs := postgres.NewLogHub(db, logger)
		defer logs.ListenOn(notifier)()
		if err := metrics.RegisterQueue(func(ctx context.Context) (metrics.QueueStats, error) {
			s, err := db.JobStats(ctx)
			return metrics.QueueStats{Depth: s.Available, Running: s.Running, Oldest: s.OldestAvailable}, err
		}); err != nil {
			return fmt.Errorf("registering queue metrics: %w", err)
		}
		h := server.New(logger, server.Config{
			Logs:                logs,
			Changes:             notifier,
			Secrets:             secrets,
			Credentials:         secrets,
			RegistryAuths:       secrets,
			GitHubWebhookSecret: cfg.GitHubWebhookSecret,
			GitHubAllowedOwners: cfg.GitHubAllowedOwners,
			PromotionTargets:    cfg.PromotionTargets,
			GitLabAllowedOwners: cfg.GitLabAllowedOwners,
			GiteaAllowedOwners:  cfg.GiteaAllowedOwners,
			AutoRegister:        cfg.AutoRegister,
			GitHubURL:           cfg.GitHubURL,
			GitLabURL:           cfg.GitLabURL,
			GiteaURL:            cfg.GiteaURL,
			CloneURLFromPayload: cfg.CloneURLFromPayload,
			GitLabWebhookToken:  cfg.GitLabWebhookToken,
			GiteaWebhookSecret:  cfg.GiteaWebhookSecret,
			Registry:            cfg.Registry,
			AdminToken:          cfg.AdminToken,
			PublicURL:           cfg.PublicURL,
			DashboardPublic:     cfg.DashboardPublic,
			WebhookMemory:       cfg.WebhookMemory,
			MaxLogFollowers:     cfg.MaxLogFollowers,
		}, builds, checks, server.Services{
			Repos:        postgres.NewRepoService(db, sealer),
			Tokens:       postgres.NewTokenService(db),
			Sessions:     postgres.NewSessionService(db),
			Promotions:   postgres.NewPromotionService(db),
			Releases:     postgres.NewReleaseService(db),
			Integrations: postgres.NewIntegrationService(db),
			TestCases:    postgres.NewTestCaseService(db),
			Registry:     reg,
		})
		g.Go(func() error { return listenAndServe(ctx, cfg.Addr, h, logger) })
		clients, err := forgeClients(cfg)
		if err != nil {
			return err
		}
		sender := forge.NewSender(logger, forge.SenderConfig{Clients: clients, PublicURL: cfg.PublicURL, Changes: notifier}, postgres.NewStatusOutbox(db))
		g.Go(func() error { return sender.Run(ctx) })
	}
	return g.Wait()
}

// registryClient returns the registry client of cfg: credentials from
// SLIPWAY_DOCKER_CONFIG, CAs from SLIPWAY_CA_BUNDLE.
func registryClient(cfg *config) (*registry.Client, error) {
	opts := []registry.Option{registry.WithInsecure(cfg.RegistryInsecure)}
	if cfg.DockerConfig != "" {
		opts = append(opts, registry.WithKeychain(registry.DockerConfigKeychain(cfg.DockerConfig)))
	}
	if cfg.CABundle != "" {
		tr, err := registry.TransportWithCA(cfg.CABundle)
		if err != nil {
			return nil, err
		}
		opts = append(opts, registry.WithTransport(tr))
	}
	return registry.New(opts...), nil
}

// forgeClients returns a commit-status client for each forge with a token.
// With SLIPWAY_CA_BUNDLE they trust its CAs besides the system's.
func forgeClients(cfg *config) (map[string]forge.Client, error) {
	var hc *http.Client // nil: the forge package's default
	if cfg.CABundle != "" {
		tr, err := registry.TransportWithCA(cfg.CABundle)
		if err != nil {
			return nil, err
		}
		hc = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	clients := map[string]forge.Client{}
	app, err := githubApp(cfg, hc)
	if err != nil {
		return nil, err
	}
	if cfg.GitHubToken != "" || app != nil {
		clients[slipway.ForgeGitHub] = &forge.GitHub{BaseURL: cfg.GitHubAPIURL, Token: cfg.GitHubToken, App: app, HTTP: hc}
	}
	if cfg.GitLabToken != "" {
		clients[slipway.ForgeGitLab] = &forge.GitLab{BaseURL: cfg.GitLabAPIURL, Token: cfg.GitLabToken, HTTP: hc}
	}
	if cfg.GiteaToken != "" {
		clients[slipway.ForgeGitea] = &forge.Gitea{BaseURL: cfg.GiteaAPIURL, Token: cfg.GiteaToken, HTTP: hc}
	}
	return clients, nil
}

// githubApp is the GitHub App of SLIPWAY_GITHUB_APP_ID, nil without one.
func githubApp(cfg *config, hc *http.Client) (*forge.GitHubApp, error) {
	if cfg.GitHubAppID == 0 {
		return nil, nil
	}
	pemBytes, err := os.ReadFile(cfg.GitHubAppKeyFile)
	if err != nil {
		return nil, fmt.Errorf("reading SLIPWAY_GITHUB_APP_PRIVATE_KEY_FILE: %w", err)
	}
	key, err := jwt.ParseRSAPrivateKeyFromPEM(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("reading SLIPWAY_GITHUB_APP_PRIVATE_KEY_FILE %s: %w", cfg.GitHubAppKeyFile, err)
	}
	return &forge.GitHubApp{AppID: cfg.GitHubAppID, Key: key, BaseURL: cfg.GitHubAPIURL, Origin: githubOrigin(cfg.GitHubAPIURL), HTTP: hc}, nil
}

// githubOrigin is where GitHub clones go: https://github.com for the public
// API, the Enterprise Server's origin for https://HOST/api/v3.
func githubOrigin(apiURL string) string {
	if o := forge.OriginOf(apiURL); o != "" && o != "https://api.github.com" {
		return o
	}
	return "https://github.com"
}

// cloneAuth is the worker's source of clone credentials: the GitHub App,
// then each forge's token, each sent only to its forge's origin. nil when
// there is none.
func cloneAuth(cfg *config) (forge.CloneAuth, error) {
	var hc *http.Client
	if cfg.CABundle != "" {
		tr, err := registry.TransportWithCA(cfg.CABundle)
		if err != nil {
			return nil, err
		}
		hc = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	var auths forge.CloneAuths
	app, err := githubApp(cfg, hc)
	if err != nil {
		return nil, err
	}
	if app != nil {
		auths = append(auths, app)
	}
	tokens := forge.CloneTokens{
		{Forge: slipway.ForgeGitHub, Origin: githubOrigin(cfg.GitHubAPIURL), Username: forge.DefaultCloneUsername(slipway.ForgeGitHub), Token: cfg.GitHubToken},
		{Forge: slipway.ForgeGitLab, Origin: forge.OriginOf(cfg.GitLabAPIURL), Username: forge.DefaultCloneUsername(slipway.ForgeGitLab), Token: cfg.GitLabToken},
		{Forge: slipway.ForgeGitea, Origin: forge.OriginOf(cfg.GiteaAPIURL), Username: forge.DefaultCloneUsername(slipway.ForgeGitea), Token: cfg.GiteaToken},
	}
	auths = append(auths, tokens)
	if app == nil && cfg.GitHubToken == "" && cfg.GitLabToken == "" && cfg.GiteaToken == "" {
		return nil, nil
	}
	return auths, nil
}

// redactAddr drops a user:password from an address, for labels and logs.
func redactAddr(addr string) string {
	if u, err := url.Parse(addr); err == nil && u.User != nil {
		u.User = nil
		return u.String()
	}
	return addr
}

// listenAndServe serves h on addr until ctx ends, then lets in-flight requests
// finish for up to 20 seconds.
func listenAndServe(ctx context.Context, addr string, h http.Handler, logger zerolog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	// Requests get ctx's values but not its end: a request in flight when the
	// shutdown begins is finished, not canceled (Shutdown waits for it).
	base := context.WithoutCancel(ctx)
	// No ReadTimeout: it would also end live-log streams (net/http cancels a
	// request's context when the connection's read deadline passes). Webhook
	// bodies, the only large ones anybody may send, get a deadline of their
	// own (server.Config.WebhookMemory says how); the API's bodies are a few KB.
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	logger.Info().Str("addr", ln.Addr().String()).Msg("Listening")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down %s: %w", addr, err)
	}
	return nil
}

func newLogger(cfg *config, stderr io.Writer) zerolog.Logger {
	var w io.Writer = stderr
	console := cfg.LogFormat == "console"
	if cfg.LogFormat == "auto" {
		if f, ok := stderr.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			console = true
		}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly}
	}
	level, _ := zerolog.ParseLevel(cfg.LogLevel)
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if rev != "" {
			return "dev-" + rev[:min(12, len(rev))] + dirty
		}
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
	}
	return "dev"
}

// podsNotConfigured says why a worker has no Pod runtime, for the error of
// each test with services it is handed (the worker puts "test NAME has
// services, but this worker has no pod runtime: " before it). It names
// SLIPWAY_PODMAN with its value, what podman answered, and where Pod tests
// do run: a worker of the Helm chart (release image, no podman, not root)
// gets it for every such test until the Kubernetes runtime exists.
func podsNotConfigured(podman string, err error) string {
	if podman == "" {
		podman = "podman"
	}
	// NewPodman's own prefix for a podman that does not run points at
	// scripts/deps.sh, which is no help on Kubernetes; its other errors (the
	// CA bundle, the configuration folder) stay whole.
	cause := strings.TrimPrefix(err.Error(), "podman cannot run test pods (install Debian's podman, see scripts/deps.sh): ")
	return fmt.Sprintf("Pod tests are not configured here: SLIPWAY_PODMAN=%s does not run (%s). "+
		"They run on workers where podman runs as root (make run, docker-compose.yml's workers); "+
		"workers on Kubernetes (the Helm chart) cannot run them yet (README: Integration tests with services)", podman, cause)
}
