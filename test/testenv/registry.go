package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slipway-ci/slipway/test/devstack"
)

// StartRegistry starts another distribution registry, configured as the
// stack's (devstack.RegistryConfig), on a free loopback port with its storage
// in a temporary folder, stops it when the test ends, and returns its
// host:port. The test is skipped when docker-registry is not installed.
func StartRegistry(tb testing.TB) string {
	tb.Helper()
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	host := fmt.Sprintf("127.0.0.1:%d", port)
	log := &SyncBuffer{}
	p, err := devstack.StartRegistry(context.Background(), devstack.RegistryConfig{Addr: host, Dir: tb.TempDir(), LogLevel: "warn"},
		devstack.ProcOptions{Log: log, Timeout: 30 * time.Second})
	if errors.Is(err, devstack.ErrNoRegistry) {
		tb.Skip(err)
	}
	if err != nil {
		tb.Fatalf("%v\n%s", err, log.String())
	}
	tb.Cleanup(func() {
		p.Stop(10 * time.Second)
		if tb.Failed() {
			tb.Logf("second registry log:\n%s", log.String())
		}
	})
	return host
}

// CountingProxy is a reverse proxy in front of a registry that counts what it
// forwards: every request by "METHOD kind" (kind is manifests, blobs, uploads
// or other), the bytes of blob uploads, and the cross-repository mounts the
// registry accepted.
type CountingProxy struct {
	// Host is the proxy's host:port; name images with it to go through it.
	Host string

	mu          sync.Mutex
	requests    []string
	uploadBytes atomic.Int64
	mounts      atomic.Int64
}

// NewCountingProxy starts a CountingProxy in front of the registry at
// upstream (host:port) until the test ends.
func NewCountingProxy(tb testing.TB, upstream string) *CountingProxy {
	tb.Helper()
	target := &url.URL{Scheme: "http", Host: upstream}
	p := &CountingProxy{}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	rp := &httputil.ReverseProxy{Transport: tr, Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		// Location headers the registry sends name the host it was asked for.
		r.Out.Host = upstream
	}}
	rp.ModifyResponse = func(resp *http.Response) error {
		if loc := resp.Header.Get("Location"); loc != "" {
			resp.Header.Set("Location", strings.Replace(loc, upstream, p.Host, 1))
		}
		r := resp.Request
		if r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/blobs/uploads/") &&
			r.URL.Query().Get("mount") != "" && resp.StatusCode == http.StatusCreated {
			p.mounts.Add(1)
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.record(r)
		if strings.Contains(r.URL.Path, "/blobs/uploads/") && r.Body != nil && r.Body != http.NoBody {
			r.Body = &countingBody{ReadCloser: r.Body, n: &p.uploadBytes}
		}
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(func() {
		srv.Close()
		tr.CloseIdleConnections()
	})
	p.Host = strings.TrimPrefix(srv.URL, "http://")
	return p
}

func (p *CountingProxy) record(r *http.Request) {
	kind := "other"
	switch {
	case strings.Contains(r.URL.Path, "/blobs/uploads/"):
		kind = "uploads"
	case strings.Contains(r.URL.Path, "/blobs/"):
		kind = "blobs"
	case strings.Contains(r.URL.Path, "/manifests/"):
		kind = "manifests"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, r.Method+" "+kind+" "+r.URL.Path)
}

// Reset forgets everything counted so far.
func (p *CountingProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = nil
	p.uploadBytes.Store(0)
	p.mounts.Store(0)
}

// Requests returns every request forwarded since the last Reset, as
// "METHOD kind /path".
func (p *CountingProxy) Requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.requests...)
}

// Count returns how many forwarded requests had the method and kind
// (manifests, blobs, uploads, other); an empty method matches any.
func (p *CountingProxy) Count(method, kind string) int {
	n := 0
	for _, r := range p.Requests() {
		f := strings.SplitN(r, " ", 3)
		if (method == "" || f[0] == method) && f[1] == kind {
			n++
		}
	}
	return n
}

// UploadBytes is the number of blob bytes clients sent since the last Reset.
func (p *CountingProxy) UploadBytes() int64 { return p.uploadBytes.Load() }

// Mounts is the number of cross-repository mounts the registry accepted since
// the last Reset.
func (p *CountingProxy) Mounts() int64 { return p.mounts.Load() }

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
