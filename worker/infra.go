package worker

import (
	"context"
	"errors"
	"net"
	"regexp"
	"sync"
	"syscall"

	"github.com/moby/buildkit/util/grpcerrors"
	"google.golang.org/grpc/codes"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/buildkit"
)

// An infrastructure failure is one the build's author cannot fix and that may
// pass: buildkitd unreachable or crashed, the registry answering 5xx or 429 or
// timing out. A build that met one is retried (Config.MaxAttempts); a user error,
// such as a failing RUN step or test, is not.
//
// The pipeline turns errors into one-line messages, so the worker learns of
// infrastructure failures by wrapping its Builder and Registry: each records an
// infrastructure error in the job's context as it passes, and runJob reads the
// record when the pipeline is done.

// IsInfra reports whether err is an infrastructure failure.
func IsInfra(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var se *slipway.Error
	if errors.As(err, &se) && se.Code == slipway.EUNAVAILABLE {
		return true
	}
	switch grpcerrors.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted:
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return true
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	// BuildKit reports a registry's answer and a lost connection as text only.
	return infraText.MatchString(err.Error())
}

var infraText = regexp.MustCompile(`(?i)connection refused|connection reset|broken pipe|transport is closing|` +
	`error reading from server|i/o timeout|TLS handshake timeout|unexpected status( code)?[^:]*: (5\d\d|429)|` +
	`(500 Internal Server Error|502 Bad Gateway|503 Service Unavailable|504 Gateway Timeout|429 Too Many Requests)|` +
	// A registry whose storage lost or mixed up an upload, as distribution's
	// filesystem driver does when two pushes of the same blob race: the build
	// computed the digest itself, so the content is not the author's fault.
	`failed to push .*(provided digest did not match uploaded content|blob unknown to registry)`)

type infraKey struct{}

// infraRecord holds the first infrastructure error a job's pipeline met.
type infraRecord struct {
	mu  sync.Mutex
	err error
}

func withInfraRecord(ctx context.Context) (context.Context, *infraRecord) {
	r := &infraRecord{}
	return context.WithValue(ctx, infraKey{}, r), r
}

// note records err when it is an infrastructure failure that is not the job's
// own cancellation, and returns err.
func noteInfra(ctx context.Context, err error) error {
	r, ok := ctx.Value(infraKey{}).(*infraRecord)
	if !ok || ctx.Err() != nil || !IsInfra(err) {
		return err
	}
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	return err
}

func (r *infraRecord) get() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// infraBuilder is a Builder that records infrastructure failures.
type infraBuilder struct{ Builder }

func (b infraBuilder) Build(ctx context.Context, spec buildkit.BuildSpec, log buildkit.LogFunc) (string, error) {
	d, err := b.Builder.Build(ctx, spec, log)
	return d, noteInfra(ctx, err)
}

func (b infraBuilder) RunTest(ctx context.Context, spec buildkit.TestSpec, log buildkit.LogFunc) (int, error) {
	code, err := b.Builder.RunTest(ctx, spec, log)
	return code, noteInfra(ctx, err)
}

// infraRegistry is a Registry that records infrastructure failures.
type infraRegistry struct{ Registry }

func (r infraRegistry) VerifyIndex(ctx context.Context, ref string, wanted []string) (string, []slipway.PlatformDigest, error) {
	d, p, err := r.Registry.VerifyIndex(ctx, ref, wanted)
	return d, p, noteInfra(ctx, err)
}

func (r infraRegistry) Tag(ctx context.Context, repo, digest string, tags []string) error {
	return noteInfra(ctx, r.Registry.Tag(ctx, repo, digest, tags))
}

func (r infraRegistry) Attestations(ctx context.Context, ref string) (map[string]string, error) {
	m, err := r.Registry.Attestations(ctx, ref)
	return m, noteInfra(ctx, err)
}
