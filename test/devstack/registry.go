package devstack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// RegistryConfig is one distribution registry (Debian's docker-registry): the
// plain-HTTP one every stack has, or one that needs a login and speaks only
// TLS, as some tests start.
type RegistryConfig struct {
	// Addr is the host:port it listens on, e.g. 127.0.0.1:5000.
	Addr string
	// Dir holds config.yml and the blobs (Dir/data).
	Dir string
	// LogLevel is distribution's: debug, info (the default), warn or error.
	// The access log is kept whatever the level.
	LogLevel string
	// Htpasswd, when set, is the path of an htpasswd file (bcrypt): every
	// request then needs basic auth in realm Realm.
	Htpasswd string
	Realm    string
	// CertFile and KeyFile, when set, make it serve TLS only; CAFile is the
	// CA that signed CertFile, which the readiness check trusts.
	CertFile, KeyFile, CAFile string
}

// YAML returns the registry's config.yml.
func (c RegistryConfig) YAML() string {
	level := c.LogLevel
	if level == "" {
		level = "info"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: %s
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
`, level, filepath.Join(c.Dir, "data"))
	if c.Htpasswd != "" {
		fmt.Fprintf(&b, "auth:\n  htpasswd:\n    realm: %s\n    path: %s\n", c.Realm, c.Htpasswd)
	}
	// The secret only signs upload state between requests to one registry.
	fmt.Fprintf(&b, "http:\n  addr: %s\n  secret: slipway-dev-only\n", c.Addr)
	if c.CertFile != "" {
		fmt.Fprintf(&b, "  tls:\n    certificate: %s\n    key: %s\n", c.CertFile, c.KeyFile)
	}
	return b.String()
}

// ErrNoRegistry is returned by StartRegistry when docker-registry is not
// installed.
var ErrNoRegistry = errors.New("docker-registry is not installed: run `make deps`")

// StartRegistry writes c.Dir/config.yml, starts `docker-registry serve` on it
// and waits until GET /v2/ answers (200, or 401 when a login is needed). A
// registry that does not answer in time is stopped; the error then names it.
func StartRegistry(ctx context.Context, c RegistryConfig, o ProcOptions) (*Process, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, ErrNoRegistry
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "data"), 0o755); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(c.Dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(c.YAML()), 0o600); err != nil {
		return nil, err
	}
	client, err := c.client()
	if err != nil {
		return nil, err
	}
	p, err := spawn(bin, []string{"serve", cfgPath}, o)
	if err != nil {
		return nil, err
	}
	scheme, want := "http", http.StatusOK
	if c.CertFile != "" {
		scheme = "https"
	}
	if c.Htpasswd != "" {
		want = http.StatusUnauthorized
	}
	err = waitReady(ctx, "registry on "+c.Addr, p.Exited(), o.timeout(), func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+c.Addr+"/v2/", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			return fmt.Errorf("GET /v2/ answered %d, not %d", resp.StatusCode, want)
		}
		return nil
	})
	if err != nil {
		p.Stop(0)
		return nil, err
	}
	return p, nil
}

func (c RegistryConfig) client() (*http.Client, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading %s: no PEM certificate", c.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	return &http.Client{Transport: tr}, nil
}
