// Command devstack starts and stops the services of a development or test
// stack under one state folder: PostgreSQL, a distribution registry and
// buildkitd (package test/devstack). scripts/services.sh builds and runs it;
// `make run`, `make test` and `make bench` go through that.
//
//	devstack [-root REPO] start STATE_DIR  start all three on 127.0.0.1, wait until each
//	                                       answers, write STATE_DIR/env (export lines)
//	devstack stop STATE_DIR                stop whatever runs under STATE_DIR, also after
//	                                       a partial start
//	devstack purge STATE_DIR               stop, then delete STATE_DIR
//
// Settings (environment):
//
//	SLIPWAY_PG_PORT        PostgreSQL port on 127.0.0.1; empty or 0: a free one
//	SLIPWAY_REGISTRY_PORT  registry port on 127.0.0.1; empty or 0: a free one
//	SLIPWAY_PG_OPTIONS     extra postgres options, e.g. "-c fsync=off"
//	SLIPWAY_READY_TIMEOUT  seconds to wait for each service (default 60)
//	SLIPWAY_BIN_DIR        where `make deps` put buildkitd (default REPO/bin)
//	SLIPWAY_CACHE_DIR      where `make deps` put the busybox .debs (default REPO/.cache)
//
// Logs go to STATE_DIR/logs/*.log; a failed start prints the end of the log
// of the service that failed and leaves nothing running.
//
// It is a command of its own under test/, not a `slipway dev` flag: starting
// initdb, docker-registry and buildkitd is development tooling, and the
// shipped binary should not carry it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/slipway-ci/slipway/test/devstack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "services:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "", "the repository (default: the module root above the working directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return fmt.Errorf("usage: devstack [-root REPO] start|stop|purge STATE_DIR")
	}
	state := fs.Arg(1)
	switch fs.Arg(0) {
	case "start":
		o := devstack.Options{State: state, Root: *root, BinDir: getenv("SLIPWAY_BIN_DIR"),
			CacheDir: getenv("SLIPWAY_CACHE_DIR"), PGOptions: getenv("SLIPWAY_PG_OPTIONS"), Log: stderr}
		var err error
		if o.PGPort, err = port(getenv, "SLIPWAY_PG_PORT"); err != nil {
			return err
		}
		if o.RegistryPort, err = port(getenv, "SLIPWAY_REGISTRY_PORT"); err != nil {
			return err
		}
		if v := getenv("SLIPWAY_READY_TIMEOUT"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return fmt.Errorf("SLIPWAY_READY_TIMEOUT=%q: want a number of seconds above 0", v)
			}
			o.Timeout = time.Duration(n) * time.Second
		}
		_, err = devstack.Start(ctx, o)
		return err
	case "stop":
		return devstack.Stop(state, stderr)
	case "purge":
		return devstack.Purge(state, stderr)
	}
	return fmt.Errorf("unknown command %q: usage: devstack [-root REPO] start|stop|purge STATE_DIR", fs.Arg(0))
}

// port reads a port setting: empty or 0 is 0 (a free one).
func port(getenv func(string) string, key string) (int, error) {
	v := getenv(key)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("%s=%q: want a port number, or 0 for a free one", key, v)
	}
	return n, nil
}
