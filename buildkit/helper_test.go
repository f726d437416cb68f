package buildkit_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/slipway-ci/slipway/buildkit"
	"github.com/slipway-ci/slipway/test/testenv"
)

// These tests need a running buildkitd and a registry it can push to and pull
// from over plain http:
//
//	BUILDKIT_HOST=unix:///tmp/x/buildkitd.sock  buildkitd's address
//	TEST_REGISTRY=127.0.0.1:5000                 host:port of the registry;
//	                                             buildkitd.toml must mark it http = true
//
// The busybox base image comes from test/testenv (Debian's busybox-static
// packages that `make deps` downloads), unless TEST_BASE_IMAGE names a
// two-platform image to use instead.

func TestMain(m *testing.M) {
	code := m.Run()
	// ggcr's default transport keeps connections to the test registry alive.
	if tr, ok := remote.DefaultTransport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

type testBundle struct {
	addr     string // buildkitd address
	registry string // host:port
	base     string // two-platform busybox index, repo@sha256:…
}

// repo returns a repository in the test registry unique to t.
func (b *testBundle) repo(t *testing.T) string {
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	return fmt.Sprintf("%s/slipway-test/%s-%d", b.registry, name, time.Now().UnixNano())
}

func setup(t *testing.T) (*buildkit.Builder, *testBundle) {
	t.Helper()
	addr, reg := os.Getenv("BUILDKIT_HOST"), os.Getenv("TEST_REGISTRY")
	if addr == "" || reg == "" {
		t.Skip("BUILDKIT_HOST and TEST_REGISTRY are not set: skipping tests that need buildkitd and a registry")
	}
	b, err := buildkit.New(context.Background(), buildkit.Config{Addr: addr})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })

	base, err := baseImage(reg)
	require.NoError(t, err, "pushing the busybox base image")
	return b, &testBundle{addr: addr, registry: reg, base: base}
}

// baseImage pushes the busybox base image once per test binary.
var baseImage = func() func(reg string) (string, error) {
	var (
		once sync.Once
		ref  string
		err  error
	)
	return func(reg string) (string, error) {
		once.Do(func() {
			if ref = os.Getenv("TEST_BASE_IMAGE"); ref == "" {
				ref, err = testenv.PushBaseImage(context.Background(), reg)
			}
		})
		return ref, err
	}
}()

// logRecorder is a buildkit.LogFunc that keeps every line, and can tell when a
// line containing some text arrives.
type logRecorder struct {
	mu      sync.Mutex
	lines   []logLine
	waitFor string
	seen    chan struct{}
	once    sync.Once
}

type logLine struct{ platform, text string }

func (r *logRecorder) log(platform, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, logLine{platform, text})
	if r.waitFor != "" && strings.Contains(text, r.waitFor) {
		r.once.Do(func() { close(r.seen) })
	}
}

// notifyOn makes seen close when a line containing s is logged.
func (r *logRecorder) notifyOn(s string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waitFor, r.seen = s, make(chan struct{})
	return r.seen
}

// has reports whether a line for platform contains text.
func (r *logRecorder) has(platform, text string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if l.platform == platform && strings.Contains(l.text, text) {
			return true
		}
	}
	return false
}

func (r *logRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var sb strings.Builder
	for _, l := range r.lines {
		fmt.Fprintf(&sb, "%-12s %s\n", l.platform, l.text)
	}
	return sb.String()
}

// waitOrTimeout fails the test if ch does not close within d.
func waitOrTimeout(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}
