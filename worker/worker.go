// Package worker claims builds from the queue and runs them: checkout of the exact
// commit, a multi-platform BuildKit build pushed to the registry, verification of
// the pushed index, integration tests inside the image on every platform, and the
// branch or tag name added only once the tests pass.
package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/buildkit"
	"github.com/slipway-ci/slipway/metrics"
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
	// InsecureRegistry marks the registry as plain HTTP.
	InsecureRegistry bool
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
	return &Worker{cfg: cfg, logger: logger.With().Str("worker_id", cfg.ID).Logger(),
		builds: builds, jobs: jobs, builder: builder, registry: reg}, nil
}

// ID returns the worker's id.
func (w *Worker) ID() string { return w.cfg.ID }

// Run claims and runs builds until ctx ends. Builds running then are canceled;
// their leases lapse and another worker takes them over.
func (w *Worker) Run(ctx context.Context) error {
	w.logger.Info().Int("concurrency", w.cfg.Concurrency).Msg("Worker started")
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
				if err := w.jobs.JobWaitForWork(ctx, w.cfg.PollInterval); err != nil {
					return nil
				}
				continue
			}
			job := jobs[0]
			g.Go(func() error {
				defer func() { <-slots }()
				w.runJob(ctx, job)
				return nil
			})
		}
	})
	err := g.Wait()
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
		if _, err := w.jobs.JobRescueStuck(ctx, w.cfg.StaleAfter); err != nil && ctx.Err() == nil {
			w.logger.Error().Err(err).Msg("Rescuing stuck jobs")
		}
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

// errLeaseLost is the cancel cause when another worker took the job over.
var errLeaseLost = errors.New("lease lost: another worker took this build over")

// runJob runs one attempt of a build under a heartbeat-renewed lease.
func (w *Worker) runJob(ctx context.Context, job *slipway.Job) {
	parent := ctx
	logger := w.logger.With().Int64("job_id", job.ID).Int64("build_id", job.BuildID).Int("attempt", job.Attempt).Logger()
	ctx = metrics.WithBuild(logger.WithContext(ctx))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ctx, cancelTimeout := context.WithTimeoutCause(ctx, w.cfg.BuildTimeout,
		fmt.Errorf("the build ran longer than its timeout of %s", w.cfg.BuildTimeout))
	defer cancelTimeout()

	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		w.heartbeat(ctx, job, cancel, logger)
	}()
	defer func() { cancel(nil); <-hbDone }()

	build, err := w.builds.FindBuildByID(ctx, job.BuildID)
	if err != nil {
		logger.Error().Err(err).Msg("Loading build")
		return
	}
	logger = logger.With().Str("repo", build.Repo).Logger()
	ctx = logger.WithContext(ctx)
	logger.Info().Str("ref", build.Ref).Str("commit", build.Commit).Msg("Build started")

	sinkCtx, stopSink := context.WithCancel(context.WithoutCancel(ctx))
	sink := newLogSink(build.ID, w.builds, logger)
	sinkDone := make(chan struct{})
	go func() { defer close(sinkDone); sink.Run(sinkCtx) }()
	finishLog := func() { stopSink(); <-sinkDone }

	started := time.Now()
	final := w.pipeline(ctx, job, build, sink)

	switch {
	case errors.Is(context.Cause(ctx), errLeaseLost):
		sink.Add("", "", "This worker lost the build's lease; another worker runs it now.")
		finishLog()
		logger.Warn().Msg("Build abandoned: lease lost")
		return
	case parent.Err() != nil:
		// The worker is shutting down: the lease lapses and another worker runs the
		// build again, instead of failing a build that did nothing wrong.
		sink.Add("", "", "The worker stopped; the build will run again on another worker.")
		finishLog()
		logger.Warn().Msg("Build interrupted by shutdown")
		return
	}
	if *final.State == slipway.BuildFailed {
		sink.Add("", "", "Build failed: "+*final.Error)
	} else {
		sink.Add("", "", "Build "+string(*final.State)+".")
	}
	finishLog()
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer ccancel()
	if err := w.jobs.JobComplete(cctx, job, final); err != nil {
		logger.Error().Err(err).Msg("Completing job")
		return
	}
	metrics.BuildFinished(ctx, string(*final.State), time.Since(started))
	ev := logger.Info()
	if *final.State != slipway.BuildSucceeded {
		ev = logger.Warn().Str("error", *final.Error)
	}
	ev.Str("state", string(*final.State)).Msg("Build finished")
}

func (w *Worker) heartbeat(ctx context.Context, job *slipway.Job, cancel context.CancelCauseFunc, logger zerolog.Logger) {
	t := time.NewTicker(w.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lost, err := w.jobs.JobHeartbeat(ctx, []*slipway.Job{job})
		if err != nil {
			if ctx.Err() == nil {
				logger.Warn().Err(err).Msg("Renewing lease")
			}
			continue
		}
		if len(lost) > 0 {
			cancel(errLeaseLost)
			return
		}
	}
}
