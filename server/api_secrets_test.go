package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
)

const testSecretValue = "the-build-secret-value"

func TestSecretsAPI(t *testing.T) {
	t.Parallel()
	sealer, err := slipway.NewSealer(strings.Repeat("ab", 32))
	require.NoError(t, err)
	b := setup(t, &setupOpts{withDB: func(db *postgres.DB, c *Config) { c.Secrets = postgres.NewSecretService(db, sealer) }})
	t.Cleanup(func() { require.NotContains(t, b.logs.String(), testSecretValue, "the value never reaches the log") })
	_, err = b.builds.EnqueueTrigger(context.Background(), slipway.Trigger{Forge: "github", DeliveryID: "d1", Event: "push",
		Owner: "Acme", Name: "App", CloneURL: "https://github.com/acme/app.git", Ref: "refs/heads/main",
		Commit: strings.Repeat("a", 40)}, "reg/acme/app")
	require.NoError(t, err)
	const path = "/api/v1/repos/acme/app/secrets"

	t.Run("SetListDelete", func(t *testing.T) {
		resp, out := b.send(t, http.MethodPut, path+"/NPM_TOKEN", `{"value": "`+testSecretValue+`"}`)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%v", out)
		require.Equal(t, "NPM_TOKEN", out["name"])
		require.NotContains(t, out["_raw"], testSecretValue)
		resp, out = b.get(t, path)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, out["_raw"], `"NPM_TOKEN"`)
		require.NotContains(t, out["_raw"], testSecretValue)
		resp, out = b.send(t, http.MethodDelete, path+"/NPM_TOKEN", "")
		require.Equal(t, http.StatusNoContent, resp.StatusCode, "%v", out)
		resp, out = b.send(t, http.MethodDelete, path+"/NPM_TOKEN", "")
		requireError(t, resp, out, http.StatusNotFound, "not_found")
	})

	t.Run("BadInputWritesNothing", func(t *testing.T) {
		for _, tc := range []struct {
			path, body string
			status     int
			code       string
		}{
			{path + "/bad-name", `{"value": "` + testSecretValue + `"}`, http.StatusBadRequest, "invalid"},
			{path + "/OK", `{"value": "abc"}`, http.StatusBadRequest, "invalid"},
			{path + "/OK", `{"valu": "` + testSecretValue + `"}`, http.StatusBadRequest, "invalid"},
			{path + "/OK", `{}`, http.StatusBadRequest, "invalid"},
			{path + "/OK", testSecretValue, http.StatusBadRequest, "invalid"},
			{path + "/OK", `{"value": "` + testSecretValue + `"} {}`, http.StatusBadRequest, "invalid"},
			{path + "/OK", `{"value": "` + strings.Repeat("x", 200<<10) + `"}`, http.StatusRequestEntityTooLarge, "too_large"},
			{"/api/v1/repos/acme/nope/secrets/OK", `{"value": "` + testSecretValue + `"}`, http.StatusNotFound, "not_found"},
			{path + "/OK?forge=svn", `{"value": "` + testSecretValue + `"}`, http.StatusBadRequest, "invalid"},
		} {
			resp, out := b.send(t, http.MethodPut, tc.path, tc.body)
			msg := requireError(t, resp, out, tc.status, tc.code)
			require.NotContains(t, msg, testSecretValue, tc.path)
		}
		require.Zero(t, b.count(t, "build_secrets"))
	})

	t.Run("NoStore", func(t *testing.T) {
		t.Parallel()
		plain := setup(t, nil)
		resp, out := plain.send(t, http.MethodGet, path, "")
		requireError(t, resp, out, http.StatusServiceUnavailable, "unavailable")
	})
}

const testCloneToken = "the-repos-own-clone-token"

// TestCloneCredentialsAPI: an admin sets and deletes a repository's clone
// token and deploy key; the repository's JSON tells only that they exist
// (and the key's fingerprint); no answer and no log line holds either.
func TestCloneCredentialsAPI(t *testing.T) {
	t.Parallel()
	sealer, err := slipway.NewSealer(strings.Repeat("ab", 32))
	require.NoError(t, err)
	b := setup(t, &setupOpts{withDB: func(db *postgres.DB, c *Config) {
		c.Secrets = postgres.NewSecretService(db, sealer)
		c.Credentials = postgres.NewSecretService(db, sealer)
	}})
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	keyPEM := string(pem.EncodeToMemory(block))
	keyBody, err := json.Marshal(map[string]string{"private_key": keyPEM})
	require.NoError(t, err)
	keyLine := strings.Split(keyPEM, "\n")[2] // a line of the key's base64
	secretParts := []string{testCloneToken, keyLine}
	t.Cleanup(func() {
		for _, s := range secretParts {
			require.NotContains(t, b.logs.String(), s, "a credential never reaches the log")
		}
	})
	_, err = b.builds.EnqueueTrigger(context.Background(), slipway.Trigger{Forge: "gitea", DeliveryID: "d1", Event: "push",
		Owner: "acme", Name: "app", CloneURL: "https://git.example.com/acme/app.git", Ref: "refs/heads/main",
		Commit: strings.Repeat("a", 40)}, "reg/acme/app")
	require.NoError(t, err)
	repoJSON := func() map[string]any {
		resp, out := b.get(t, "/api/v1/repos/acme/app")
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		for _, s := range secretParts {
			require.NotContains(t, out["_raw"], s)
		}
		resp, list := b.get(t, "/api/v1/repos")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		for _, s := range secretParts {
			require.NotContains(t, list["_raw"], s)
		}
		return out
	}
	require.Equal(t, false, repoJSON()["has_clone_token"])

	resp, out := b.send(t, http.MethodPut, "/api/v1/repos/acme/app/clone-token", `{"token": "`+testCloneToken+`", "username": "ci-bot"}`)
	require.Equal(t, http.StatusNoContent, resp.StatusCode, out["_raw"])
	require.Equal(t, true, repoJSON()["has_clone_token"])
	var enc []byte
	require.NoError(t, b.db.Pool().QueryRow(context.Background(), `SELECT clone_token_enc FROM repos`).Scan(&enc))
	require.NotContains(t, string(enc), testCloneToken, "sealed at rest")
	rc, err := postgres.NewSecretService(b.db, sealer).OpenRepoCredentials(context.Background(), 1)
	require.NoError(t, err)
	require.Equal(t, slipway.RepoCredentials{CloneURL: "https://git.example.com/acme/app.git", CloneUsername: "ci-bot", CloneToken: testCloneToken}, *rc)

	resp, out = b.send(t, http.MethodPut, "/api/v1/repos/acme/app/deploy-key", string(keyBody))
	require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
	signer, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	require.Equal(t, ssh.FingerprintSHA256(signer.PublicKey()), out["fingerprint"])
	require.Equal(t, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), out["public_key"])
	require.NotContains(t, out["_raw"], keyLine)
	got := repoJSON()
	require.Equal(t, true, got["has_deploy_key"])
	require.Equal(t, out["fingerprint"], got["deploy_key_fingerprint"])

	t.Run("BadInput", func(t *testing.T) {
		encrypted, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("passphrase"))
		require.NoError(t, err)
		encBody, _ := json.Marshal(map[string]string{"private_key": string(pem.EncodeToMemory(encrypted))})
		for _, tc := range []struct {
			method, path, body string
			status             int
			code, msg          string
		}{
			{http.MethodPut, "/api/v1/repos/acme/app/clone-token", `{"token": "ab"}`, 400, "invalid", "token must be"},
			{http.MethodPut, "/api/v1/repos/acme/app/clone-token", `{"token": "` + testCloneToken + `", "username": "a:b"}`, 400, "invalid", "username"},
			{http.MethodPut, "/api/v1/repos/acme/app/clone-token", `{"tokn": "` + testCloneToken + `"}`, 400, "invalid", "must be JSON"},
			{http.MethodPut, "/api/v1/repos/acme/app/clone-token", `{}`, 400, "invalid", "token is required"},
			{http.MethodPut, "/api/v1/repos/acme/nope/clone-token", `{"token": "` + testCloneToken + `"}`, 404, "not_found", "not found"},
			{http.MethodPut, "/api/v1/repos/acme/app/deploy-key", string(encBody), 400, "invalid", "passphrase"},
			{http.MethodPut, "/api/v1/repos/acme/app/deploy-key", `{"private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\n` + keyLine + `\n"}`, 400, "invalid", "not an OpenSSH private key"},
			{http.MethodPut, "/api/v1/repos/acme/app/deploy-key", `{}`, 400, "invalid", "private_key is required"},
		} {
			resp, out := b.send(t, tc.method, tc.path, tc.body)
			msg := requireError(t, resp, out, tc.status, tc.code)
			require.Contains(t, msg, tc.msg, tc.body)
			for _, s := range secretParts {
				require.NotContains(t, out["_raw"], s)
			}
		}
		// Nothing was overwritten.
		rc, err := postgres.NewSecretService(b.db, sealer).OpenRepoCredentials(context.Background(), 1)
		require.NoError(t, err)
		require.Equal(t, testCloneToken, rc.CloneToken)
		require.Equal(t, keyPEM, string(rc.DeployKey))
	})

	resp, out = b.send(t, http.MethodDelete, "/api/v1/repos/acme/app/clone-token", "")
	require.Equal(t, http.StatusNoContent, resp.StatusCode, out["_raw"])
	resp, out = b.send(t, http.MethodDelete, "/api/v1/repos/acme/app/clone-token", "")
	requireError(t, resp, out, http.StatusNotFound, "not_found")
	resp, out = b.send(t, http.MethodDelete, "/api/v1/repos/acme/app/deploy-key", "")
	require.Equal(t, http.StatusNoContent, resp.StatusCode, out["_raw"])
	resp, out = b.send(t, http.MethodDelete, "/api/v1/repos/acme/app/deploy-key", "")
	requireError(t, resp, out, http.StatusNotFound, "not_found")
	got = repoJSON()
	require.Equal(t, false, got["has_clone_token"])
	require.Equal(t, false, got["has_deploy_key"])
	require.Equal(t, "", got["deploy_key_fingerprint"])

	t.Run("NoStore", func(t *testing.T) {
		plain := setup(t, nil)
		resp, out := plain.send(t, http.MethodPut, "/api/v1/repos/acme/app/clone-token", `{"token": "`+testCloneToken+`"}`)
		requireError(t, resp, out, http.StatusServiceUnavailable, "unavailable")
	})
}
