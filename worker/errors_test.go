package worker

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/slipway-ci/slipway"
)

func TestIsInfra(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		err   error
		infra bool
	}{
		{"nil", nil, false},
		{"grpc unavailable", fmt.Errorf("building x: %w", status.Error(codes.Unavailable, "connection error")), true},
		{"buildkitd died mid-solve", errors.New("building x: failed to receive status: error reading from server: EOF"), true},
		{"socket gone", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), true},
		{"registry 5xx from the registry client", fmt.Errorf("tagging: %w", slipway.Errorf(slipway.EUNAVAILABLE, "registry answered 503")), true},
		{"registry 5xx through BuildKit", errors.New(`failed to push x: unexpected status from PUT request to http://r/v2/x/manifests/y: 502 Bad Gateway`), true},
		{"registry upload race through BuildKit", errors.New(`failed to solve: failed to push r/x:sha-1: errors: unknown: provided digest did not match uploaded content unknown: blob unknown to registry - sha256:ab`), true},
		{"registry timeout", errors.New("failed to do request: Head http://r/v2/: dial tcp: i/o timeout"), true},
		{"failing RUN step", errors.New(`process "/bin/sh -c exit 3" did not complete successfully: exit code: 3`), false},
		{"Dockerfile parse error", errors.New("dockerfile parse error on line 2: unknown instruction: FOO"), false},
		{"registry refuses", fmt.Errorf("tagging: %w", slipway.Errorf(slipway.EFORBIDDEN, "registry answered 403")), false},
		{"own cancel", fmt.Errorf("building: %w", context.Canceled), false},
	} {
		require.Equal(t, tc.infra, IsInfra(tc.err), tc.name)
	}
}

// TestBuildFailure: a pipeline failure is the infrastructure's only when a
// Builder or Registry error that is stands behind it, and never once the
// build's own context has ended; its message is one line and masked.
func TestBuildFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sink := newLogSink(1, nil, zerolog.Nop())
	sink.Mask([][]byte{[]byte("hunter2-secret")})
	unavailable := status.Error(codes.Unavailable, "connection error")

	f := newFailure(ctx, sink, "build failed: x\nhunter2-secret", fmt.Errorf("building: %w", fromService(unavailable)))
	require.True(t, IsInfra(f))
	require.Equal(t, "build failed: x *** ", f.Error()+" ")
	require.ErrorIs(t, f, unavailable)

	// The same text from git, not from the Builder or the Registry.
	require.False(t, IsInfra(newFailure(ctx, sink, "checkout failed: connection refused", errors.New("connection refused"))))
	require.False(t, IsInfra(newFailure(ctx, sink, "build failed", fromService(errors.New("exit code: 3")))), "a user error of the builder")
	require.False(t, IsInfra(newFailure(ctx, sink, "no cause")))
	require.True(t, IsInfra(newFailure(ctx, sink, "test failed", fromService(errors.New("exit code: 1")), fromService(unavailable))),
		"one of the errors behind a failure is enough")

	canceled, cancel := context.WithCancelCause(ctx)
	cancel(errors.New("timed out after 1s"))
	f = newFailure(canceled, sink, "build failed: transport is closing", fromService(unavailable))
	require.False(t, IsInfra(f), "errors after the build's own context ended are not the infrastructure's")
	require.Equal(t, "timed out after 1s", f.Error())
}
