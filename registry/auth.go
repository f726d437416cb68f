package registry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/slipway-ci/slipway"
)

// DockerConfigSetting and CABundleSetting are the settings errors point
// users to.
const (
	DockerConfigSetting = "SLIPWAY_DOCKER_CONFIG"
	CABundleSetting     = "SLIPWAY_CA_BUNDLE"
)

// LoadDockerConfig reads a Docker config.json (the file `docker login`
// writes; on Kubernetes the .dockerconfigjson key of a
// kubernetes.io/dockerconfigjson Secret): "auths" maps a registry host to
// base64 "user:password" in "auth" (or "username"/"password",
// "identitytoken", "registrytoken"), and "credHelpers" maps a host to a
// docker-credential-<name> helper on PATH. An error names the file, never
// its content.
func LoadDockerConfig(path string) (*configfile.ConfigFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", DockerConfigSetting, path, err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		// The parser's message may quote the file; keep only where it failed.
		return nil, fmt.Errorf("reading %s %s: not a Docker config.json", DockerConfigSetting, path)
	}
	cf.Filename = path
	return cf, nil
}

// DockerConfigKeychain returns a keychain that finds credentials for a
// registry in the Docker config.json at path (see LoadDockerConfig), read
// again on each lookup so a rotated Secret is picked up without a restart.
// A registry without an entry is accessed anonymously. Both basic auth and
// the bearer-token flow of the Docker registry token spec work with it:
// go-containerregistry answers the registry's challenge.
func DockerConfigKeychain(path string) authn.Keychain {
	return &dockerKeychain{path: path}
}

type dockerKeychain struct {
	path string
	mu   sync.Mutex // credential helpers may not like concurrent calls
}

func (k *dockerKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cf, err := LoadDockerConfig(k.path)
	if err != nil {
		return nil, err
	}
	key := target.RegistryStr()
	if key == name.DefaultRegistry {
		key = authn.DefaultAuthKey
	}
	ac, err := cf.GetAuthConfig(key)
	if err != nil {
		return nil, fmt.Errorf("finding credentials for %s in %s: %w", target.RegistryStr(), DockerConfigSetting, err)
	}
	cfg := authn.AuthConfig{
		Username:      ac.Username,
		Password:      ac.Password,
		Auth:          ac.Auth,
		IdentityToken: ac.IdentityToken,
		RegistryToken: ac.RegistryToken,
	}
	if cfg == (authn.AuthConfig{}) {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(cfg), nil
}

// LoadCABundle reads the PEM certificates at path and returns a pool of the
// system's roots plus them. A file with no certificate is an error.
func LoadCABundle(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", CABundleSetting, path, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("reading %s %s: no PEM certificate in it", CABundleSetting, path)
	}
	return pool, nil
}

// TransportWithCA returns go-containerregistry's default transport trusting
// the system's roots and the CA bundle at path (see LoadCABundle).
func TransportWithCA(path string) (http.RoundTripper, error) {
	pool, err := LoadCABundle(path)
	if err != nil {
		return nil, err
	}
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr, nil
}

// explainTLS says what to do about an error of a registry whose certificate
// is not trusted, naming the host and the setting; it returns "" for other
// errors.
func explainTLS(err error) string {
	host := "the registry"
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if u, perr := url.Parse(uerr.URL); perr == nil && u.Host != "" {
			host = u.Host
		}
	}
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown), errors.As(err, &verify) && strings.Contains(verify.Error(), "unknown authority"):
		return host + " presents a certificate signed by an unknown authority: put the CA that signs it in the PEM file " + CABundleSetting + " names"
	case errors.As(err, &hostErr), errors.As(err, &invalid):
		return host + " presents a certificate that is not valid for it (" + slipway.OneLine(err.Error()) + ")"
	}
	return ""
}
