package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
	"github.com/slipway-ci/slipway/server"
)

// TestRepoCommands: `slipway repo add` registers a repository with a secret
// of its own that slipway makes and shows once; deliveries signed with it
// build, the global secret no longer works for it, and rotate-secret ends the
// old secret at once.
func TestRepoCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	sealer, err := slipway.NewSealer(strings.Repeat("0f", 32))
	require.NoError(t, err)
	const global = "the-global-github-secret"
	srv := httptest.NewServer(server.New(zerolog.Nop(), server.Config{
		AdminToken: "admin-token-for-cli", GitHubWebhookSecret: global, GitHubURL: "https://github.example.com",
		Registry: "127.0.0.1:1/cli",
	}, postgres.NewBuildService(db), nil, server.Services{Repos: postgres.NewRepoService(db, sealer), Tokens: postgres.NewTokenService(db)}))
	t.Cleanup(srv.Close)

	cli := newCLI(ctx, map[string]string{"SLIPWAY_SERVER": srv.URL, "SLIPWAY_TOKEN": "admin-token-for-cli"})
	secretRE := regexp.MustCompile(`webhook secret: ([0-9a-f]{64})\n`)
	push := func(secret, id string) int {
		body, err := os.ReadFile("../../forge/testdata/webhooks/github/push-branch.json")
		require.NoError(t, err)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/webhooks/github", bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", id)
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}

	out, errOut, code := cli("repo", "add", "github", "octo-org/hello-app")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "cloned from https://github.example.com/octo-org/hello-app.git")
	require.Contains(t, out, "webhook URL:    /webhooks/github")
	m := secretRE.FindStringSubmatch(out)
	require.NotNil(t, m, out)
	first := m[1]

	require.Equal(t, http.StatusAccepted, push(first, "d-1"), "its own secret signs")
	require.Equal(t, http.StatusUnauthorized, push(global, "d-2"), "the global secret no longer does")

	_, errOut, code = cli("repo", "add", "github", "octo-org/hello-app")
	require.Equal(t, exitRefused, code, errOut)
	require.Contains(t, errOut, "already exists")

	out, errOut, code = cli("repo", "list")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `github\s+octo-org/hello-app\s+true\s+127.0.0.1:1/cli/octo-org/hello-app`, out)
	require.NotContains(t, out, first, "a list never shows a secret")

	out, errOut, code = cli("repo", "rotate-secret", "octo-org/hello-app")
	require.Equal(t, 0, code, errOut)
	m = secretRE.FindStringSubmatch(out)
	require.NotNil(t, m, out)
	require.NotEqual(t, first, m[1])
	require.Equal(t, http.StatusUnauthorized, push(first, "d-3"), "the old secret ends at once")
	require.Equal(t, http.StatusAccepted, push(m[1], "d-4"))

	_, errOut, code = cli("repo", "add", "bitbucket", "a/b")
	require.Equal(t, exitBadInput, code, errOut)
	require.Contains(t, errOut, "forge must be one of")
	_, errOut, code = cli("repo", "add", "github", "no-slash")
	require.Equal(t, exitUsage, code, errOut)
	_, errOut, code = cli("repo", "rotate-secret", "octo-org/nothing")
	require.Equal(t, exitNotFound, code, errOut)
}
