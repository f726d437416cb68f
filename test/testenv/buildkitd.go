package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
)

// Buildkitd is a buildkitd a test started for itself, as scripts/services.sh
// starts the shared one: bin/buildkitd, OCI worker on runc, its own root and
// socket, plain http to the given registries.
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
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "buildkitd")
	if _, err := os.Stat(bin); err != nil || os.Geteuid() != 0 {
		t.Skip("a private buildkitd needs bin/buildkitd (make deps) and root")
	}
	// A unix socket path must fit in 108 bytes: t.TempDir() may be too long.
	dir, err := os.MkdirTemp("", "slipway-bk-")
	if err != nil {
		t.Fatal(err)
	}
	b := &Buildkitd{Addr: "unix://" + filepath.Join(dir, "buildkitd.sock"), Root: filepath.Join(dir, "root")}
	var cfg bytes.Buffer
	cfg.WriteString("[worker.oci]\n  enabled = true\n[worker.containerd]\n  enabled = false\n")
	for _, r := range registries {
		fmt.Fprintf(&cfg, "[registry.%q]\n  http = true\n  insecure = true\n", r)
	}
	cfg.WriteString(extraTOML)
	if err := os.WriteFile(filepath.Join(dir, "buildkitd.toml"), cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--root", b.Root, "--addr", b.Addr,
		"--oci-worker=true", "--containerd-worker=false", "--config", filepath.Join(dir, "buildkitd.toml"),
		"--otel-socket-path", filepath.Join(dir, "otel-grpc.sock"))
	cmd.Stdout, cmd.Stderr = b, b
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		// runc leaves read-only bits behind that RemoveAll handles as root.
		_ = os.RemoveAll(dir)
	})
	c, err := client.New(context.Background(), b.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ws, err := c.ListWorkers(ctx)
		cancel()
		if err == nil && len(ws) > 0 {
			return b
		}
		select {
		case <-exited:
			t.Fatalf("buildkitd exited at start:\n%s", b.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("buildkitd did not answer within 60s: %v\n%s", err, b.Log())
		}
		// Bounded polling of another process, not synchronisation within ours.
		time.Sleep(100 * time.Millisecond)
	}
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
