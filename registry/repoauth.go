package registry

import (
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

// HasRepoCredential reports whether kc answers for registry with the
// repository's own credential (see RepoKeychain), for error messages.
func HasRepoCredential(kc authn.Keychain, registry string) bool {
	k, ok := kc.(*repoKeychain)
	if !ok {
		return false
	}
	_, ok = k.repo[repoAuthKey(registry)]
	return ok
}

// repoAuthKey is the stored key for a go-containerregistry registry name
// ("index.docker.io" for Docker Hub).
func repoAuthKey(registry string) string {
	return slipway.NormalizeRegistryHost(registry)
}
