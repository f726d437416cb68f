package devstack

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/moby/buildkit/client"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

func TestRegistryConfigYAML(t *testing.T) {
	var plain struct {
		Log struct {
			Level     string
			AccessLog struct{ Disabled bool } `yaml:"accesslog"`
		}
		Storage struct {
			Filesystem struct{ RootDirectory string } `yaml:"filesystem"`
			Delete     struct{ Enabled bool }
		}
		Auth map[string]struct{ Realm, Path string }
		HTTP struct {
			Addr, Secret string
			TLS          *struct{ Certificate, Key string }
		} `yaml:"http"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(RegistryConfig{Addr: "127.0.0.1:5000", Dir: "/s/registry"}.YAML()), &plain))
	require.Equal(t, "info", plain.Log.Level)
	require.False(t, plain.Log.AccessLog.Disabled)
	require.Equal(t, "/s/registry/data", plain.Storage.Filesystem.RootDirectory)
	require.True(t, plain.Storage.Delete.Enabled, "promotion tests delete tags")
	require.Equal(t, "127.0.0.1:5000", plain.HTTP.Addr)
	require.NotEmpty(t, plain.HTTP.Secret)
	require.Nil(t, plain.HTTP.TLS)
	require.Empty(t, plain.Auth)

	secure := plain
	secure.Auth, secure.HTTP.TLS = nil, nil
	require.NoError(t, yaml.Unmarshal([]byte(RegistryConfig{Addr: "127.0.0.2:5001", Dir: "/d", LogLevel: "warn",
		Htpasswd: "/d/htpasswd", Realm: "r", CertFile: "/d/c.crt", KeyFile: "/d/c.key"}.YAML()), &secure))
	require.Equal(t, "warn", secure.Log.Level)
	require.Equal(t, "/d/htpasswd", secure.Auth["htpasswd"].Path)
	require.Equal(t, "r", secure.Auth["htpasswd"].Realm)
	require.NotNil(t, secure.HTTP.TLS)
	require.Equal(t, "/d/c.crt", secure.HTTP.TLS.Certificate)
	require.Equal(t, "/d/c.key", secure.HTTP.TLS.Key)
}

func TestBuildkitdConfig(t *testing.T) {
	c := BuildkitdConfig{Bin: "/b/buildkitd", Root: "/s/buildkit", Dir: "/s/run", Addr: "unix:///s/run/bk.sock",
		PlainHTTP: []string{"127.0.0.1:5000", "127.0.0.1:5001"}, ExtraTOML: "[registry.\"h\"]\n  ca = [\"/ca\"]\n"}
	require.Equal(t, `[worker.oci]
  enabled = true
[worker.containerd]
  enabled = false
[registry."127.0.0.1:5000"]
  http = true
  insecure = true
[registry."127.0.0.1:5001"]
  http = true
  insecure = true
[registry."h"]
  ca = ["/ca"]
`, c.TOML())
	args := strings.Join(c.Args(), " ")
	require.Contains(t, args, "--root /s/buildkit --addr unix:///s/run/bk.sock")
	require.Contains(t, args, "--config /s/run/buildkitd.toml")
	require.Contains(t, args, "--otel-socket-path /s/run/otel-grpc.sock", "a shared default otel socket clashes with a second buildkitd")
}

func TestEnvFile(t *testing.T) {
	e := Env{DatabaseURL: "postgres://a/slipway", TestDatabaseURL: "postgres://a/slipway_test", BuildkitAddr: "unix:///bk.sock",
		Registry: "127.0.0.1:5000", BusyboxDebs: "/c/debs", State: "/s"}
	f := e.File()
	for _, line := range []string{
		"export SLIPWAY_DATABASE_URL='postgres://a/slipway'",
		"export TEST_DATABASE_URL='postgres://a/slipway_test'",
		"export SLIPWAY_BUILDKIT_ADDR='unix:///bk.sock'",
		"export BUILDKIT_HOST='unix:///bk.sock'",
		"export SLIPWAY_REGISTRY='127.0.0.1:5000'",
		"export TEST_REGISTRY='127.0.0.1:5000'",
		"export SLIPWAY_BUSYBOX_DEBS='/c/debs'",
		"export SLIPWAY_SERVICES_STATE='/s'",
	} {
		require.Contains(t, f, line+"\n")
	}
}

func TestPickPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	_, err = pickPort(busy, "registry", "SLIPWAY_REGISTRY_PORT")
	require.ErrorContains(t, err, "127.0.0.1:"+strconv.Itoa(busy)+" is already in use (set SLIPWAY_REGISTRY_PORT")
	p, err := pickPort(0, "registry", "SLIPWAY_REGISTRY_PORT")
	require.NoError(t, err)
	require.True(t, p >= 20000 && p < 32000, "%d is outside 20000-31999", p)
}

// stackOptions skips the test unless the machine has what a whole stack
// needs (make deps, root for buildkitd).
func stackOptions(t *testing.T, state string) Options {
	t.Helper()
	bin, err := BinDir()
	require.NoError(t, err)
	if _, err := os.Stat(filepath.Join(bin, "buildkitd")); err != nil || os.Geteuid() != 0 {
		t.Skip("a stack needs bin/buildkitd (make deps; SLIPWAY_BIN_DIR) and root")
	}
	if _, err := PostgresBinDir(); err != nil {
		t.Skip(err)
	}
	return Options{State: state, BinDir: bin, CacheDir: os.Getenv("SLIPWAY_CACHE_DIR"), PGOptions: "-c fsync=off", Log: testWriter{t}}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestStartStopPurge starts a whole stack, uses each service, refuses a
// second start, stops it (nothing of it runs after), starts it again on the
// same cluster, and purges it.
func TestStartStopPurge(t *testing.T) {
	// Short: the buildkitd socket stays inside the state folder.
	state, err := os.MkdirTemp("", "devstack-")
	require.NoError(t, err)
	o := stackOptions(t, state)
	t.Cleanup(func() { _ = Purge(state, nil) })
	ctx := context.Background()

	env, err := Start(ctx, o)
	require.NoError(t, err)
	file, err := os.ReadFile(filepath.Join(state, "env"))
	require.NoError(t, err)
	require.Equal(t, env.File(), string(file))
	require.Equal(t, "unix://"+filepath.Join(state, "run", "buildkitd.sock"), env.BuildkitAddr)

	conn, err := pgx.Connect(ctx, env.DatabaseURL)
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))
	conn, err = pgx.Connect(ctx, env.TestDatabaseURL)
	require.NoError(t, err)
	var super bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super))
	require.True(t, super, "the tests make databases of their own")
	_, err = conn.Exec(ctx, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	resp, err := http.Get("http://" + env.Registry + "/v2/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	bk, err := client.New(ctx, env.BuildkitAddr)
	require.NoError(t, err)
	ws, err := bk.ListWorkers(ctx)
	bk.Close()
	require.NoError(t, err)
	require.True(t, offers(ws, "linux/arm64"))

	_, err = Start(ctx, o)
	require.ErrorIs(t, err, ErrRunning)
	require.FileExists(t, filepath.Join(state, "env"), "a refused start leaves the running stack alone")

	pids := map[string]int{}
	for _, name := range []string{"registry", "buildkitd"} {
		pids[name] = readPid(filepath.Join(state, "run", name+".pid"))
		require.Positive(t, pids[name], name)
	}
	require.NoError(t, Stop(state, testWriter{t}))
	for name, pid := range pids {
		require.Error(t, syscall.Kill(pid, 0), "%s (pid %d) still runs after stop", name, pid)
	}
	root, err := os.ReadFile(filepath.Join(state, "run", "pgroot"))
	require.NoError(t, err)
	require.False(t, postmasterRuns(filepath.Join(strings.TrimSpace(string(root)), "data")), "postgres still runs after stop")
	require.NoError(t, Stop(state, nil), "a second stop is nothing to do")

	env, err = Start(ctx, o)
	require.NoError(t, err)
	conn, err = pgx.Connect(ctx, env.TestDatabaseURL)
	require.NoError(t, err)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT n FROM kept").Scan(&n))
	require.Equal(t, 42, n, "a restart keeps the cluster")
	require.NoError(t, conn.Close(ctx))

	require.NoError(t, Purge(state, testWriter{t}))
	require.NoDirExists(t, state)
	require.NoError(t, Purge(state, nil), "a missing folder is nothing to purge")
}

// TestStartFailureStopsWhatStarted: a start fails before anything runs when
// a port is taken, and when buildkitd is missing after PostgreSQL and the
// registry started, those two are stopped again.
func TestStartFailureStopsWhatStarted(t *testing.T) {
	state := t.TempDir()
	o := stackOptions(t, state)
	o.Timeout = 10 * time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	o.RegistryPort = busy
	_, err = Start(context.Background(), o)
	require.ErrorContains(t, err, "is already in use (set SLIPWAY_REGISTRY_PORT")
	require.NoFileExists(t, filepath.Join(state, "run", "pgroot"), "the ports are checked before anything starts")

	o.RegistryPort = 0
	o.BinDir = t.TempDir() // no buildkitd in it
	_, err = Start(context.Background(), o)
	require.ErrorContains(t, err, "buildkitd: run make deps")
	require.NoFileExists(t, filepath.Join(state, "env"))
	root, err := os.ReadFile(filepath.Join(state, "run", "pgroot"))
	require.NoError(t, err, "postgres had started")
	require.False(t, postmasterRuns(filepath.Join(strings.TrimSpace(string(root)), "data")), "postgres still runs after a failed start")
	require.NoFileExists(t, filepath.Join(state, "run", "registry.pid"), "the registry was not stopped")
	require.NoError(t, Purge(state, nil))

	// A registry that cannot listen exits, and the error says so at once.
	_, err = StartRegistry(context.Background(), RegistryConfig{Addr: l.Addr().String(), Dir: t.TempDir()}, ProcOptions{Timeout: 30 * time.Second})
	if errors.Is(err, ErrNoRegistry) {
		t.Skip(err)
	}
	require.ErrorIs(t, err, errExited)
}

// TestClusterRestart: a cluster of a test's own starts, keeps its data over
// a restart, and is stopped at once.
func TestClusterRestart(t *testing.T) {
	if _, err := PostgresBinDir(); err != nil {
		t.Skip(err)
	}
	// Under /var/tmp: the server's user must reach it.
	dir, err := os.MkdirTemp("/var/tmp", "devstack-pg-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	c, err := NewCluster(dir)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Stop(true) })
	var out strings.Builder
	require.NoError(t, c.Init(&out), out.String())
	require.NoError(t, c.Init(&out), "a second Init keeps the cluster")
	port, err := pickPort(0, "postgres", "port")
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, c.Start(ctx, port, "-c fsync=off", time.Minute, &out), out.String())
	require.True(t, c.Running())
	conn, err := pgx.Connect(ctx, PostgresURL(port, "postgres"))
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	require.NoError(t, c.Restart(time.Minute))
	conn, err = pgx.Connect(ctx, PostgresURL(port, "postgres"))
	require.NoError(t, err, "the restart keeps the port and options")
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT n FROM kept").Scan(&n))
	require.Equal(t, 7, n)
	require.NoError(t, conn.Close(ctx))

	require.NoError(t, c.Stop(true))
	require.False(t, c.Running())
	require.NoError(t, c.Stop(true), "stopping a stopped cluster is nothing to do")
}
