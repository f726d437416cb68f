package slipway

import (
	"context"
	"strings"
	"time"
	"unicode"
)

// Limits of a repository's own registry credentials.
const (
	MaxRegistryHostLen     = 255
	MaxRegistryUsernameLen = 255
	MaxRegistryPasswordLen = 16 << 10
)

// RegistryAuthInfo describes one stored registry credential of a
// repository without its password: the registry host (as in an image
// reference, "ghcr.io" or "registry.test:5000") and the username.
type RegistryAuthInfo struct {
	Registry  string    `json:"registry"`
	Username  string    `json:"username"`
	UpdatedAt time.Time `json:"updated_at"`
}

// RegistryAuth is one opened registry credential, for the worker that
// builds the repository and for promotion. Password is an access token,
// password or identity token.
type RegistryAuth struct {
	Username string
	Password string
}

// RegistryAuthService stores a repository's own registry credentials,
// sealed with SLIPWAY_SECRET_KEY. Every method returns ENOTFOUND for an
// unknown repository; writes return EUNAVAILABLE without a secret key.
type RegistryAuthService interface {
	// SetRegistryAuth stores (or replaces) the credential for registry;
	// EINVALID (see CheckRegistryAuth) for bad input.
	SetRegistryAuth(ctx context.Context, repoID int64, registry, username, password string) (*RegistryAuthInfo, error)
	// DeleteRegistryAuth removes it; ENOTFOUND when there is none.
	DeleteRegistryAuth(ctx context.Context, repoID int64, registry string) error
	// FindRegistryAuths lists the repository's credentials by host,
	// without passwords.
	FindRegistryAuths(ctx context.Context, repoID int64) ([]*RegistryAuthInfo, error)
	// OpenRegistryAuths returns the opened credentials by registry host.
	OpenRegistryAuths(ctx context.Context, repoID int64) (map[string]RegistryAuth, error)
}

// NormalizeRegistryHost returns registry as stored: lower case, without a
// scheme or path, and "docker.io" for Docker Hub's other names.
func NormalizeRegistryHost(registry string) string {
	h := strings.ToLower(strings.TrimSpace(registry))
	h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
	h, _, _ = strings.Cut(h, "/")
	switch h {
	case "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return h
}

// CheckRegistryAuth returns EINVALID unless registry is a host[:port]
// (already normalized), username at most MaxRegistryUsernameLen bytes
// without ':' or control characters, and password MinSecretLen to
// MaxRegistryPasswordLen bytes without spaces or control characters.
func CheckRegistryAuth(registry, username, password string) error {
	bad := func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }
	if registry == "" || len(registry) > MaxRegistryHostLen || strings.ContainsFunc(registry, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == ':' || r == '[' || r == ']')
	}) {
		return Errorf(EINVALID, "registry must be a host name with an optional port, like ghcr.io or registry.example.com:5000.")
	}
	if len(username) > MaxRegistryUsernameLen || strings.ContainsFunc(username, bad) || strings.Contains(username, ":") {
		return Errorf(EINVALID, "username must be at most %d bytes without ':', spaces or control characters.", MaxRegistryUsernameLen)
	}
	if len(password) < MinSecretLen || len(password) > MaxRegistryPasswordLen || strings.ContainsFunc(password, bad) {
		return Errorf(EINVALID, "password must be %d to %d bytes without spaces or control characters.", MinSecretLen, MaxRegistryPasswordLen)
	}
	return nil
}
