package testenv

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/slipway-ci/slipway/test/devstack"
)

// Buildkitd is a buildkitd a test started for itself, configured as the
// stack's shared one (devstack.BuildkitdConfig): bin/buildkitd, OCI worker on
// runc, its own root and socket, plain http to the given registries.
type Buildkitd struct {
	Addr string // unix:///…/buildkitd.sock
	Root string

	mu  sync.Mutex
	log bytes.Buffer
}

// StartBuildkitd starts a private buildkitd that speaks plain http to each of
// registries (host:port), waits until it answers, and stops it when the test
// ends. It skips the test when bin/buildkitd is missing or the test does not
// run as root.
func StartBuildkitd(t testing.TB, registries ...string) *Buildkitd {
	t.Helper()
	return StartBuildkitdConfig(t, "", registries...)
}

// StartBuildkitdConfig is StartBuildkitd with extra lines for its
// buildkitd.toml, such as `[registry."host"] ca = ["/path/ca.crt"]`.
func StartBuildkitdConfig(t testing.TB, extraTOML string, registries ...string) *Buildkitd {
	t.Helper()
	binDir, err := devstack.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "buildkitd")
	if _, err := os.Stat(bin); err != nil || os.Geteuid() != 0 {
		t.Skip("a private buildkitd needs bin/buildkitd (make deps) and root")
	}
	// A unix socket path must fit in 108 bytes: t.TempDir() may be too long.
	dir, err := os.MkdirTemp("", "slipway-bk-")
	if err != nil {
		t.Fatal(err)
	}
	b := &Buildkitd{Addr: "unix://" + filepath.Join(dir, "buildkitd.sock"), Root: filepath.Join(dir, "root")}
	p, err := devstack.StartBuildkitd(context.Background(), devstack.BuildkitdConfig{
		Bin: bin, Root: b.Root, Dir: dir, Addr: b.Addr, PlainHTTP: registries, ExtraTOML: extraTOML,
	}, devstack.ProcOptions{Log: b})
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("%v\n%s", err, b.Log())
	}
	t.Cleanup(func() {
		p.Stop(30 * time.Second)
		// runc leaves read-only bits behind that RemoveAll handles as root.
		_ = os.RemoveAll(dir)
	})
	return b
}

// Write collects buildkitd's output.
func (b *Buildkitd) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.Write(p)
}

// Log returns what buildkitd printed so far.
func (b *Buildkitd) Log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.String()
}
