package postgres_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
)

func TestRegistryAuths(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	s := sealedSecretService(t, b)
	res, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "ra"}), "reg/acme/app")
	require.NoError(t, err)
	repo := res.Build.RepoID

	_, err = postgres.NewSecretService(b.db, nil).SetRegistryAuth(ctx, repo, "ghcr.io", "bot", "pw-123456")
	require.Equal(t, slipway.EUNAVAILABLE, slipway.ErrorCode(err), "no secret key")
	for _, bad := range [][3]string{
		{"", "bot", "pw-123456"}, {"gh cr.io", "bot", "pw-123456"}, {"ghcr.io", "b:ot", "pw-123456"},
		{"ghcr.io", "bot", "xyz"}, {"ghcr.io", "bot", "pw 123456"},
	} {
		_, err = s.SetRegistryAuth(ctx, repo, bad[0], bad[1], bad[2])
		require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err), "%q", bad)
		require.NotContains(t, err.Error(), bad[2])
	}
	_, err = s.SetRegistryAuth(ctx, 999999, "ghcr.io", "bot", "pw-123456")
	require.Equal(t, slipway.ENOTFOUND, slipway.ErrorCode(err))

	info, err := s.SetRegistryAuth(ctx, repo, "https://GHCR.io/", "bot", "first-password")
	require.NoError(t, err)
	require.Equal(t, "ghcr.io", info.Registry, "normalized")
	_, err = s.SetRegistryAuth(ctx, repo, "ghcr.io", "bot2", "second-password")
	require.NoError(t, err, "setting again replaces")
	_, err = s.SetRegistryAuth(ctx, repo, "registry.test:5000", "ci", "third-password")
	require.NoError(t, err)

	var stored []byte
	require.NoError(t, b.db.Pool().QueryRow(ctx, `SELECT password_enc FROM repo_registry_auths WHERE registry = 'ghcr.io'`).Scan(&stored))
	require.False(t, bytes.Contains(stored, []byte("second-password")), "sealed at rest")

	list, err := s.FindRegistryAuths(ctx, repo)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "ghcr.io", list[0].Registry)
	require.Equal(t, "bot2", list[0].Username)
	require.Equal(t, "registry.test:5000", list[1].Registry)

	got, err := s.OpenRegistryAuths(ctx, repo)
	require.NoError(t, err)
	require.Equal(t, map[string]slipway.RegistryAuth{
		"ghcr.io":            {Username: "bot2", Password: "second-password"},
		"registry.test:5000": {Username: "ci", Password: "third-password"},
	}, got)

	// A sealed value copied to another repository or host does not open.
	other, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "ra2", Owner: "other"}), "reg/other/app")
	require.NoError(t, err)
	_, err = b.db.Pool().Exec(ctx, `INSERT INTO repo_registry_auths (repo_id, registry, username, password_enc)
SELECT $1, registry, username, password_enc FROM repo_registry_auths WHERE repo_id = $2 AND registry = 'ghcr.io'`, other.Build.RepoID, repo)
	require.NoError(t, err)
	_, err = s.OpenRegistryAuths(ctx, other.Build.RepoID)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "second-password")
	empty, err := s.FindRegistryAuths(ctx, 999999)
	require.NoError(t, err)
	require.Empty(t, empty)

	require.NoError(t, s.DeleteRegistryAuth(ctx, repo, "GHCR.IO"))
	require.Equal(t, slipway.ENOTFOUND, slipway.ErrorCode(s.DeleteRegistryAuth(ctx, repo, "ghcr.io")))
	got, err = s.OpenRegistryAuths(ctx, repo)
	require.NoError(t, err)
	require.Equal(t, []string{"registry.test:5000"}, keys(got))
}

func keys[V any](m map[string]V) []string {
	out := []string{}
	for k := range m {
		out = append(out, k)
	}
	return out
}
