package devstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client"
)

// BuildkitdConfig is one buildkitd (bin/buildkitd, built by `make deps`): the
// OCI worker on runc, its own state folder and socket, plain HTTP to the
// registries in PlainHTTP.
type BuildkitdConfig struct {
	// Bin is the buildkitd binary.
	Bin string
	// Root is its state folder (--root).
	Root string
	// Dir holds buildkitd.toml and otel-grpc.sock. A unix socket path must fit
	// in 108 bytes: keep it short (not under t.TempDir()).
	Dir string
	// Addr is the socket, unix:///…/buildkitd.sock.
	Addr string
	// PlainHTTP lists registries (host:port) it speaks plain HTTP to.
	PlainHTTP []string
	// ExtraTOML is appended to buildkitd.toml, such as
	// `[registry."host"] ca = ["/path/ca.crt"]`.
	ExtraTOML string
	// Platforms lists platforms (linux/arm64) the worker must offer for
	// StartBuildkitd to succeed, e.g. those emulated through binfmt_misc.
	Platforms []string
}

// ConfigFile is the path of its buildkitd.toml.
func (c BuildkitdConfig) ConfigFile() string { return filepath.Join(c.Dir, "buildkitd.toml") }

// TOML returns buildkitd.toml.
func (c BuildkitdConfig) TOML() string {
	var b strings.Builder
	b.WriteString("[worker.oci]\n  enabled = true\n[worker.containerd]\n  enabled = false\n")
	for _, r := range c.PlainHTTP {
		fmt.Fprintf(&b, "[registry.%q]\n  http = true\n  insecure = true\n", r)
	}
	b.WriteString(c.ExtraTOML)
	return b.String()
}

// Args returns buildkitd's command-line arguments.
func (c BuildkitdConfig) Args() []string {
	// --otel-socket-path: the default, /run/buildkit/otel-grpc.sock, would be
	// shared by every buildkitd on the machine (make run beside make test).
	return []string{"--root", c.Root, "--addr", c.Addr,
		"--oci-worker=true", "--containerd-worker=false", "--config", c.ConfigFile(),
		"--otel-socket-path", filepath.Join(c.Dir, "otel-grpc.sock")}
}

// WriteConfig writes buildkitd.toml into c.Dir.
func (c BuildkitdConfig) WriteConfig() error {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(c.ConfigFile(), []byte(c.TOML()), 0o644)
}

// ErrNoPlatform is wrapped by StartBuildkitd when the worker lacks one of
// c.Platforms.
var ErrNoPlatform = errors.New("buildkitd's worker lacks a platform (is qemu registered with binfmt_misc? run make deps)")

// StartBuildkitd writes buildkitd.toml, starts buildkitd and waits until it
// lists a worker with every platform of c.Platforms. One that does not answer
// in time is stopped.
func StartBuildkitd(ctx context.Context, c BuildkitdConfig, o ProcOptions) (*Process, error) {
	if _, err := os.Stat(c.Bin); err != nil {
		return nil, fmt.Errorf("no %s: run make deps", c.Bin)
	}
	if err := c.WriteConfig(); err != nil {
		return nil, err
	}
	p, err := spawn(c.Bin, c.Args(), o)
	if err != nil {
		return nil, err
	}
	stop := func(err error) (*Process, error) {
		p.Stop(0)
		return nil, err
	}
	bk, err := client.New(ctx, c.Addr)
	if err != nil {
		return stop(err)
	}
	defer bk.Close()
	var workers []*client.WorkerInfo
	err = waitReady(ctx, "buildkitd on "+c.Addr, p.Exited(), o.timeout(), func(ctx context.Context) error {
		ws, err := bk.ListWorkers(ctx)
		if err == nil && len(ws) == 0 {
			err = errors.New("no worker yet")
		}
		workers = ws
		return err
	})
	if err != nil {
		return stop(err)
	}
	for _, want := range c.Platforms {
		if !offers(workers, want) {
			return stop(fmt.Errorf("%w: %s", ErrNoPlatform, want))
		}
	}
	return p, nil
}

// offers tells whether one of workers offers platform (os/arch), in any
// variant.
func offers(workers []*client.WorkerInfo, platform string) bool {
	for _, w := range workers {
		for _, p := range w.Platforms {
			if f := platforms.Format(p); f == platform || strings.HasPrefix(f, platform+"/") {
				return true
			}
		}
	}
	return false
}
