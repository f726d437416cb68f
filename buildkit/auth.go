package buildkit

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth/authprovider"

	"github.com/slipway-ci/slipway"
)

// Auth says where BuildKit finds registry credentials and which CAs the
// client side of its session trusts. buildkitd asks the session for
// credentials of every registry it talks to for a solve (the push, FROM
// pulls, cache import and export), so they never pass through buildkitd's
// own configuration, a build argument or the log. The zero Auth is
// anonymous.
type Auth struct {
	// DockerConfig is the path of a Docker config.json (`auths`,
	// `credHelpers`), read again for each solve. "" means anonymous.
	DockerConfig string
	// CABundle is the path of a PEM file of CAs the session trusts, besides
	// the system's, when it fetches registry tokens. buildkitd's own pulls
	// and pushes trust what buildkitd.toml lists: [registry."host"] ca=[…].
	CABundle string
}

// RepoAuths are a repository's own registry credentials by normalized
// host (see slipway.NormalizeRegistryHost): for those hosts the session
// answers with them instead of the Docker config's entry.
type RepoAuths map[string]slipway.RegistryAuth

// attachable returns the session's auth provider for a solve that talks to
// the registries of refs (host[:port]/path references); repo's credentials
// win over the Docker config for their hosts. nil for the zero Auth
// without repo, which leaves buildkitd anonymous.
func (a Auth) attachable(repo RepoAuths, refs ...string) (session.Attachable, error) {
	if a.DockerConfig == "" && a.CABundle == "" && len(repo) == 0 {
		return nil, nil
	}
	cfg := configfile.New("")
	if a.DockerConfig != "" {
		f, err := os.Open(a.DockerConfig)
		if err != nil {
			return nil, fmt.Errorf("reading SLIPWAY_DOCKER_CONFIG %s: %w", a.DockerConfig, err)
		}
		cfg, err = config.LoadFromReader(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading SLIPWAY_DOCKER_CONFIG %s: not a Docker config.json", a.DockerConfig)
		}
		cfg.Filename = a.DockerConfig
	}
	var tlsConfigs map[string]*authprovider.AuthTLSConfig
	if a.CABundle != "" {
		if _, err := os.Stat(a.CABundle); err != nil {
			return nil, fmt.Errorf("reading SLIPWAY_CA_BUNDLE %s: %w", a.CABundle, err)
		}
		tlsConfigs = map[string]*authprovider.AuthTLSConfig{}
		hosts := make([]string, 0, len(cfg.AuthConfigs)+len(cfg.CredentialHelpers)+len(refs))
		for h := range cfg.AuthConfigs {
			hosts = append(hosts, h)
		}
		for h := range cfg.CredentialHelpers {
			hosts = append(hosts, h)
		}
		for h := range repo {
			hosts = append(hosts, h)
		}
		for _, r := range refs {
			hosts = append(hosts, strings.SplitN(r, "/", 2)[0])
		}
		for _, h := range hosts {
			h = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://"), "/")
			tlsConfigs[h] = &authprovider.AuthTLSConfig{RootCAs: []string{a.CABundle}}
		}
	}
	provider := authprovider.LoadAuthConfig(cfg)
	if len(repo) > 0 {
		fromConfig := provider
		provider = func(ctx context.Context, host string, scope []string, cacheCheck authprovider.ExpireCachedAuthCheck) (types.AuthConfig, error) {
			if c, ok := repo[slipway.NormalizeRegistryHost(host)]; ok {
				return types.AuthConfig{Username: c.Username, Password: c.Password, ServerAddress: host}, nil
			}
			return fromConfig(ctx, host, scope, cacheCheck)
		}
	}
	return authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{
		AuthConfigProvider: provider,
		TLSConfigs:         tlsConfigs,
	}), nil
}

// registryAuthText matches BuildKit's text for a registry that refused the
// credentials (or their absence), with the host in the URL before it.
var (
	registryDenied = regexp.MustCompile(`(?i)\b(401 Unauthorized|403 Forbidden|unexpected status( code)?[^:]*: 40[13]\b|authorization failed|failed to authorize|insufficient_scope|denied: )`)
	registryURL    = regexp.MustCompile(`https?://([^/\s"]+)/`)
	unknownCA      = regexp.MustCompile(`(?i)x509: certificate signed by unknown authority`)
)

// explainRegistry adds to a one-line BuildKit error what a user checks: the
// credentials of the registry host in SLIPWAY_DOCKER_CONFIG for a 401 or 403
// (or the repository's registry credential when repo has one for the host),
// the CA bundle for an unknown authority. Other messages pass unchanged.
func explainRegistry(msg string, repo RepoAuths) string {
	host := "the registry"
	if m := registryURL.FindStringSubmatch(msg); m != nil {
		host = m[1]
	}
	switch {
	case unknownCA.MatchString(msg):
		return msg + " (" + host + " is signed by a CA slipway does not trust: put it in the PEM file SLIPWAY_CA_BUNDLE names and in buildkitd.toml [registry.\"" + host + "\"] ca)"
	case registryDenied.MatchString(msg) && hasRepoAuth(repo, host, msg):
		return msg + " (" + host + " refused the repository's registry credential: check it with GET/PUT /api/v1/repos/{owner}/{name}/registry-auth)"
	case registryDenied.MatchString(msg):
		return msg + " (" + host + " refused the credentials: check its entry in the Docker config SLIPWAY_DOCKER_CONFIG names, or the repository's own registry credential, PUT /api/v1/repos/{owner}/{name}/registry-auth)"
	}
	return msg
}

// hasRepoAuth reports whether repo has a credential for host, or, when no
// URL named the host, for a registry msg names.
func hasRepoAuth(repo RepoAuths, host, msg string) bool {
	if _, ok := repo[slipway.NormalizeRegistryHost(host)]; ok {
		return true
	}
	for h := range repo {
		if host == "the registry" && strings.Contains(msg, h+"/") {
			return true
		}
	}
	return false
}
