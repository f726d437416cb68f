package postgres

import (
	"context"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// TestReadsOfAnUnreachableDatabase: every read the API and the dashboard
// answer from says EUNAVAILABLE (503, try again) when the database cannot be
// reached, never EINTERNAL (500).
func TestReadsOfAnUnreachableDatabase(t *testing.T) {
	ctx := context.Background()
	// Port 1 on loopback: nothing listens, the connect fails at once.
	pool, err := pgxpool.New(ctx, "postgres://slipway@127.0.0.1:1/slipway?connect_timeout=2")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	db := &DB{pool: pool}
	builds, repos := NewBuildService(db), NewRepoService(db, nil)
	promotions, tokens := NewPromotionService(db), NewTokenService(db)
	for name, read := range map[string]func() error{
		"FindBuildByID": func() error { _, err := builds.FindBuildByID(ctx, 1); return err },
		"FindBuilds":    func() error { _, err := builds.FindBuilds(ctx, slipway.BuildFilter{}); return err },
		"ReadLog":       func() error { _, err := builds.ReadLog(ctx, 1, 0, 10); return err },
		"FindRepos":     func() error { _, err := repos.FindRepos(ctx); return err },
		"FindRepo": func() error {
			_, err := repos.FindRepo(ctx, slipway.RepoKey{Forge: "github", Owner: "a", Name: "b"})
			return err
		},
		"FindPromotions": func() error { _, err := promotions.FindPromotions(ctx, slipway.PromotionFilter{}); return err },
		"LockTarget":     func() error { _, err := promotions.LockTarget(ctx, "registry.test/a/b"); return err },
		"FindTokens":     func() error { _, err := tokens.FindTokens(ctx); return err },
		"WriteLog":       func() error { return builds.WriteLog(ctx, 1, io.Discard) },
		"FindSession":    func() error { _, err := NewSessionService(db).FindSession(ctx, "x"); return err },
		"FindSecrets":    func() error { _, err := NewSecretService(db, nil).FindSecrets(ctx, 1); return err },
		"FindIntegrationResult": func() error {
			_, err := NewIntegrationService(db).FindIntegrationResult(ctx, 1)
			return err
		},
	} {
		if err := read(); slipway.ErrorCode(err) != slipway.EUNAVAILABLE {
			t.Errorf("%s: want EUNAVAILABLE, got %v", name, err)
		}
	}
}
