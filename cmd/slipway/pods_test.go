package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/pod"
)

// TestPodsNotConfigured: a worker whose podman cannot run (the Helm chart's
// workers: the release image has none) fails a test with services with a
// message that names SLIPWAY_PODMAN, what went wrong, and where Pod tests do
// run, not one that sends a Kubernetes user to scripts/deps.sh.
func TestPodsNotConfigured(t *testing.T) {
	t.Parallel()
	_, err := pod.NewPodman(context.Background(), pod.PodmanConfig{Binary: "no-such-podman", ConfDir: t.TempDir()})
	require.Error(t, err)
	msg := podsNotConfigured("no-such-podman", err)
	require.Contains(t, msg, "Pod tests are not configured here: SLIPWAY_PODMAN=no-such-podman does not run (podman version: ")
	require.Contains(t, msg, `"no-such-podman": executable file not found`)
	require.Contains(t, msg, "docker-compose.yml's workers")
	require.Contains(t, msg, "the Helm chart")
	require.NotContains(t, msg, "scripts/deps.sh")
	require.Contains(t, podsNotConfigured("", err), "SLIPWAY_PODMAN=podman does not run")

	// Another reason stays whole.
	dir := t.TempDir()
	_, err = pod.NewPodman(context.Background(), pod.PodmanConfig{Binary: "no-such-podman", ConfDir: dir, CAFile: filepath.Join(dir, "nope.pem")})
	require.Error(t, err)
	require.Contains(t, podsNotConfigured("podman", err), "(reading the CA bundle for podman's pulls: open ")
}
