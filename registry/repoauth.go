package registry

import (
	"context"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/slipway-ci/slipway"
)

// RepoCredentialHint is how errors name a repository's own registry
// credential, so a 401/403 with it is told apart from one with
// SLIPWAY_DOCKER_CONFIG.
const RepoCredentialHint = "the repository's registry credential"

// RepoKeychain returns a keychain that prefers the repository's own
// credential for a registry host (keys as stored by
// slipway.RegistryAuthService: normalized hosts, "docker.io" for Docker
// Hub) and falls back to fallback (normally DockerConfigKeychain of
// SLIPWAY_DOCKER_CONFIG) for every other host. With no repository
// credentials it is fallback itself.
func RepoKeychain(repo map[string]slipway.RegistryAuth, fallback authn.Keychain) authn.Keychain {
	if len(repo) == 0 {
		return fallback
	}
	return &repoKeychain{repo: repo, fallback: fallback}
}

type repoKeychain struct {
	repo     map[string]slipway.RegistryAuth
	fallback authn.Keychain
}

func (k *repoKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	if a, ok := k.repo[repoAuthKey(target.RegistryStr())]; ok {
		return authn.FromConfig(authn.AuthConfig{Username: a.Username, Password: a.Password}), nil
	}
	return k.fallback.Resolve(target)
}

// repoAuthKey is the stored key for a go-containerregistry registry name
// ("index.docker.io" for Docker Hub).
func repoAuthKey(registry string) string {
	return slipway.NormalizeRegistryHost(registry)
}

type repoAuthsKey struct{}

// WithRepoAuths returns ctx carrying a repository's own registry
// credentials by normalized host (as OpenRegistryAuths returns them): every
// Client call with it uses RepoKeychain(auths, the Client's keychain), and a
// 401 or 403 of such a host names RepoCredentialHint. nil or empty auths
// leave ctx as it is.
func WithRepoAuths(ctx context.Context, auths map[string]slipway.RegistryAuth) context.Context {
	if len(auths) == 0 {
		return ctx
	}
	return context.WithValue(ctx, repoAuthsKey{}, auths)
}

// RepoAuthsFrom returns the credentials WithRepoAuths put in ctx, nil for
// none.
func RepoAuthsFrom(ctx context.Context) map[string]slipway.RegistryAuth {
	m, _ := ctx.Value(repoAuthsKey{}).(map[string]slipway.RegistryAuth)
	return m
}
