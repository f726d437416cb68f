// Package devstack starts and stops the real services slipway runs against in
// development and tests, all under one state folder: a PostgreSQL cluster
// (Debian's initdb and pg_ctl), a distribution registry (docker-registry)
// and buildkitd (bin/buildkitd). `make run`, `make test` and `make bench` use
// it through test/cmd/devstack (scripts/services.sh); test/testenv starts
// the extra registries and buildkitds some tests need with the same
// RegistryConfig and BuildkitdConfig, so each is configured here only.
//
// Start leaves the services running (each in a session of its own, its pid
// in STATE/run/NAME.pid) and writes STATE/env, export lines to source; Stop
// stops them, also after a partial start; Purge stops them and deletes the
// state folder. Logs go to STATE/logs/*.log.
//
// It lives under test/: the shipped binary (cmd/slipway) never imports it.
package devstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options configures Start. Only State is required.
type Options struct {
	// State is the state folder; it is made when missing.
	State string
	// Root is the repository (RepoRoot when empty).
	Root string
	// BinDir holds buildkitd (Root/bin when empty; SLIPWAY_BIN_DIR).
	BinDir string
	// CacheDir holds `make deps`'s busybox .debs in debs/ (Root/.cache when
	// empty; SLIPWAY_CACHE_DIR).
	CacheDir string
	// PGPort and RegistryPort are ports on 127.0.0.1; 0 picks a free one.
	PGPort, RegistryPort int
	// PGOptions are extra postgres options, e.g. "-c fsync=off".
	PGOptions string
	// Timeout bounds the wait for each service; 0 means 60 s.
	Timeout time.Duration
	// Log receives progress messages (nothing when nil).
	Log io.Writer
}

func (o Options) timeout() time.Duration {
	if o.Timeout <= 0 {
		return 60 * time.Second
	}
	return o.Timeout
}

// Env is what Start writes to STATE/env, each field as the variables named
// beside it.
type Env struct {
	DatabaseURL     string // SLIPWAY_DATABASE_URL: database slipway
	TestDatabaseURL string // TEST_DATABASE_URL: database slipway_test (a superuser)
	BuildkitAddr    string // SLIPWAY_BUILDKIT_ADDR and BUILDKIT_HOST: unix:///…/buildkitd.sock
	Registry        string // SLIPWAY_REGISTRY and TEST_REGISTRY: 127.0.0.1:PORT, plain HTTP
	BusyboxDebs     string // SLIPWAY_BUSYBOX_DEBS: CacheDir/debs
	State           string // SLIPWAY_SERVICES_STATE
}

// File returns the env file: a comment, then one `export NAME='value'` line
// per variable.
func (e Env) File() string {
	var b strings.Builder
	b.WriteString("# Written by scripts/services.sh start (test/cmd/devstack); source it.\n")
	line := func(k, v string) { fmt.Fprintf(&b, "export %s='%s'\n", k, v) }
	line("SLIPWAY_DATABASE_URL", e.DatabaseURL)
	line("TEST_DATABASE_URL", e.TestDatabaseURL)
	line("SLIPWAY_BUILDKIT_ADDR", e.BuildkitAddr)
	line("BUILDKIT_HOST", e.BuildkitAddr)
	line("SLIPWAY_REGISTRY", e.Registry)
	line("TEST_REGISTRY", e.Registry)
	line("SLIPWAY_BUSYBOX_DEBS", e.BusyboxDebs)
	line("SLIPWAY_SERVICES_STATE", e.State)
	return b.String()
}

// ErrRunning is returned by Start when services already run under the state
// folder.
var ErrRunning = errors.New("services already run")

// stack is one state folder's services.
type stack struct {
	o     Options
	state string
	run   string // pid files, pgroot, sockdir
	logs  string
}

func newStack(o Options) (*stack, error) {
	state, err := filepath.Abs(o.State)
	if err != nil {
		return nil, err
	}
	return &stack{o: o, state: state, run: filepath.Join(state, "run"), logs: filepath.Join(state, "logs")}, nil
}

func (s *stack) logf(format string, args ...any) {
	if s.o.Log != nil {
		// A message must not end a stop whose terminal went away.
		_, _ = fmt.Fprintf(s.o.Log, "services: "+format+"\n", args...)
	}
}

// failed returns msg with the last lines of logFile.
func (s *stack) failed(msg, logFile string) error {
	if t := tail(logFile, 40); t != "" {
		return fmt.Errorf("%s\nlast lines of %s:\n%s", msg, logFile, t)
	}
	return errors.New(msg)
}

// appendTo calls write with logFile opened for appending.
func (s *stack) appendTo(logFile string, write func(io.Writer) error) error {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	return write(f)
}

// Start starts PostgreSQL, the registry and buildkitd under o.State, waits
// until each answers (buildkitd must offer linux/arm64), writes STATE/env
// and returns what it holds. It refuses (ErrRunning) when services already
// run there. A failed start stops whatever it started; the error carries the
// last lines of the failed service's log.
func Start(ctx context.Context, o Options) (env Env, err error) {
	s, err := newStack(o)
	if err != nil {
		return Env{}, err
	}
	if o.Root == "" {
		if o.Root, err = RepoRoot(); err != nil {
			return Env{}, err
		}
		s.o.Root = o.Root
	}
	if err := os.MkdirAll(s.run, 0o755); err != nil {
		return Env{}, err
	}
	if err := os.MkdirAll(s.logs, 0o755); err != nil {
		return Env{}, err
	}
	// mktemp -d makes 0700 folders; the postgres user must reach STATE/pg.
	if err := os.Chmod(s.state, 0o755); err != nil {
		return Env{}, err
	}
	pids, _ := filepath.Glob(filepath.Join(s.run, "*.pid"))
	for _, f := range pids {
		if s.alive(f) {
			return Env{}, fmt.Errorf("%w under %s (%s); stop them with: scripts/services.sh stop %s", ErrRunning, s.state, strings.TrimSuffix(filepath.Base(f), ".pid"), s.state)
		}
	}
	if b, err := os.ReadFile(filepath.Join(s.run, "pgroot")); err == nil && postmasterRuns(filepath.Join(strings.TrimSpace(string(b)), "data")) {
		return Env{}, fmt.Errorf("%w: postgres under %s; stop it with: scripts/services.sh stop %s", ErrRunning, s.state, s.state)
	}
	_ = os.Remove(filepath.Join(s.state, "env"))
	defer func() {
		if err != nil {
			s.logf("start failed; stopping what started")
			_ = s.stop()
		}
	}()
	t0 := time.Now()
	// Both ports are picked (or checked) before anything starts.
	pgPort, err := pickPort(o.PGPort, "postgres", "SLIPWAY_PG_PORT")
	if err != nil {
		return Env{}, err
	}
	regPort, err := pickPort(o.RegistryPort, "registry", "SLIPWAY_REGISTRY_PORT")
	if err != nil {
		return Env{}, err
	}
	if pgPort == regPort {
		return Env{}, fmt.Errorf("postgres and the registry cannot share port %d", pgPort)
	}
	if err := s.startPostgres(ctx, pgPort); err != nil {
		return Env{}, err
	}
	s.logf("postgres on 127.0.0.1:%d", pgPort)
	registry := fmt.Sprintf("127.0.0.1:%d", regPort)
	if err := s.startDetached("registry", func(po ProcOptions) (*Process, error) {
		return StartRegistry(ctx, RegistryConfig{Addr: registry, Dir: filepath.Join(s.state, "registry")}, po)
	}); err != nil {
		return Env{}, err
	}
	s.logf("registry on %s", registry)
	bk, err := s.buildkitdConfig(registry)
	if err != nil {
		return Env{}, err
	}
	if err := s.startDetached("buildkitd", func(po ProcOptions) (*Process, error) {
		return StartBuildkitd(ctx, bk, po)
	}); err != nil {
		return Env{}, err
	}
	s.logf("buildkitd on %s", bk.Addr)
	env = Env{
		DatabaseURL:     PostgresURL(pgPort, "slipway"),
		TestDatabaseURL: PostgresURL(pgPort, "slipway_test"),
		BuildkitAddr:    bk.Addr,
		Registry:        registry,
		BusyboxDebs:     filepath.Join(s.cacheDir(), "debs"),
		State:           s.state,
	}
	tmp := filepath.Join(s.state, "env.tmp")
	if err := os.WriteFile(tmp, []byte(env.File()), 0o644); err != nil {
		return Env{}, err
	}
	if err := os.Rename(tmp, filepath.Join(s.state, "env")); err != nil {
		return Env{}, err
	}
	s.logf("ready in %s; environment in %s, logs in %s", time.Since(t0).Round(100*time.Millisecond), filepath.Join(s.state, "env"), s.logs)
	return env, nil
}

func (s *stack) binDir() string {
	if s.o.BinDir != "" {
		return s.o.BinDir
	}
	return filepath.Join(s.o.Root, "bin")
}

func (s *stack) cacheDir() string {
	if s.o.CacheDir != "" {
		return s.o.CacheDir
	}
	return filepath.Join(s.o.Root, ".cache")
}

// buildkitdConfig is the stack's buildkitd: state in STATE/buildkit, the
// socket in STATE/run unless that path is too long for a unix socket.
func (s *stack) buildkitdConfig(registry string) (BuildkitdConfig, error) {
	sockDir := s.run
	if len(sockDir) > 80 {
		sockDir = filepath.Join(os.TempDir(), "slipway-bk-"+stateHash(s.state))
		if err := os.MkdirAll(sockDir, 0o755); err != nil {
			return BuildkitdConfig{}, err
		}
		if err := os.WriteFile(filepath.Join(s.run, "sockdir"), []byte(sockDir+"\n"), 0o644); err != nil {
			return BuildkitdConfig{}, err
		}
	}
	return BuildkitdConfig{
		Bin:       filepath.Join(s.binDir(), "buildkitd"),
		Root:      filepath.Join(s.state, "buildkit"),
		Dir:       sockDir,
		Addr:      "unix://" + filepath.Join(sockDir, "buildkitd.sock"),
		PlainHTTP: []string{registry},
		Platforms: []string{"linux/arm64"},
	}, nil
}

// startDetached runs start with a detached process logging to
// STATE/logs/NAME.log and records its pid in STATE/run/NAME.pid.
func (s *stack) startDetached(name string, start func(ProcOptions) (*Process, error)) error {
	logFile := filepath.Join(s.logs, name+".log")
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close() // the process has its own copy
	if _, err := start(ProcOptions{Log: f, Detach: true, Timeout: s.o.timeout(), PidFile: filepath.Join(s.run, name+".pid")}); err != nil {
		return s.failed(err.Error(), logFile)
	}
	return nil
}

// alive tells whether the process in pidFile still runs and is one of ours:
// its command line names the state folder (a reused pid does not).
func (s *stack) alive(pidFile string) bool {
	pid := readPid(pidFile)
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmdline), s.state)
}

func readPid(pidFile string) int {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Stop stops whatever runs under the state folder, also after a partial
// start: each STATE/run/*.pid (clients first: git-daemon, which
// scripts/run.sh starts, then buildkitd and the registry), then PostgreSQL;
// then it detaches mounts a killed buildkitd left under the folder. A missing
// folder is nothing to stop.
func Stop(state string, log io.Writer) error {
	if !isDir(state) {
		return nil
	}
	s, err := newStack(Options{State: state, Log: log})
	if err != nil {
		return err
	}
	return s.stop()
}

func (s *stack) stop() error {
	pids, _ := filepath.Glob(filepath.Join(s.run, "*.pid"))
	rank := func(f string) int {
		return slices.Index([]string{"registry", "buildkitd", "git-daemon"}, strings.TrimSuffix(filepath.Base(f), ".pid"))
	}
	slices.SortStableFunc(pids, func(a, b string) int { return rank(b) - rank(a) })
	for _, f := range pids {
		s.stopPidFile(f)
	}
	err := s.stopPostgres()
	s.unmount()
	return err
}

// stopPidFile sends SIGTERM, waits up to 30 s, then SIGKILL.
func (s *stack) stopPidFile(f string) {
	name := strings.TrimSuffix(filepath.Base(f), ".pid")
	if s.alive(f) {
		pid := readPid(f)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(30 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond) // polling another process
		}
		if syscall.Kill(pid, 0) == nil {
			s.logf("%s did not stop in 30s; killing it", name)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		s.logf("stopped %s", name)
	}
	_ = os.Remove(f)
}

// unmount detaches the mounts under the state folder, deepest first: a
// buildkitd that was killed can leave its containers' mounts behind.
func (s *stack) unmount() {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 1 && strings.HasPrefix(fields[1], s.state+"/") {
			mounts = append(mounts, fields[1])
		}
	}
	slices.Sort(mounts)
	slices.Reverse(mounts)
	for _, m := range mounts {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
}

// Purge stops the services under state (Stop), then deletes the folder and
// the cluster and socket folders it made outside it.
func Purge(state string, log io.Writer) error {
	if !isDir(state) {
		return nil
	}
	s, err := newStack(Options{State: state, Log: log})
	if err != nil {
		return err
	}
	if err := s.stop(); err != nil {
		return err
	}
	for _, name := range []string{"pgroot", "sockdir"} {
		b, err := os.ReadFile(filepath.Join(s.run, name))
		if err != nil {
			continue
		}
		dir := strings.TrimSpace(string(b))
		if base := filepath.Base(dir); strings.HasPrefix(base, "slipway-pg-") || strings.HasPrefix(base, "slipway-bk-") {
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
		}
	}
	return os.RemoveAll(s.state)
}

// pickPort returns requested if 127.0.0.1:requested is free, or a free port
// when requested is 0. Ports come from 20000-31999, below Linux's ephemeral
// range, so an outgoing connection does not hold the one picked.
func pickPort(requested int, name, setting string) (int, error) {
	if requested != 0 {
		if !portFree(requested) {
			return 0, fmt.Errorf("%s: 127.0.0.1:%d is already in use (set %s to another port, or 0 for a free one)", name, requested, setting)
		}
		return requested, nil
	}
	for range 100 {
		if p := 20000 + rand.IntN(12000); portFree(p) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("%s: no free port found", name)
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
