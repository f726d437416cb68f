package worker

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

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

func TestNoteInfra(t *testing.T) {
	t.Parallel()
	ctx, rec := withInfraRecord(context.Background())
	require.NoError(t, noteInfra(ctx, nil))
	noteInfra(ctx, errors.New("exit code: 1"))
	require.Nil(t, rec.get(), "a user error is not recorded")
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	noteInfra(canceled, status.Error(codes.Unavailable, "x"))
	require.Nil(t, rec.get(), "errors after the job's own cancel are not the infrastructure's")
	first := status.Error(codes.Unavailable, "first")
	noteInfra(ctx, first)
	noteInfra(ctx, status.Error(codes.Unavailable, "second"))
	require.Equal(t, first, rec.get())
}
