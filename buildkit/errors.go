package buildkit

import (
	"context"
	"regexp"

	"github.com/slipway-ci/slipway"
)

// grpcNoise matches what gRPC puts in front of a message that crossed the
// wire, possibly several times when an error passed through the gateway.
var grpcNoise = regexp.MustCompile(`rpc error: code = [A-Za-z]+ desc = `)

// bkError is an error from buildkitd with a message fit for users. It unwraps
// to the original error, so errors.As still finds BuildKit's typed errors (such
// as the exit code of a process).
type bkError struct {
	msg string
	err error
}

func (e *bkError) Error() string { return e.msg }
func (e *bkError) Unwrap() error { return e.err }

// cleanError returns err with a one-line message without gRPC wrapping.
func cleanError(err error) error {
	if err == nil {
		return nil
	}
	return &bkError{msg: cleanMessage(err.Error()), err: err}
}

func cleanMessage(s string) string {
	s = grpcNoise.ReplaceAllString(s, "")
	return slipway.OneLine(s)
}

// solveError wraps the error of a solve that did what: after ctx ended it is
// the cause of that (context.Canceled, a deadline, or the cause a caller gave
// context.WithCancelCause), so a cancel does not read as a build failure.
func solveError(ctx context.Context, what string, err error, repo RepoAuths) error {
	if ctx.Err() != nil {
		return &bkError{msg: what + ": " + context.Cause(ctx).Error(), err: context.Cause(ctx)}
	}
	return &bkError{msg: what + ": " + explainRegistry(cleanMessage(err.Error()), repo), err: err}
}
