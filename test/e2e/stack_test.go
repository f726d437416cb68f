package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
	"github.com/slipway-ci/slipway/test/testenv"
)

const (
	webhookSecret = "e2e-webhook-secret"
	adminToken    = "e2e-admin-token"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// slipwayBinary builds cmd/slipway once per test binary: the end-to-end tests run
// slipway as real processes, so a worker can be killed with SIGKILL.
func slipwayBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "slipway-e2e-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "slipway")
		root, err := testenv.RepoRoot()
		if err != nil {
			binErr = err
			return
		}
		// Built in the main module, with the versions the shipped binary
		// has (this module's graph holds more).
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/slipway")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// stack is one slipway installation: its own database, a server process and any
// number of worker processes, sharing the test's registry and buildkitd.
type stack struct {
	t        testing.TB
	bin      string
	db       *postgres.DB
	env      []string
	url      string
	registry string    // SLIPWAY_REGISTRY of this stack
	server   *exec.Cmd // the `slipway server` process
	// onLine, when set before start, sees every stderr line of the processes
	// started after it (on their reader goroutines).
	onLine func(cmd *exec.Cmd, line string)
}

func requireEnv(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Skipf("%s is unset: run `make test`, which starts PostgreSQL, the registry and buildkitd", name)
	}
	return v
}

func newStack(t testing.TB, extraEnv ...string) *stack {
	t.Helper()
	registry := requireEnv(t, "TEST_REGISTRY")
	buildkitAddr := requireEnv(t, "BUILDKIT_HOST")
	db, dbURL := pgtest.NewDBURL(t)
	// Each stack pushes under its own prefix, so stacks sharing the registry
	// never see each other's tags.
	s := &stack{t: t, bin: slipwayBinary(t), db: db, registry: fmt.Sprintf("%s/e2e%d", registry, time.Now().UnixNano()%1e9)}
	addr := freeAddr(t)
	s.url = "http://" + addr
	s.env = append(os.Environ(),
		"SLIPWAY_DATABASE_URL="+dbURL,
		"SLIPWAY_ADDR="+addr,
		"SLIPWAY_PUBLIC_URL="+s.url,
		"SLIPWAY_GITHUB_WEBHOOK_SECRET="+webhookSecret,
		"SLIPWAY_ADMIN_TOKEN="+adminToken,
		"SLIPWAY_REGISTRY="+s.registry,
		"SLIPWAY_BUILDKIT_ADDR="+buildkitAddr,
		"SLIPWAY_WORKSPACE_DIR="+t.TempDir(),
		"SLIPWAY_WORKER_ADDR=off",
		"SLIPWAY_LOG_FORMAT=json",
		// Short leases so the kill test is quick; the defaults are 5s and 30s.
		"SLIPWAY_HEARTBEAT_INTERVAL=1s",
		"SLIPWAY_STALE_AFTER=6s",
		"SLIPWAY_POLL_INTERVAL=2s",
		// The tests' repositories are served by git daemon, not a forge; the
		// tests of the setting itself turn this off.
		"SLIPWAY_DEV_CLONE_URL_FROM_PAYLOAD=true",
		// ... and register themselves with their first delivery.
		"SLIPWAY_AUTO_REGISTER=true",
		// ... and call integration webhooks on loopback.
		"SLIPWAY_OUTBOUND_ALLOWED_HOSTS=127.0.0.1",
		// ... and cloned over git:// (and Gitea over loopback http).
		"SLIPWAY_GIT_DEV_PROTOCOLS=true",
	)
	s.env = append(s.env, extraEnv...)
	s.server = s.start("server")
	s.waitHealthy()
	return s
}

// image is where this stack pushes owner/name.
func (s *stack) image(owner, name string) string {
	return s.registry + "/" + strings.ToLower(owner) + "/" + strings.ToLower(name)
}

// start runs `slipway <role>` with the stack's environment until the test ends,
// copying its log into the test log.
func (s *stack) start(role string, extraEnv ...string) *exec.Cmd {
	t := s.t
	t.Helper()
	cmd := exec.Command(s.bin, role)
	cmd.Env = append(append([]string{}, s.env...), extraEnv...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	onLine := s.onLine
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if onLine != nil {
				onLine(cmd, sc.Text())
			}
			t.Logf("%s[%d]: %s", role, cmd.Process.Pid, sc.Text())
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = cmd.Wait()
	})
	return cmd
}

func (s *stack) waitHealthy() {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("slipway server at %s not healthy after 30s: %v", s.url, err)
		}
		time.Sleep(50 * time.Millisecond) // bounded poll of another process
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// webhook sends a GitHub delivery and returns the status and decoded JSON body.
func (s *stack) webhook(event, delivery string, body []byte, signature string) (int, map[string]any) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+"/webhooks/github", bytes.NewReader(body))
	require.NoError(s.t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/e2e")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", delivery)
	if signature != "" {
		req.Header.Set("X-Hub-Signature-256", signature)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	return resp.StatusCode, m
}

// api GETs path under /api/v1 with the admin token and decodes the JSON into v
// (or returns the raw body when v is nil).
func (s *stack) api(path string, v any) (int, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.url+"/api/v1"+path, nil)
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	if v != nil && resp.StatusCode == http.StatusOK {
		require.NoError(s.t, json.Unmarshal(data, v), "decoding %s", data)
	}
	return resp.StatusCode, data
}

func (s *stack) build(id int64) *slipway.Build {
	s.t.Helper()
	var b slipway.Build
	code, body := s.api(fmt.Sprintf("/builds/%d", id), &b)
	require.Equal(s.t, http.StatusOK, code, "GET build %d: %s", id, body)
	return &b
}

func (s *stack) logs(id int64) string {
	s.t.Helper()
	code, body := s.api(fmt.Sprintf("/builds/%d/logs", id), nil)
	require.Equal(s.t, http.StatusOK, code)
	return string(body)
}

// waitFor polls the build until cond holds or timeout passes.
func (s *stack) waitFor(id int64, timeout time.Duration, what string, cond func(*slipway.Build) bool) *slipway.Build {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b := s.build(id)
		if cond(b) {
			return b
		}
		if b.State.Done() || time.Now().After(deadline) {
			s.t.Fatalf("build %d: waited for %s, got state %s (error %q)\nlog:\n%s", id, what, b.State, b.Error, s.logs(id))
		}
		time.Sleep(250 * time.Millisecond) // bounded poll of another process
	}
}

// waitDone waits for a final state.
func (s *stack) waitDone(id int64) *slipway.Build {
	s.t.Helper()
	deadline := time.Now().Add(15 * time.Minute)
	for {
		b := s.build(id)
		if b.State.Done() {
			return b
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("build %d not done after 15 minutes: %s\nlog:\n%s", id, b.State, s.logs(id))
		}
		time.Sleep(250 * time.Millisecond) // bounded poll of another process
	}
}

func (s *stack) count(table string) int {
	s.t.Helper()
	var n int
	require.NoError(s.t, s.db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n))
	return n
}
