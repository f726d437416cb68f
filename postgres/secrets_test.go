package postgres_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
)

func TestSecretService(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	s := sealedSecretService(t, b)
	res, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "s"}), "reg/acme/app")
	require.NoError(t, err)
	repo := res.Build.RepoID

	id, err := s.FindRepoID(ctx, "", "acme", "APP")
	require.NoError(t, err)
	require.Equal(t, repo, id)
	_, err = s.FindRepoID(ctx, "", "acme", "nope")
	require.Equal(t, slipway.ENOTFOUND, slipway.ErrorCode(err))

	value := []byte("s3cr3t-value-for-npm")
	info, err := s.SetSecret(ctx, repo, "NPM_TOKEN", value)
	require.NoError(t, err)
	require.Equal(t, "NPM_TOKEN", info.Name)
	_, err = s.SetSecret(ctx, repo, "NPM_TOKEN", []byte("replaced-value"))
	require.NoError(t, err, "setting again replaces")

	var stored []byte
	require.NoError(t, b.db.Pool().QueryRow(ctx, `SELECT value_enc FROM build_secrets`).Scan(&stored))
	require.False(t, bytes.Contains(stored, []byte("replaced-value")), "sealed at rest")

	list, err := s.FindSecrets(ctx, repo)
	require.NoError(t, err)
	require.Len(t, list, 1)

	got, err := s.OpenSecrets(ctx, repo, []string{"NPM_TOKEN"})
	require.NoError(t, err)
	require.Equal(t, "replaced-value", string(got["NPM_TOKEN"]))
	_, err = s.OpenSecrets(ctx, repo, []string{"NPM_TOKEN", "MISSING"})
	require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err))
	require.Contains(t, slipway.ErrorMessage(err), "MISSING")

	// A sealed value copied to another repository does not open there.
	other, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "s2", Owner: "other"}), "reg/other/app")
	require.NoError(t, err)
	_, err = b.db.Pool().Exec(ctx, `INSERT INTO build_secrets (repo_id, name, value_enc) SELECT $1, name, value_enc FROM build_secrets WHERE repo_id = $2`, other.Build.RepoID, repo)
	require.NoError(t, err)
	_, err = s.OpenSecrets(ctx, other.Build.RepoID, []string{"NPM_TOKEN"})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "replaced-value")

	for _, bad := range []struct{ name, value string }{{"1BAD", "long enough"}, {"OK", "abc"}, {"with-dash", "long enough"}} {
		_, err := s.SetSecret(ctx, repo, bad.name, []byte(bad.value))
		require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err), bad.name)
	}
	_, err = s.SetSecret(ctx, 999999, "X_Y", []byte("long enough"))
	require.Equal(t, slipway.ENOTFOUND, slipway.ErrorCode(err))

	require.NoError(t, s.DeleteSecret(ctx, repo, "NPM_TOKEN"))
	require.Equal(t, slipway.ENOTFOUND, slipway.ErrorCode(s.DeleteSecret(ctx, repo, "NPM_TOKEN")))

	_, err = postgres.NewSecretService(b.db, nil).SetSecret(ctx, repo, "X_Y", []byte("long enough"))
	require.Equal(t, slipway.EUNAVAILABLE, slipway.ErrorCode(err))
}

// sealedSecretService returns a SecretService over b's database with a
// fixed test key.
func sealedSecretService(t *testing.T, b *testBundle) *postgres.SecretService {
	t.Helper()
	sealer, err := slipway.NewSealer("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	require.NoError(t, err)
	return postgres.NewSecretService(b.db, sealer)
}
