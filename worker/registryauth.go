package worker

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/registry"
)

// RegistryAuthOpener opens a repository's own registry credentials by
// normalized host; slipway.RegistryAuthService implements it.
type RegistryAuthOpener interface {
	OpenRegistryAuths(ctx context.Context, repoID int64) (map[string]slipway.RegistryAuth, error)
}

// openRegistryAuths opens the build's repository's own registry credentials
// (nil when the worker has no store for them, the repository has none, or
// the build is of a pull request from a fork, whose code is not trusted with
// them) and masks every password, and the base64 forms of user:password an
// auth file or header holds, in sink before anything could print them.
func (w *Worker) openRegistryAuths(ctx context.Context, build *slipway.Build, fork bool, sink *logSink) (map[string]slipway.RegistryAuth, error) {
	if w.cfg.RegistryAuths == nil || fork {
		return nil, nil
	}
	auths, err := w.cfg.RegistryAuths.OpenRegistryAuths(ctx, build.RepoID)
	if err != nil {
		return nil, fmt.Errorf("opening the registry credentials of %s: %s", build.Repo, slipway.ErrorMessage(err))
	}
	if len(auths) == 0 {
		return nil, nil
	}
	values := make([][]byte, 0, 2*len(auths))
	for _, a := range auths {
		values = append(values, []byte(a.Password), []byte(base64.StdEncoding.EncodeToString([]byte(a.Username+":"+a.Password))))
	}
	sink.Mask(values)
	return auths, nil
}

// podAuthFile writes the Docker config.json a test Pod's pulls read when
// ctx carries the repository's own registry credentials (see
// registry.WithRepoAuths): the worker's SLIPWAY_DOCKER_CONFIG (dockerConfig,
// "" for none) with the repository's entries in place of its own for their
// hosts. The file is 0600 in a private temp dir outside the workspace;
// remove deletes it. Without repository credentials it writes nothing and
// returns "".
func podAuthFile(ctx context.Context, dockerConfig string) (path string, remove func(), err error) {
	auths := registry.RepoAuthsFrom(ctx)
	if len(auths) == 0 {
		return "", func() {}, nil
	}
	cfg := configfile.New("")
	if dockerConfig != "" {
		if cfg, err = registry.LoadDockerConfig(dockerConfig); err != nil {
			return "", nil, err
		}
	}
	if cfg.AuthConfigs == nil {
		cfg.AuthConfigs = map[string]types.AuthConfig{}
	}
	for host, a := range auths {
		delete(cfg.CredentialHelpers, host)
		cfg.AuthConfigs[host] = types.AuthConfig{Username: a.Username, Password: a.Password, ServerAddress: host}
	}
	dir, err := os.MkdirTemp("", "slipway-podauth-")
	if err != nil {
		return "", nil, fmt.Errorf("writing the pull credentials of the test pod: %w", err)
	}
	remove = func() { os.RemoveAll(dir) }
	path = filepath.Join(dir, "auth.json")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		err = cfg.SaveToWriter(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		remove()
		return "", nil, fmt.Errorf("writing the pull credentials of the test pod: %w", err)
	}
	return path, remove, nil
}
