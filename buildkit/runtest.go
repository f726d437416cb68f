package buildkit

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	gateway "github.com/moby/buildkit/frontend/gateway/client"
	gatewayapi "github.com/moby/buildkit/frontend/gateway/pb"
	"golang.org/x/sync/errgroup"
)

// TestSpec says what RunTest runs, and where.
type TestSpec struct {
	// Image is the image to run in, by digest: repo@sha256:…. Required.
	Image string
	// Platform is the platform of Image to run, such as linux/arm64. Required.
	Platform string
	// Args is the command, exec'd as it is (no shell). A caller that has a
	// command line passes []string{"sh", "-c", line}. Required.
	Args []string
	// Env holds KEY=VALUE pairs added to the image's environment.
	Env []string
	// Insecure says the registry of Image speaks plain http. It is informative
	// only: buildkitd pulls with its own registry configuration, which an LLB
	// image source cannot override. buildkitd speaks plain http to localhost
	// and 127.0.0.1 by itself, and to other hosts only when buildkitd.toml
	// says [registry."host:port"] http = true.
	Insecure bool
	// Auth gives the pull of Image registry credentials (see Auth).
	Auth Auth
	// RepoAuths are the repository's own registry credentials for the pull
	// (see BuildSpec.RepoAuths).
	RepoAuths RepoAuths
}

func (s *TestSpec) validate() error {
	if s.Image == "" {
		return errors.New("test spec: Image is required")
	}
	if s.Platform == "" {
		return errors.New("test spec: Platform is required")
	}
	if len(s.Args) == 0 {
		return errors.New("test spec: Args is empty")
	}
	for _, kv := range s.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("test spec: Env %q is not KEY=VALUE", kv)
		}
	}
	return nil
}

// RunTest runs spec.Args inside spec.Image for spec.Platform, with the image's
// environment, working directory and user, as a BuildKit exec that is never
// served from cache, and returns the exit code of the process. Its output goes
// to log line by line, with spec.Platform; the step names BuildKit reports
// (resolving and pulling the image, the command) go there too.
//
// A process that exits non-zero is not a Go error: RunTest returns its code
// and nil. A command that cannot be started (not found in the image) counts as
// a process that failed: runc's reason goes to log and BuildKit reports exit
// code 1 (255 when it cannot tell). Everything else is
// an error with a one-line message: a bad spec, an image that cannot be pulled,
// buildkitd gone. Canceling ctx kills the process and returns an error that
// matches context.Canceled (or the cause of ctx).
func (b *Builder) RunTest(ctx context.Context, spec TestSpec, log LogFunc) (exitCode int, err error) {
	if err := spec.validate(); err != nil {
		return -1, err
	}
	p, err := platforms.Parse(spec.Platform)
	if err != nil {
		return -1, fmt.Errorf("test spec: platform %q: %w", spec.Platform, err)
	}
	p = platforms.Normalize(p)
	if log == nil {
		log = func(string, string) {}
	}

	run := func(ctx context.Context, gw gateway.Client) (*gateway.Result, error) {
		// The meta resolver reads the image config, so the process gets the
		// image's ENV, WORKDIR and USER as `docker run` would give it.
		st := llb.Image(spec.Image, llb.Platform(p), llb.WithMetaResolver(gw))
		opts := []llb.RunOption{
			llb.Args(spec.Args),
			// The point of a test is to run: never answer from the cache.
			llb.IgnoreCache,
			llb.WithCustomName(fmt.Sprintf("[%s] %s", spec.Platform, strings.Join(spec.Args, " "))),
		}
		for _, kv := range spec.Env {
			k, v, _ := strings.Cut(kv, "=")
			opts = append(opts, llb.AddEnv(k, v))
		}
		def, err := st.Run(opts...).Root().Marshal(ctx, llb.Platform(p))
		if err != nil {
			return nil, err
		}
		return gw.Solve(ctx, gateway.SolveRequest{Definition: def.ToPB(), Evaluate: true})
	}

	var opt client.SolveOpt
	ap, err := spec.Auth.attachable(spec.RepoAuths, spec.Image)
	if err != nil {
		return 0, fmt.Errorf("running test in %s: %w", spec.Image, err)
	}
	if ap != nil {
		opt.Session = append(opt.Session, ap)
	}
	prog := newProgress(log, spec.Platform)
	ch := make(chan *client.SolveStatus)
	eg, egctx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		_, err := b.c.Build(egctx, opt, "slipway", run, ch) // closes ch
		return err
	})
	eg.Go(func() error {
		prog.consume(ch)
		return nil
	})
	err = eg.Wait()
	if err == nil {
		return 0, nil
	}
	what := fmt.Sprintf("running test in %s for %s", spec.Image, spec.Platform)
	var exit *gatewayapi.ExitError
	if ctx.Err() == nil && errors.As(err, &exit) {
		return int(exit.ExitCode), nil
	}
	return -1, solveError(ctx, what, err, spec.RepoAuths)
}
