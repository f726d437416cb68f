package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
	"github.com/slipway-ci/slipway/server"
)

// TestClientCommands runs token, builds and promote as a script would: real
// database, the real HTTP handler, exit codes and messages.
func TestClientCommands(t *testing.T) {
	t.Parallel()
	db, dbURL := pgtest.NewDBURL(t)
	builds := postgres.NewBuildService(db)
	srv := httptest.NewServer(server.New(zerolog.Nop(), server.Config{AdminToken: "admin-token-for-cli"}, builds, nil,
		server.Services{Tokens: postgres.NewTokenService(db), Promotions: postgres.NewPromotionService(db)}))
	t.Cleanup(srv.Close)
	ctx := context.Background()
	_, err := builds.EnqueueTrigger(ctx, slipway.Trigger{Forge: "github", DeliveryID: "d1", Event: "push",
		Owner: "acme", Name: "app", CloneURL: "https://github.com/acme/app.git", Ref: "refs/heads/main",
		Commit: strings.Repeat("ef", 20)}, "127.0.0.1:1/acme/app")
	require.NoError(t, err)

	cli := func(env map[string]string, args ...string) (string, string, int) { return newCLI(ctx, env)(args...) }
	dbEnv := map[string]string{"SLIPWAY_DATABASE_URL": dbURL}

	out, errOut, code := cli(dbEnv, "token", "create", "--name", "reader", "--role", "viewer")
	require.Equal(t, 0, code, errOut)
	secret := strings.TrimSpace(out)
	require.True(t, strings.HasPrefix(secret, slipway.TokenPrefix), out)
	require.Contains(t, errOut, "shown only now")

	_, errOut, code = cli(dbEnv, "token", "create", "--name", "reader", "--role", "viewer")
	require.Equal(t, exitRefused, code, errOut)
	_, errOut, code = cli(dbEnv, "token", "create", "--name", "x", "--role", "root")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "root")
	out, _, code = cli(dbEnv, "token", "list")
	require.Equal(t, 0, code)
	require.Contains(t, out, "reader")
	require.NotContains(t, out, secret)

	env := map[string]string{"SLIPWAY_SERVER": srv.URL, "SLIPWAY_TOKEN": secret}
	out, errOut, code = cli(env, "builds", "list")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "acme/app")
	require.Contains(t, out, "queued")
	out, errOut, code = cli(env, "builds", "get", "1", "--json")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, `"state": "queued"`)
	_, errOut, code = cli(env, "builds", "get", "99")
	require.Equal(t, exitNotFound, code, errOut)

	_, errOut, code = cli(env, "promote", "1", "v1.0.0")
	require.Equal(t, exitAuth, code, errOut)
	require.Contains(t, errOut, "release-manager")
	_, errOut, code = cli(map[string]string{"SLIPWAY_SERVER": srv.URL, "SLIPWAY_TOKEN": "admin-token-for-cli"}, "promote", "1", "v1.0.0")
	require.Equal(t, exitRefused, code, errOut)
	require.Contains(t, errOut, "Build 1 is queued")
	_, errOut, code = cli(map[string]string{"SLIPWAY_TOKEN": secret}, "promote", "1", "v1")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "SLIPWAY_SERVER")
	_, errOut, code = cli(map[string]string{"SLIPWAY_SERVER": srv.URL}, "builds", "list")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "SLIPWAY_TOKEN")
	_, _, code = cli(env, "promote", "1")
	require.Equal(t, exitUsage, code)
	_, errOut, code = cli(map[string]string{"SLIPWAY_SERVER": srv.URL, "SLIPWAY_TOKEN": "slw_nope"}, "builds", "list")
	require.Equal(t, exitAuth, code)
	require.Contains(t, errOut, "Unknown")

	_, errOut, code = cli(dbEnv, "token", "delete", "1")
	require.Equal(t, 0, code, errOut)
	_, _, code = cli(env, "builds", "list")
	require.Equal(t, exitAuth, code, "a deleted token stops working")
	_, _, code = cli(dbEnv, "token", "delete", "1")
	require.Equal(t, exitNotFound, code)
}
