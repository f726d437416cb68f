package worker

import (
	"context"
	"errors"
	"net"
	"regexp"
	"slices"
	"syscall"

	"github.com/moby/buildkit/util/grpcerrors"
	"google.golang.org/grpc/codes"

	"github.com/slipway-ci/slipway"
)

// An infrastructure failure is one the build's author cannot fix and that may
// pass: buildkitd unreachable or crashed, the registry answering 5xx or 429 or
// timing out. A build that met one is retried (Config.MaxAttempts); a user error,
// such as a failing RUN step or test, is not.
//
// The pipeline returns what went wrong as an error, and runJob tells once, from
// that error and the cause of the build's context, how the attempt ends:
//
//   - errLeaseLost (cause): another worker runs the build now; nothing is written.
//   - errShutdown (cause): the worker stopped; the build goes back to the queue.
//   - cancelRequest (cause): a user's cancel or a newer build of the same ref
//     (superseded); the build ends canceled with the request's reason.
//   - a *buildFailure that IsInfra: the attempt is retried (JobRetry).
//   - any other *buildFailure: the build fails with its one-line message.
//
// Only an error of the Builder or the Registry can be the infrastructure's (a
// git, pod or database error is reported as it is): the pipeline marks each as
// it comes back (serviceError), and a buildFailure keeps those behind it. The
// marked calls are Build, RunTest, VerifyIndex, Tag and Attestations; a
// release's promotion (Resolve, Retag) and chart push fail the build as they
// always have, without a retry.

// buildFailure is how the pipeline fails: msg is the one line the build
// shows (masked, without credentials); cause holds the Builder and Registry
// errors behind it, which IsInfra judges, and is nil when there were none or
// when the build's own context had ended (a timeout or a cancel is never the
// infrastructure's); tests are the results to keep, nil to leave them as the
// build has them.
type buildFailure struct {
	msg   string
	cause error
	tests []slipway.TestResult
}

func (f *buildFailure) Error() string { return f.msg }
func (f *buildFailure) Unwrap() error { return f.cause }

// newFailure returns the failure with msg, behind which are errs. When ctx
// has ended, its cause is the message instead: a timeout reads better than
// the "context canceled" a step returned.
func newFailure(ctx context.Context, sink *logSink, msg string, errs ...error) *buildFailure {
	f := &buildFailure{}
	if cause := context.Cause(ctx); ctx.Err() != nil && cause != nil {
		msg = cause.Error()
	} else {
		var causes []error
		for _, err := range errs {
			var se serviceError
			if errors.As(err, &se) {
				causes = append(causes, se.err)
			}
		}
		f.cause = errors.Join(causes...)
	}
	f.msg = sink.mask(redactURLs(slipway.OneLine(msg)))
	return f
}

// serviceError is an error as the Builder or the Registry returned it, marked
// so that a buildFailure may find it however the pipeline wrapped it (%w).
type serviceError struct{ err error }

func (e serviceError) Error() string { return e.err.Error() }
func (e serviceError) Unwrap() error { return e.err }

// fromService marks err, an error of the Builder or the Registry; nil stays nil.
func fromService(err error) error {
	if err == nil {
		return nil
	}
	return serviceError{err}
}

// errLeaseLost is the cancel cause when another worker took the job over.
var errLeaseLost = errors.New("lease lost: another worker took this build over")

// errShutdown is the cancel cause when the worker stopped and the shutdown grace
// period ran out.
var errShutdown = errors.New("the worker shut down; the build goes back to the queue")

// cancelRequest is the cancel cause when the build was asked to stop: a
// user's cancel, or "superseded by build 7".
type cancelRequest struct{ reason string }

func (c cancelRequest) Error() string { return c.reason }

// IsInfra reports whether err is an infrastructure failure. A failure of the
// pipeline is one when an error behind it is; of errors joined with
// errors.Join, one is enough.
func IsInfra(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var f *buildFailure
	if errors.As(err, &f) {
		return IsInfra(f.cause)
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return slices.ContainsFunc(j.Unwrap(), IsInfra)
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
