// Package buildkit drives a BuildKit daemon (buildkitd) through its Go client:
// it builds Dockerfiles for several platforms into one pushed image index, and
// runs test commands inside a pushed image.
//
// The package logs nothing itself. Progress goes to the LogFunc a caller gives
// each call, and failures come back as errors whose Error() is one line that
// carries BuildKit's own message (for example `process "/bin/sh -c exit 3" did
// not complete successfully: exit code: 3`), without gRPC wrapping, so it can be
// shown to users as it is.
//
// A Builder is safe for concurrent use: any number of Build and RunTest calls
// may run at once; each is its own BuildKit session. Build and RunTest are not
// idempotent in effect (Build pushes, RunTest runs the command again, never from
// cache), but repeating one after a failure is safe.
package buildkit

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"

	"github.com/moby/buildkit/client"
)

// Config is the configuration of a Builder.
type Config struct {
	// Addr is the address of buildkitd: unix:///run/buildkit/buildkitd.sock or
	// tcp://host:1234. Required.
	Addr string
	// TLS for a tcp address, with buildctl's meaning: ServerName overrides the
	// name checked in the server's certificate, CACert is the CA file that
	// signs it, Cert and Key are the client's certificate and key files.
	// TLSDir, when set, fills those left empty from TLSDir/ca.pem, cert.pem
	// and key.pem, as buildctl --tlsdir does.
	ServerName, CACert, Cert, Key, TLSDir string
}

func (c *Config) fillTLS() {
	if c.TLSDir == "" {
		return
	}
	for _, f := range []struct {
		p    *string
		file string
	}{{&c.CACert, "ca.pem"}, {&c.Cert, "cert.pem"}, {&c.Key, "key.pem"}} {
		if *f.p == "" {
			*f.p = filepath.Join(c.TLSDir, f.file)
		}
	}
}

func (c Config) clientOpts() []client.ClientOpt {
	var opts []client.ClientOpt
	if c.CACert != "" || c.ServerName != "" {
		opts = append(opts, client.WithServerConfig(c.ServerName, c.CACert))
	}
	if c.Cert != "" || c.Key != "" {
		opts = append(opts, client.WithCredentials(c.Cert, c.Key))
	}
	return opts
}

func (c Config) validate() error {
	if c.Addr == "" {
		return errors.New("buildkit config: Addr is required")
	}
	u, err := url.Parse(c.Addr)
	if err != nil {
		return fmt.Errorf("buildkit config: Addr %q: %w", c.Addr, err)
	}
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return fmt.Errorf("buildkit config: Addr %q has no socket path", c.Addr)
		}
	case "tcp":
		if u.Host == "" || u.Port() == "" {
			return fmt.Errorf("buildkit config: Addr %q: want tcp://host:port", c.Addr)
		}
	default:
		return fmt.Errorf("buildkit config: Addr %q: scheme must be unix or tcp", c.Addr)
	}
	if (c.Cert == "") != (c.Key == "") {
		return fmt.Errorf("buildkit config: %s: tlscert and tlskey go together", c.Addr)
	}
	return nil
}

// Builder is a client of one buildkitd.
type Builder struct {
	c    *client.Client
	addr string
}

// New returns a Builder for the buildkitd at cfg.Addr. It checks the address
// but does not connect: the connection is made by the first call (use Ping to
// find out whether buildkitd answers).
func New(ctx context.Context, cfg Config) (*Builder, error) {
	cfg.fillTLS()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c, err := client.New(ctx, cfg.Addr, cfg.clientOpts()...)
	if err != nil {
		return nil, fmt.Errorf("connecting to buildkitd at %s: %w", cfg.Addr, err)
	}
	return &Builder{c: c, addr: cfg.Addr}, nil
}

// Close closes the connection to buildkitd. Calls running at that time fail.
func (b *Builder) Close() error {
	return b.c.Close()
}

// Ping lists buildkitd's workers: it proves buildkitd answers and can build,
// and is cheap enough for a readiness probe. It returns an error when buildkitd
// cannot be reached within ctx or has no worker.
func (b *Builder) Ping(ctx context.Context) error {
	ws, err := b.c.ListWorkers(ctx)
	if err != nil {
		return fmt.Errorf("pinging buildkitd: %w", cleanError(err))
	}
	if len(ws) == 0 {
		return errors.New("pinging buildkitd: it has no workers")
	}
	return nil
}

// LogFunc receives progress one line at a time, without the line break.
// platform is the platform the line belongs to ("linux/arm64"), or "" when it
// belongs to none or is not known. A Builder calls a LogFunc from one goroutine
// at a time and never after the call it was given to has returned. A nil
// LogFunc discards progress.
type LogFunc func(platform, text string)
