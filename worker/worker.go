// Package worker claims builds from the queue and runs them: checkout of the exact
// commit, a multi-platform BuildKit build pushed to the registry, verification of
// the pushed index, integration tests inside the image on every platform, and the
// branch or tag name added only once the tests pass.
package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/buildkit"
	"github.com/slipway-ci/slipway/forge"
	"github.com/slipway-ci/slipway/metrics"
	"github.com/slipway-ci/slipway/pod"
	"github.com/slipway-ci/slipway/promote"
)

// Builder is what the worker needs of BuildKit; *buildkit.Builder implements it.
// Both methods are safe to call concurrently and hold no state between calls.
type Builder interface {
	Build(ctx context.Context, spec buildkit.BuildSpec, log buildkit.LogFunc) (indexDigest string, err error)
	RunTest(ctx context.Context, spec buildkit.TestSpec, log buildkit.LogFunc) (exitCode int, err error)
}

// Registry is what the worker needs of the image registry; *registry.Client
// implements it. Tag is idempotent: tagging the same digest again changes nothing.
type Registry interface {
	VerifyIndex(ctx context.Context, ref string, wanted []string) (indexDigest string, platforms []slipway.PlatformDigest, err error)
	Tag(ctx context.Context, repo, digest string, tags []string) error
	// Resolve and Retag: a release points its tags at a tested build's
	// digest through them (package promote).
	promote.Registry
	// PushChart is registry.Client.PushChart: a release's Helm chart.
	PushChart(ctx context.Context, ref string, metadata any, tgz []byte) (string, error)
	// Attestations is registry.Client.Attestations: a release records each
	// platform's provenance attestation.
	Attestations(ctx context.Context, ref string) (map[string]string, error)
}

// Config configures a Worker.
type Config struct {
	// ID names the worker in leases and logs; default hostname-pid.
	ID string
	// Concurrency is how many builds run at once; default 1.
	Concurrency int
	// PollInterval is how often an idle worker looks for work without a NOTIFY; default 5s.
	PollInterval time.Duration
	// HeartbeatInterval is how often a running job's lease is renewed; default 5s.
	HeartbeatInterval time.Duration
	// StaleAfter is how old a lease may get before another worker rescues the job;
	// default 30s. Must exceed HeartbeatInterval several times over.
	StaleAfter time.Duration
	// BuildTimeout bounds one attempt of a build; default 1h.
	BuildTimeout time.Duration
	// WorkspaceDir holds the checkouts, one folder per build, removed afterwards.
	WorkspaceDir string
	// CloneAuth gives the credential of a private repository's clone (and of
	// its submodules on the same forge); nil: every clone is anonymous.
	CloneAuth forge.CloneAuth
	// RepoCredentials opens a repository's own clone token and deploy key
	// (slipway.RepoCredentialService); nil: only CloneAuth applies.
	RepoCredentials RepoCredentialOpener
	// RegistryAuths opens a repository's own registry credentials
	// (slipway.RegistryAuthService): a build of a repository with any uses
	// them before DockerConfig for their hosts in every registry call; nil:
	// only the worker's credentials apply.
	RegistryAuths RegistryAuthOpener
	// DockerConfig is the path of the worker's Docker config.json
	// (SLIPWAY_DOCKER_CONFIG), which a test Pod's auth file starts from when
	// the repository has credentials of its own; "" for none.
	DockerConfig string
	// Git is the clone URL policy and the environment of every git the worker
	// runs (slipway.GitPolicy): none of the worker's own variables, only the
	// transports it allows.
	Git slipway.GitPolicy
	// SubmoduleHosts are the hosts ("host" or "host:port") besides the
	// repository's own that submodules may be fetched from.
	SubmoduleHosts []string
	// SSHKnownHosts is the path of the OpenSSH known_hosts file that an ssh://
	// clone checks the server's host key against (SLIPWAY_SSH_KNOWN_HOSTS);
	// "" fails every ssh clone saying so.
	SSHKnownHosts string
	// InsecureRegistry marks the registry as plain HTTP.
	InsecureRegistry bool

	// PublicURL is where an external test system reaches slipway's API
	// (SLIPWAY_PUBLIC_URL), for the integration callback URL.
	PublicURL string
	// IntegrationSecret keys the HMAC-SHA256 signature of integration webhook
	// calls (SLIPWAY_INTEGRATION_SECRET).
	IntegrationSecret string
	// Integrations stores the one-time callbacks of external integration test
	// runs; while it is nil a build that asks for them fails.
	Integrations slipway.IntegrationService
	// Outbound says which hosts the integration webhook of .slipway.yml may
	// call (SLIPWAY_OUTBOUND_ALLOWED_HOSTS); nil allows none.
	Outbound *slipway.OutboundPolicy
	// Secrets opens the build secrets a .slipway.yml names; nil fails builds
	// that name any.
	Secrets SecretOpener
	// Promotions stores the audit rows of releases and holds the lock per
	// target repository (see package promote); nil writes none and locks
	// nothing.
	Promotions slipway.PromotionService
	// Releases stores the record of each release that succeeded; nil writes none.
	Releases slipway.ReleaseService
	// MaxAttempts bounds the attempts of a build that meets infrastructure
	// failures (a lost worker among them); default 3. Attempts handed back at
	// shutdown do not count.
	MaxAttempts int
	// RetryBackoff is the wait before the second attempt, doubled for each further
	// one up to RetryMaxBackoff; defaults 10s and 5m.
	RetryBackoff    time.Duration
	RetryMaxBackoff time.Duration
	// TestCases stores the cases of the JUnit reports tests name
	// (.slipway.yml's junit); nil stores none (the counts still reach the
	// test results).
	TestCases slipway.TestCaseService
	// Pods runs the tests that have services, one Pod per test and platform
	// (see package pod); nil fails them, saying PodsMissing. At New, the
	// Pods that killed workers of this host left behind are removed.
	Pods pod.Runtime
	// PodsMissing says why Pods is nil, for the error of such a test.
	PodsMissing string
	// PodLimits are the resource limits of each container of a test Pod;
	// default 2 CPUs and 2Gi.
	PodLimits pod.Limits
	// ShutdownGrace is how long running builds may go on once Run's context ends
	// before they are handed back to the queue; default 30s.
	ShutdownGrace time.Duration
}

func (c *Config) setDefaults() {
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 5 * time.Second
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 5 * time.Second
	}
	if c.StaleAfter <= 0 {
		c.StaleAfter = 30 * time.Second
	}
	if c.BuildTimeout <= 0 {
		c.BuildTimeout = time.Hour
	}
	if c.WorkspaceDir == "" {
		c.WorkspaceDir = os.TempDir()
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = 10 * time.Second
	}
	if c.RetryMaxBackoff <= 0 {
		c.RetryMaxBackoff = 5 * time.Minute
	}
	if c.PodLimits == (pod.Limits{}) {
		c.PodLimits = pod.Limits{CPU: "2", Memory: "2Gi"}
	}
	if c.Pods == nil && c.PodsMissing == "" {
		c.PodsMissing = "none configured"
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 30 * time.Second
	}
}

func (c *Config) retryPolicy() slipway.RetryPolicy {
	return slipway.RetryPolicy{MaxAttempts: c.MaxAttempts, Backoff: c.RetryBackoff, MaxBackoff: max(c.RetryBackoff, c.RetryMaxBackoff)}
}

func (c *Config) validate() error {
	if c.StaleAfter < 2*c.HeartbeatInterval {
		return fmt.Errorf("stale-after (%s) must be at least twice the heartbeat interval (%s)", c.StaleAfter, c.HeartbeatInterval)
	}
	return nil
}

// Worker runs builds from the queue.
type Worker struct {
	cfg      Config
	logger   zerolog.Logger
	builds   slipway.BuildService
	jobs     slipway.JobQueue
	builder  Builder
	registry Registry

	outboundOnce sync.Once
	outbound     *http.Client // see httpClient

	testSignals testSignals
}

// New returns a Worker. It does not start it: call Run.
func New(logger zerolog.Logger, cfg Config, builds slipway.BuildService, jobs slipway.JobQueue, builder Builder, reg Registry) (*Worker, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.WorkspaceDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating workspace dir: %w", err)
	}
	cleanWorkspaces(cfg.WorkspaceDir, logger)
	if cfg.Pods != nil {
		cleanPods(context.Background(), cfg.Pods, logger)
	}
	return &Worker{cfg: cfg, logger: logger.With().Str("worker_id", cfg.ID).Logger(),
		builds: builds, jobs: jobs, builder: builder, registry: reg}, nil
}

// ID returns the worker's id.
func (w *Worker) ID() string { return w.cfg.ID }

// Run claims and runs builds until ctx ends. Then it claims no more, lets the
// running builds go on for Config.ShutdownGrace, and hands those still running
// back to the queue (JobRelease), where they run again, on this worker or another,
// without counting as a failed attempt. It returns when every build has stopped.
func (w *Worker) Run(ctx context.Context) error {
	w.logger.Info().Int("concurrency", w.cfg.Concurrency).Msg("Worker started")
	// Builds run under their own context, so that ctx ending stops the claiming
	// at once but not the builds.
	buildCtx, stopBuilds := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopBuilds(nil)
	var running sync.WaitGroup

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { w.rescueLoop(ctx); return nil })
	slots := make(chan struct{}, w.cfg.Concurrency)
	g.Go(func() error {
		for {
			// Wait for a free slot before claiming, so a claimed job never waits.
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			// Taken before the claim: a NOTIFY during the claim still wakes us.
			wake := w.jobs.JobWorkSignal()
			jobs, err := w.jobs.JobClaim(ctx, w.cfg.ID, 1)
			if err != nil {
				<-slots
				if ctx.Err() != nil {
					return nil
				}
				w.logger.Error().Err(err).Msg("Claiming jobs")
				if err := sleepCtx(ctx, w.cfg.PollInterval); err != nil {
					return nil
				}
				continue
			}
			if len(jobs) == 0 {
				<-slots
				if err := waitWork(ctx, wake, w.cfg.PollInterval); err != nil {
					return nil
				}
				continue
			}
			job := jobs[0]
			running.Go(func() {
				defer func() { <-slots }()
				w.runJob(buildCtx, job)
			})
		}
	})
	err := g.Wait()

	done := make(chan struct{})
	go func() { running.Wait(); close(done) }()
	select {
	case <-done:
	default:
		w.logger.Info().Dur("grace", w.cfg.ShutdownGrace).Msg("Worker stopping; letting running builds finish")
		w.testSignals.graceStarted.signal(struct{}{})
		t := time.NewTimer(w.cfg.ShutdownGrace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			stopBuilds(errShutdown)
			<-done
		}
	}
	w.logger.Info().Msg("Worker stopped")
	return err
}

// rescueLoop gives jobs of dead workers back to the queue. Every worker runs it;
// SKIP LOCKED keeps them from rescuing the same job twice.
func (w *Worker) rescueLoop(ctx context.Context) {
	t := time.NewTicker(max(w.cfg.StaleAfter/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := w.jobs.JobRescueStuck(ctx, w.cfg.StaleAfter, w.cfg.retryPolicy()); err != nil && ctx.Err() == nil {
			w.logger.Error().Err(err).Msg("Rescuing stuck jobs")
		}
	}
}

// waitWork waits for wake, the poll interval d, or the end of ctx.
func waitWork(ctx context.Context, wake <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-wake:
		return nil
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// attempt is what runJob learns of an attempt besides its result.
type attempt struct {
	platforms []string // the platforms of the build, once the pipeline knows them
}

// runJob runs one attempt of a build under a heartbeat-renewed lease, and ends
// it as the pipeline's result and the build context's cause say (see
// buildFailure).
func (w *Worker) runJob(ctx context.Context, job *slipway.Job) {
	build := job.Build
	logger := w.logger.With().Int64("job_id", job.ID).Int64("build_id", job.BuildID).Int("attempt", job.Attempt).
		Str("repo", build.Repo).Logger()
	ctx = logger.WithContext(ctx)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ctx, cancelTimeout := context.WithTimeoutCause(ctx, w.cfg.BuildTimeout,
		fmt.Errorf("the build ran longer than its timeout of %s", w.cfg.BuildTimeout))
	defer cancelTimeout()

	// A superseding push reaches us by NOTIFY at once, or by the next heartbeat.
	cancelReq, unwatch := w.jobs.JobWatchCancel(job)
	defer unwatch()
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		w.heartbeat(ctx, job, cancel, cancelReq, logger)
	}()
	defer func() { cancel(nil); <-hbDone }()

	logger.Info().Str("ref", build.Ref).Str("commit", build.Commit).Msg("Build started")
	sinkCtx, stopSink := context.WithCancel(context.WithoutCancel(ctx))
	sink := newLogSink(build.ID, w.builds, logger)
	sinkDone := make(chan struct{})
	go func() { defer close(sinkDone); sink.Run(sinkCtx) }()
	finishLog := func() { stopSink(); <-sinkDone }

	started := time.Now()
	var att attempt
	w.testSignals.buildStarted.signal(build.ID)
	final, err := w.pipeline(ctx, job, build, sink, &att)

	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer ccancel()
	var (
		req     cancelRequest
		failure *buildFailure
	)
	errors.As(err, &failure)
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, errLeaseLost):
		sink.Add("", "", "This worker lost the build's lease; another worker runs it now.")
		finishLog()
		logger.Warn().Msg("Build abandoned: lease lost")
		w.testSignals.attemptEnded.signal(attemptEnd{build.ID, endAbandoned})
		return
	case errors.Is(cause, errShutdown):
		sink.Add("", "", "The worker shut down; the build goes back to the queue and runs again.")
		finishLog()
		if err := w.jobs.JobRelease(cctx, job, "the worker shut down before the build finished; handed back to the queue"); err != nil {
			logger.Error().Err(err).Msg("Releasing job")
			return
		}
		logger.Warn().Msg("Build handed back to the queue: shutdown")
		w.testSignals.attemptEnded.signal(attemptEnd{build.ID, endReleased})
		return
	case errors.As(cause, &req) && (err != nil || *final.State != slipway.BuildSucceeded):
		state := slipway.BuildCanceled
		final = slipway.BuildUpdate{State: &state, Error: &req.reason, Tests: final.Tests}
		if failure != nil {
			final.Tests = failure.tests
		}
	case IsInfra(err):
		sink.Add("", "", "Attempt failed for a reason of the infrastructure: "+err.Error())
		finishLog()
		retried, rerr := w.jobs.JobRetry(cctx, job, err.Error(), w.cfg.retryPolicy())
		if rerr != nil {
			logger.Error().Err(rerr).Msg("Retrying job")
			return
		}
		logger.Warn().Str("error", err.Error()).Bool("retried", retried).Msg("Build attempt met an infrastructure failure")
		w.testSignals.attemptEnded.signal(attemptEnd{build.ID, endRetried})
		return
	case failure != nil:
		state, msg := slipway.BuildFailed, failure.msg
		final = slipway.BuildUpdate{State: &state, Error: &msg, Tests: failure.tests}
	case err != nil:
		// The pipeline returns only buildFailures; anything else is a bug
		// that must still end the build.
		state, msg := slipway.BuildFailed, sink.mask(redactURLs(slipway.OneLine(err.Error())))
		final = slipway.BuildUpdate{State: &state, Error: &msg}
	}
	switch *final.State {
	case slipway.BuildFailed:
		sink.Add("", "", "Build failed: "+*final.Error)
	case slipway.BuildCanceled:
		sink.Add("", "", "Build canceled: "+*final.Error)
	default:
		sink.Add("", "", "Build "+string(*final.State)+".")
	}
	finishLog()
	if err := w.jobs.JobComplete(cctx, job, final); err != nil {
		logger.Error().Err(err).Msg("Completing job")
		return
	}
	metrics.BuildFinished(att.platforms, string(*final.State), time.Since(started))
	ev := logger.Info()
	if *final.State != slipway.BuildSucceeded {
		ev = logger.Warn().Str("error", *final.Error)
	}
	ev.Str("state", string(*final.State)).Msg("Build finished")
	w.testSignals.attemptEnded.signal(attemptEnd{build.ID, endCompleted})
}

// heartbeat renews the job's lease until ctx ends, and cancels the build when the
// lease is lost or the build is asked to stop.
func (w *Worker) heartbeat(ctx context.Context, job *slipway.Job, cancel context.CancelCauseFunc, cancelReq <-chan string, logger zerolog.Logger) {
	t := time.NewTicker(w.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case reason := <-cancelReq:
			logger.Info().Str("reason", reason).Msg("Build asked to stop")
			cancel(cancelRequest{reason})
			return
		case <-t.C:
		}
		res, err := w.jobs.JobHeartbeat(ctx, []*slipway.Job{job})
		if err != nil {
			if ctx.Err() == nil {
				logger.Warn().Err(err).Msg("Renewing lease")
			}
			continue
		}
		if len(res.Lost) > 0 {
			w.testSignals.leaseLost.signal(job.BuildID)
			cancel(errLeaseLost)
			return
		}
		if reason, ok := res.Cancel[job.ID]; ok {
			logger.Info().Str("reason", reason).Msg("Build asked to stop")
			cancel(cancelRequest{reason})
			return
		}
	}
}
