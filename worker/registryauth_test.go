package worker

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/registry"
)

type registryAuthsFunc func(ctx context.Context, repoID int64) (map[string]slipway.RegistryAuth, error)

func (f registryAuthsFunc) OpenRegistryAuths(ctx context.Context, repoID int64) (map[string]slipway.RegistryAuth, error) {
	return f(ctx, repoID)
}

func TestOpenRegistryAuths(t *testing.T) {
	const pw = "Team-pa55-registry"
	opened := 0
	w := &Worker{cfg: Config{RegistryAuths: registryAuthsFunc(func(_ context.Context, id int64) (map[string]slipway.RegistryAuth, error) {
		opened++
		require.Equal(t, int64(7), id)
		return map[string]slipway.RegistryAuth{"ghcr.io": {Username: "bot", Password: pw}}, nil
	})}}
	build := &slipway.Build{RepoID: 7, Repo: "acme/app"}
	sink := newLogSink(1, nil, zerolog.Nop())
	got, err := w.openRegistryAuths(context.Background(), build, true, sink)
	require.NoError(t, err)
	require.Nil(t, got, "a fork's pull request gets none")
	require.Zero(t, opened, "nor are they even opened for it")

	got, err = w.openRegistryAuths(context.Background(), build, false, sink)
	require.NoError(t, err)
	require.Equal(t, pw, got["ghcr.io"].Password)
	basic := base64.StdEncoding.EncodeToString([]byte("bot:" + pw))
	masked := sink.mask("pw " + pw + " auth " + basic)
	require.NotContains(t, masked, pw)
	require.NotContains(t, masked, basic)
}

func TestPodAuthFile(t *testing.T) {
	dir := t.TempDir()
	global := filepath.Join(dir, "config.json")
	require.NoError(t, os.WriteFile(global, []byte(`{"auths": {"ghcr.io": {"auth": "`+
		base64.StdEncoding.EncodeToString([]byte("global:global-pw"))+`"}, "quay.io": {"auth": "`+
		base64.StdEncoding.EncodeToString([]byte("q:quay-pw"))+`"}}, "credHelpers": {"ghcr.io": "nope"}}`), 0o600))

	path, remove, err := podAuthFile(context.Background(), global)
	require.NoError(t, err)
	require.Empty(t, path, "without repository credentials the worker's file serves as it is")
	remove()

	ctx := registry.WithRepoAuths(context.Background(), map[string]slipway.RegistryAuth{"ghcr.io": {Username: "team", Password: "team-pw"}})
	path, remove, err = podAuthFile(ctx, global)
	require.NoError(t, err)
	require.False(t, strings.HasPrefix(path, dir), "not beside anything of the build")
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	cfg, err := registry.LoadDockerConfig(path)
	require.NoError(t, err)
	for host, want := range map[string]string{"ghcr.io": "team:team-pw", "quay.io": "q:quay-pw"} {
		ac, err := cfg.GetAuthConfig(host)
		require.NoError(t, err, host)
		require.Equal(t, want, ac.Username+":"+ac.Password, host)
	}
	require.NotContains(t, cfg.CredentialHelpers, "ghcr.io", "the repository's entry is not shadowed by a helper")
	remove()
	_, err = os.Stat(filepath.Dir(path))
	require.True(t, os.IsNotExist(err), "removed with its directory")

	_, _, err = podAuthFile(ctx, filepath.Join(dir, "missing.json"))
	require.ErrorContains(t, err, "SLIPWAY_DOCKER_CONFIG")
}
