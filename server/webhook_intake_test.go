package server

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

const (
	testGitLabToken  = "gitlab-token-for-tests"
	testGiteaSecret  = "gitea-secret-for-tests"
	testRepoSecret   = "repo-own-secret-for-tests"
	gitlabPushCommit = "3f1c9a7e5b2d4c6e8f0a1b2c3d4e5f60718293a4"
	giteaPushCommit  = "3f1c9a7e5b2d4c6e8f0a1b2c3d4e5f60718293a4"
)

func setupForges(t *testing.T) *testBundle {
	return setup(t, &setupOpts{config: func(c *Config) {
		c.GitLabWebhookToken = testGitLabToken
		c.GiteaWebhookSecret = testGiteaSecret
	}})
}

// postForge sends body to /webhooks/<forge> with header.
func (b *testBundle) postForge(t *testing.T, forge string, body []byte, header http.Header) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.srv.URL+"/webhooks/"+forge, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	return do(t, b.srv.Client(), req)
}

func gitlabHeader(event, token, idem, uuid string) http.Header {
	h := http.Header{}
	for k, v := range map[string]string{"X-Gitlab-Event": event, "X-Gitlab-Token": token, "Idempotency-Key": idem, "X-Gitlab-Event-UUID": uuid} {
		if v != "" {
			h.Set(k, v)
		}
	}
	return h
}

func giteaHeader(secret string, body []byte, delivery string, forgejo bool) http.Header {
	h := http.Header{}
	if forgejo {
		h.Set("X-Forgejo-Event", "push")
		h.Set("X-Forgejo-Delivery", delivery)
		h.Set("X-Forgejo-Signature", signHex(secret, body))
	} else {
		h.Set("X-Gitea-Event", "push")
		h.Set("X-Gitea-Delivery", delivery)
		h.Set("X-Gitea-Signature", signHex(secret, body))
	}
	return h
}

func TestGitLabWebhook(t *testing.T) {
	t.Parallel()
	body := readForgeFixture(t, "gitlab", "push-branch.json")

	t.Run("PushQueuesBuildOnce", func(t *testing.T) {
		t.Parallel()
		b := setupForges(t)
		resp, out := b.postForge(t, "gitlab", body, gitlabHeader("Push Hook", testGitLabToken, "idem-1", "uuid-1"))
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		id := buildIDOf(t, out)
		build, err := b.builds.FindBuildByID(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, "gitlab", build.Forge)
		require.Equal(t, "platform/web-app", build.Repo)
		require.Equal(t, gitlabPushCommit, build.Commit)
		require.Equal(t, "idem-1", build.DeliveryID)
		require.Equal(t, testRegistry+"/platform/web-app", build.Image)

		// A retry keeps Idempotency-Key (and may carry a new event UUID).
		resp, out = b.postForge(t, "gitlab", body, gitlabHeader("Push Hook", testGitLabToken, "idem-1", "uuid-2"))
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
		require.Equal(t, id, buildIDOf(t, out))
		require.Equal(t, true, out["duplicate"])
		require.Equal(t, 1, b.count(t, "builds"))
	})
	t.Run("EventUUIDWithoutIdempotencyKey", func(t *testing.T) {
		t.Parallel()
		b := setupForges(t)
		_, out := b.postForge(t, "gitlab", body, gitlabHeader("Push Hook", testGitLabToken, "", "uuid-1"))
		_, again := b.postForge(t, "gitlab", body, gitlabHeader("Push Hook", testGitLabToken, "", "uuid-1"))
		require.Equal(t, buildIDOf(t, out), buildIDOf(t, again))
		build, err := b.builds.FindBuildByID(context.Background(), buildIDOf(t, out))
		require.NoError(t, err)
		require.Equal(t, "uuid-1", build.DeliveryID)
	})
	t.Run("BadTokenWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setupForges(t)
		for name, token := range map[string]string{"missing": "", "wrong": "nope", "github secret": testSecret} {
			resp, out := b.postForge(t, "gitlab", body, gitlabHeader("Push Hook", token, "idem-1", ""))
			msg := requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
			require.Contains(t, msg, "X-Gitlab-Token", name)
		}
		b.requireNoRows(t)
	})
	t.Run("MissingDeliveryID", func(t *testing.T) {
		t.Parallel()
		b := setupForges(t)
		resp, out := b.postForge(t, "gitlab", body, gitlabHeader("Push Hook", testGitLabToken, "", ""))
		msg := requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
		require.Contains(t, msg, "Idempotency-Key")
		b.requireNoRows(t)
	})
	t.Run("DeletionAndOtherEventsIgnored", func(t *testing.T) {
		t.Parallel()
		b := setupForges(t)
		resp, out := b.postForge(t, "gitlab", readForgeFixture(t, "gitlab", "tag_push-deleted.json"),
			gitlabHeader("Tag Push Hook", testGitLabToken, "idem-2", ""))
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
		require.Equal(t, `tag "v1.2.3" was deleted`, out["ignored"])
		resp, out = b.postForge(t, "gitlab", []byte(`{"object_kind":"note"}`), gitlabHeader("Note Hook", testGitLabToken, "", ""))
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
		require.Equal(t, `event "Note Hook" does not start builds`, out["ignored"])
		b.requireNoRows(t)
	})
	t.Run("TokenUnset", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		resp, out := b.postForge(t, "gitlab", body, gitlabHeader("Push Hook", testGitLabToken, "idem-1", ""))
		msg := requireError(t, resp, out, http.StatusServiceUnavailable, slipway.EUNAVAILABLE)
		require.Contains(t, msg, "SLIPWAY_GITLAB_WEBHOOK_TOKEN")
		b.requireNoRows(t)
	})
}

func TestGiteaWebhook(t *testing.T) {
	t.Parallel()
	body := readForgeFixture(t, "gitea", "push-branch.json")

	for _, forgejo := range []bool{false, true} {
		t.Run("PushQueuesBuildOnce/forgejo="+strconv.FormatBool(forgejo), func(t *testing.T) {
			t.Parallel()
			b := setupForges(t)
			resp, out := b.postForge(t, "gitea", body, giteaHeader(testGiteaSecret, body, "del-1", forgejo))
			require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
			id := buildIDOf(t, out)
			build, err := b.builds.FindBuildByID(context.Background(), id)
			require.NoError(t, err)
			require.Equal(t, "gitea", build.Forge)
			require.Equal(t, "tools/deploy-kit", build.Repo)
			require.Equal(t, giteaPushCommit, build.Commit)
			_, again := b.postForge(t, "gitea", body, giteaHeader(testGiteaSecret, body, "del-1", forgejo))
			require.Equal(t, id, buildIDOf(t, again))
			require.Equal(t, 1, b.count(t, "builds"))
		})
	}
	t.Run("GitHubStyleSignature", func(t *testing.T) {
		t.Parallel()
		b := setupForges(t)
		h := http.Header{}
		h.Set("X-Gitea-Event", "push")
		h.Set("X-Gitea-Delivery", "del-2")
		h.Set("X-Hub-Signature-256", signGitHub(testGiteaSecret, body))
		resp, out := b.postForge(t, "gitea", body, h)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
	})
	t.Run("BadSignatureWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setupForges(t)
		for _, secret := range []string{"wrong", testSecret, testGitLabToken} {
			resp, out := b.postForge(t, "gitea", body, giteaHeader(secret, body, "del-1", false))
			requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
		}
		h := giteaHeader(testGiteaSecret, body, "del-1", false)
		h.Del("X-Gitea-Signature")
		resp, out := b.postForge(t, "gitea", body, h)
		msg := requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
		require.Contains(t, msg, "X-Gitea-Signature header is missing")
		b.requireNoRows(t)
	})
	t.Run("CreateEventIgnored", func(t *testing.T) {
		t.Parallel()
		b := setupForges(t)
		create := readForgeFixture(t, "gitea", "create-tag.json")
		h := giteaHeader(testGiteaSecret, create, "del-3", false)
		h.Set("X-Gitea-Event", "create")
		resp, out := b.postForge(t, "gitea", create, h)
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
		require.Equal(t, `event "create" does not start builds`, out["ignored"])
		b.requireNoRows(t)
	})
}

// TestRepoSettingsAtIntake registers a repository with its own settings and
// checks that each one applies to webhooks.
func TestRepoSettingsAtIntake(t *testing.T) {
	t.Parallel()
	body := readFixture(t, "push-branch.json") // octo-org/hello-app, refs/heads/main
	ctx := context.Background()
	register := func(t *testing.T, b *testBundle, c slipway.RepoCreate) {
		c.Forge, c.Owner, c.Name = "github", "octo-org", "hello-app"
		c.CloneURL = "https://github.com/octo-org/hello-app.git"
		if c.Image == "" {
			c.Image = "registry.test:5000/team/hello"
		}
		_, err := b.repos.CreateRepo(ctx, c)
		require.NoError(t, err)
	}

	t.Run("OwnWebhookSecretReplacesGlobal", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		register(t, b, slipway.RepoCreate{WebhookSecret: testRepoSecret})
		resp, out := b.post(t, delivery{event: "push", id: "d-1", body: body})
		requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
		require.Equal(t, 0, b.count(t, "builds"))
		resp, out = b.post(t, delivery{event: "push", id: "d-1", body: body,
			sign: func(body []byte) string { return signGitHub(testRepoSecret, body) }})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		require.NotContains(t, b.logs.String(), testRepoSecret)

		// A body slipway cannot read the repository from is checked with the
		// global secret only, and the refusal says so (it is not the
		// repository's secret that is wrong).
		resp, out = b.post(t, delivery{event: "push", id: "d-2", body: body[:len(body)/2],
			sign: func(body []byte) string { return signGitHub(testRepoSecret, body) }})
		msg := requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
		require.Contains(t, msg, "could not read the repository from the payload")
		require.Contains(t, msg, "SLIPWAY_GITHUB_WEBHOOK_SECRET")
		resp, out = b.post(t, delivery{event: "push", id: "d-3", body: body})
		msg = requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
		require.NotContains(t, msg, "could not read the repository", "a payload that names its repository was checked with its own secret")
		require.Equal(t, 1, b.count(t, "builds"))
	})
	t.Run("OwnSecretWorksWithoutGlobal", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &setupOpts{config: func(c *Config) { c.GitHubWebhookSecret = "" }})
		register(t, b, slipway.RepoCreate{WebhookSecret: testRepoSecret})
		resp, out := b.post(t, delivery{event: "push", id: "d-1", body: body,
			sign: func(body []byte) string { return signGitHub(testRepoSecret, body) }})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		// Another repository still finds webhooks disabled.
		other := bytes.ReplaceAll(body, []byte(`"name": "hello-app"`), []byte(`"name": "Other"`))
		resp, out = b.post(t, delivery{event: "push", id: "d-2", body: other})
		requireError(t, resp, out, http.StatusServiceUnavailable, slipway.EUNAVAILABLE)
	})
	t.Run("AllowedBranches", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		register(t, b, slipway.RepoCreate{AllowedBranches: []string{"develop", "release/*"}})
		resp, out := b.post(t, delivery{event: "push", id: "d-1", body: body})
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
		require.Equal(t, `branch "main" is not in the repository's allowed branches`, out["ignored"])
		require.Equal(t, 0, b.count(t, "builds"))

		release := bytes.Replace(body, []byte(`"ref": "refs/heads/main"`), []byte(`"ref": "refs/heads/release/1.2"`), 1)
		resp, out = b.post(t, delivery{event: "push", id: "d-2", body: release})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		buildIDOf(t, out)
		tag := bytes.Replace(body, []byte(`"ref": "refs/heads/main"`), []byte(`"ref": "refs/tags/v1"`), 1)
		resp, out = b.post(t, delivery{event: "push", id: "d-3", body: tag})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		buildIDOf(t, out)
	})
	t.Run("ImageAndPlatforms", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		register(t, b, slipway.RepoCreate{Image: "registry.test:5000/team/hello", Platforms: []string{"linux/arm64"}})
		resp, out := b.post(t, delivery{event: "push", id: "d-1", body: body})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		build, err := b.builds.FindBuildByID(ctx, buildIDOf(t, out))
		require.NoError(t, err)
		require.Equal(t, "registry.test:5000/team/hello", build.Image)
		require.Equal(t, []string{"linux/arm64"}, build.TargetPlatforms)
		repo, err := b.repos.FindRepo(ctx, slipway.RepoKey{Owner: "octo-org", Name: "hello-app"})
		require.NoError(t, err)
		require.Equal(t, "main", repo.DefaultBranch, "the push names the default branch")
	})
	t.Run("UnregisteredRepoBuildsAllPlatformsOfItsFile", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		resp, out := b.post(t, delivery{event: "push", id: "d-1", body: body})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		build, err := b.builds.FindBuildByID(ctx, buildIDOf(t, out))
		require.NoError(t, err)
		require.Empty(t, build.TargetPlatforms)
		require.True(t, strings.HasSuffix(build.Image, "/octo-org/hello-app"))
	})
}

// TestBadBodiesWriteNothing sends each forge a malformed, an oversized, an
// unsigned and a wrongly signed body: each gets a 4xx with a message naming
// the problem, and no row is written.
func TestBadBodiesWriteNothing(t *testing.T) {
	t.Parallel()
	type forgeCase struct {
		name string
		sign func(body []byte, secret string) http.Header // secret "": unsigned
	}
	forges := []forgeCase{
		{"github", func(body []byte, secret string) http.Header {
			h := http.Header{"X-Github-Event": {"push"}, "X-Github-Delivery": {"d-1"}}
			if secret != "" {
				h.Set("X-Hub-Signature-256", signGitHub(secret, body))
			}
			return h
		}},
		{"gitlab", func(_ []byte, secret string) http.Header {
			if secret == testSecret {
				secret = testGitLabToken
			}
			return gitlabHeader("Push Hook", secret, "d-1", "")
		}},
		{"gitea", func(body []byte, secret string) http.Header {
			if secret == testSecret {
				secret = testGiteaSecret
			}
			h := http.Header{"X-Gitea-Event": {"push"}, "X-Gitea-Delivery": {"d-1"}}
			if secret != "" {
				h.Set("X-Gitea-Signature", signHex(secret, body))
			}
			return h
		}},
	}
	for _, f := range forges {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, &setupOpts{config: func(c *Config) {
				c.GitLabWebhookToken = testGitLabToken
				c.GiteaWebhookSecret = testGiteaSecret
				c.MaxWebhookBytes = 4096
			}})
			cases := []struct {
				name, body, secret string
				status             int
				contains           string
			}{
				{"malformed", `{"ref": "refs/heads/main", `, testSecret, http.StatusBadRequest, "Malformed JSON payload"},
				{"not an object", `[1, 2]`, testSecret, http.StatusBadRequest, "Malformed JSON payload"},
				{"no commit", `{"ref": "refs/heads/main"}`, testSecret, http.StatusBadRequest, "40-digit hex commit"},
				{"ref git refuses", `{"ref": "refs/heads/a..b"}`, testSecret, http.StatusBadRequest, `"refs/heads/a..b" is not a ref name git accepts`},
				{"ref too long", `{"ref": "refs/heads/` + strings.Repeat("a", 1100) + `"}`, testSecret, http.StatusBadRequest, "slipway builds refs of up to 1024 bytes"},
				{"oversized", `{"x": "` + strings.Repeat("a", 5000) + `"}`, testSecret, http.StatusRequestEntityTooLarge, "larger than 4096 bytes"},
				{"unsigned", `{}`, "", http.StatusUnauthorized, "missing"},
				{"wrongly signed", `{}`, "not-the-secret", http.StatusUnauthorized, "match"},
			}
			for _, c := range cases {
				resp, out := b.postForge(t, f.name, []byte(c.body), f.sign([]byte(c.body), c.secret))
				require.Equal(t, c.status, resp.StatusCode, "%s: %s", c.name, out["_raw"])
				e, _ := out["error"].(map[string]any)
				require.Contains(t, e["message"], c.contains, c.name)
			}
			b.requireNoRows(t)
		})
	}
}
