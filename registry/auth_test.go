package registry

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

func TestDockerConfigKeychain(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.json")
	// "auth" is base64 of "bot:s3cret-value".
	if err := os.WriteFile(p, []byte(`{"auths": {"ghcr.io": {"auth": "Ym90OnMzY3JldC12YWx1ZQ=="}, "https://index.docker.io/v1/": {"username": "hub", "password": "hubpw"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	kc := DockerConfigKeychain(p)
	resolve := func(ref string) *authn.AuthConfig {
		t.Helper()
		r, err := name.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		a, err := kc.Resolve(r.Context())
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := a.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	if c := resolve("ghcr.io/acme/app:1"); c.Username != "bot" || c.Password != "s3cret-value" {
		t.Errorf("ghcr.io resolved to %q", c.Username)
	}
	if c := resolve("library/busybox"); c.Username != "hub" || c.Password != "hubpw" {
		t.Errorf("Docker Hub resolved to %q", c.Username)
	}
	if c := resolve("quay.io/x/y"); *c != (authn.AuthConfig{}) {
		t.Errorf("a registry without an entry is anonymous, got user %q", c.Username)
	}

	// A broken file is an error that names it but never quotes it.
	if err := os.WriteFile(p, []byte(`{"auths": {"ghcr.io": {"auth": "Ym90OnMzY3JldC12YWx1ZQ=="`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadDockerConfig(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), DockerConfigSetting) || strings.Contains(err.Error(), "Ym90") {
		t.Errorf("LoadDockerConfig of a broken file: %v", err)
	}
}

func TestLoadCABundleRefusesAFileWithoutCertificates(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCABundle(p); err == nil || !strings.Contains(err.Error(), CABundleSetting) {
		t.Errorf("LoadCABundle: %v", err)
	}
}
