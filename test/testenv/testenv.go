// Package testenv holds the parts that slipway's end-to-end tests and the
// `make run` demo share: a two-platform busybox base image built from
// Debian's busybox-static packages, git repositories served by git daemon,
// and signed webhook payloads made from real forge fixtures.
//
// The shared PostgreSQL, registry and buildkitd are started by `make test`
// (scripts/services.sh, package test/devstack), which exports
// TEST_DATABASE_URL, TEST_REGISTRY and BUILDKIT_HOST. Tests read them with
// [Getenv], which skips a test when its variable is unset. The extra
// registries and buildkitds a test starts for itself ([StartRegistry],
// [StartSecureRegistry], [StartBuildkitd]) are configured by devstack too.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/slipway-ci/slipway/test/devstack"
)

// Environment variables that `make test` exports (devstack.Env).
const (
	// EnvDatabaseURL is a PostgreSQL URL for tests; the role is a superuser.
	EnvDatabaseURL = "TEST_DATABASE_URL"
	// EnvRegistry is the host:port of a plain-HTTP registry on loopback.
	EnvRegistry = "TEST_REGISTRY"
	// EnvBuildkitHost is buildkitd's address, as buildctl reads it.
	EnvBuildkitHost = "BUILDKIT_HOST"
	// EnvBusyboxDebs is the folder holding busybox-static_*_{amd64,arm64}.deb.
	EnvBusyboxDebs = "SLIPWAY_BUSYBOX_DEBS"
	// EnvFixtures overrides the webhooks samples folder (with github/, gitlab/, gitea/).
	EnvFixtures = "SLIPWAY_FIXTURES"
)

// Getenv returns the environment variable key, or skips the test when it is
// unset: the real services it names are started by `make test`.
func Getenv(tb testing.TB, key string) string {
	tb.Helper()
	v := os.Getenv(key)
	if v == "" {
		tb.Skipf("%s is not set: run the tests with `make test`, which starts PostgreSQL, a registry and buildkitd", key)
	}
	return v
}

// RepoRoot returns the root folder of the slipway module (devstack.RepoRoot).
func RepoRoot() (string, error) { return devstack.RepoRoot() }

// FixturesDir returns the webhooks samples folder (with github/, gitlab/,
// gitea/): $SLIPWAY_FIXTURES, or slipway's own samples in
// forge/testdata/webhooks (written after each forge's documented payloads),
// so a fresh clone needs nothing beside it.
func FixturesDir() (string, error) {
	dir := os.Getenv(EnvFixtures)
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "forge", "testdata", "webhooks")
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("finding the webhook samples: %s is not a folder (set %s)", dir, EnvFixtures)
	}
	return filepath.Clean(dir), nil
}

// FixturePath returns the path of a webhook fixture, e.g.
// FixturePath("github", "push-branch.json").
func FixturePath(elem ...string) (string, error) {
	dir, err := FixturesDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(append([]string{dir}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("finding fixture %s: %w", filepath.Join(elem...), err)
	}
	return p, nil
}

// errNoDebs is wrapped by BusyboxDebs when the packages are missing.
var errNoDebs = errors.New("busybox-static packages not found: run `make deps`")
