package server

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// postForge sends a signed delivery of forge ("github", "gitlab", "gitea")
// with body to the test server.
func postForge(t *testing.T, b *testBundle, forge, id string, body []byte) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.srv.URL+"/webhooks/"+forge, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	switch forge {
	case "github":
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", id)
		req.Header.Set("X-Hub-Signature-256", signGitHub(testSecret, body))
	case "gitlab":
		req.Header.Set("X-Gitlab-Event", "Push Hook")
		req.Header.Set("X-Gitlab-Event-UUID", id)
		req.Header.Set("X-Gitlab-Token", testSecret)
	case "gitea":
		req.Header.Set("X-Gitea-Event", "push")
		req.Header.Set("X-Gitea-Delivery", id)
		req.Header.Set("X-Gitea-Signature", signHex(testSecret, body))
	}
	return do(t, b.srv.Client(), req)
}

// TestRegistrationAndOwners: with SLIPWAY_AUTO_REGISTER off, a signed
// delivery of a repository nobody registered writes nothing and says how to
// register it; every forge has an owner allow-list, and a GitLab group allows
// its subgroups but not a group whose name merely starts the same.
func TestRegistrationAndOwners(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("AutoRegisterOff", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &setupOpts{config: func(c *Config) {
			c.AutoRegister = false
			c.GitLabWebhookToken, c.GiteaWebhookSecret = testSecret, testSecret
		}})
		for _, forge := range []string{"github", "gitlab", "gitea"} {
			resp, out := postForge(t, b, forge, "d-"+forge, readForgeFixture(t, forge, "push-branch.json"))
			msg := requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN)
			require.Contains(t, msg, "not registered")
			require.Contains(t, msg, "slipway repo add "+forge)
			require.Contains(t, msg, "SLIPWAY_AUTO_REGISTER")
		}
		b.requireNoRows(t)

		// Registered by an admin, the same delivery builds.
		_, err := b.repos.CreateRepo(ctx, slipway.RepoCreate{Forge: "github", Owner: "octo-org", Name: "hello-app",
			CloneURL: "https://github.com/octo-org/hello-app.git", Image: testRegistry + "/octo-org/hello-app"})
		require.NoError(t, err)
		resp, out := postForge(t, b, "github", "d-github-2", readForgeFixture(t, "github", "push-branch.json"))
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
	})

	t.Run("OwnerAllowLists", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &setupOpts{config: func(c *Config) {
			c.GitLabWebhookToken, c.GiteaWebhookSecret = testSecret, testSecret
			c.GitLabAllowedOwners = []string{"Platform"}
			c.GiteaAllowedOwners = []string{"someone-else"}
		}})
		// platform/backend/api-server: a subgroup of an allowed group.
		resp, out := postForge(t, b, "gitlab", "d-1", readForgeFixture(t, "gitlab", "push-subgroup.json"))
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])

		// platform-evil/... is not platform's.
		evil := bytes.ReplaceAll(readForgeFixture(t, "gitlab", "push-subgroup.json"), []byte("platform/"), []byte("platform-evil/"))
		require.True(t, bytes.Contains(evil, []byte("platform-evil/backend")))
		resp, out = postForge(t, b, "gitlab", "d-2", evil)
		msg := requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN)
		require.Contains(t, msg, "SLIPWAY_GITLAB_ALLOWED_OWNERS")

		resp, out = postForge(t, b, "gitea", "d-3", readForgeFixture(t, "gitea", "push-branch.json"))
		msg = requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN)
		require.Contains(t, msg, "SLIPWAY_GITEA_ALLOWED_OWNERS")
		require.Equal(t, 1, b.count(t, "builds"), "only the allowed delivery built")
		require.False(t, strings.Contains(msg, testSecret))
	})
}
