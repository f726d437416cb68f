package server

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/forge"
)

// TestForkTrustedAssociation: a fork's pull request (mallory's fixture) runs
// without approval only when the repository's trusted_associations hold the
// author_association of the signed delivery; any other association, none, or
// a repository without the setting waits, and a bad setting is refused with
// 400 naming the field.
func TestForkTrustedAssociation(t *testing.T) {
	t.Parallel()
	fork := string(readFixture(t, "pull_request-opened-fork.json"))
	withAssociation := func(t *testing.T, a string) []byte {
		old := `"author_association": "FIRST_TIME_CONTRIBUTOR",`
		require.Contains(t, fork, old)
		if a == "" {
			return []byte(strings.Replace(fork, old, "", 1))
		}
		return []byte(strings.Replace(fork, old, `"author_association": "`+a+`",`, 1))
	}
	// register makes acme/app on GitHub with the given settings ("" none).
	register := func(t *testing.T, b *testBundle, settings string) {
		resp, out := b.send(t, http.MethodPost, "/api/v1/repos", `{"forge": "github", "owner": "acme", "name": "app"`+settings+`}`)
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
	}
	// deliver sends the fork's pull request and returns its build's JSON and
	// whether its job may be claimed now.
	deliver := func(t *testing.T, b *testBundle, payload []byte) (map[string]any, bool) {
		resp, out := b.post(t, delivery{event: "pull_request", id: fmt.Sprintf("d-%d", time.Now().UnixNano()), body: payload})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		id := buildIDOf(t, out)
		resp, build := b.get(t, fmt.Sprintf("/api/v1/builds/%d", id))
		require.Equal(t, http.StatusOK, resp.StatusCode, build["_raw"])
		var claimable bool
		require.NoError(t, b.db.Pool().QueryRow(t.Context(),
			"SELECT run_after <= now() FROM jobs WHERE build_id = $1", id).Scan(&claimable))
		return build, claimable
	}
	pr := func(build map[string]any) map[string]any { return build["pull_request"].(map[string]any) }

	t.Run("TrustedAssociationRunsWithoutApproval", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &setupOpts{config: func(c *Config) { c.DashboardPublic = true }})
		register(t, b, `, "trusted_associations": ["MEMBER", "COLLABORATOR"]`)
		for _, a := range []string{"MEMBER", "COLLABORATOR"} {
			build, claimable := deliver(t, b, withAssociation(t, a))
			require.True(t, claimable, "a trusted author's fork build is not held")
			require.Equal(t, "trusted", build["approval"], build["_raw"])
			require.Equal(t, a, pr(build)["author_association"])
			require.Equal(t, true, pr(build)["fork"], "it is still a fork's build: no secrets, no integration webhook")
			require.Equal(t, testRegistry+"/acme/app"+slipway.ForkImageSuffix, build["image"], "and still pushed beside no release image")

			resp, out := b.send(t, http.MethodPost, fmt.Sprintf("/api/v1/builds/%v/approve", build["id"]), "")
			requireError(t, resp, out, http.StatusConflict, slipway.ECONFLICT)

			// The build page says why it runs unapproved, and offers no approval.
			resp, page := newBrowser(t, b.srv.URL).do(http.MethodGet, fmt.Sprintf("/builds/%v", build["id"]), nil)
			require.Equal(t, http.StatusOK, resp.StatusCode, page)
			require.Contains(t, page, `id="trusted-fork"`)
			require.Contains(t, page, "trusts its author's association ("+a+")")
			require.NotContains(t, page, `id="approve"`)
		}
	})

	t.Run("OtherAssociationsWait", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		register(t, b, `, "trusted_associations": ["MEMBER"]`)
		// FIRST_TIME_CONTRIBUTOR (the fixture's), one the repository does not
		// trust, one GitHub never sends in this case, and none at all.
		for _, a := range []string{"FIRST_TIME_CONTRIBUTOR", "OWNER", "member", ""} {
			build, claimable := deliver(t, b, withAssociation(t, a))
			require.False(t, claimable, "association %q: no worker may take it", a)
			require.Equal(t, "pending", build["approval"], "association %q", a)
		}
	})

	t.Run("RepositoryWithoutTheSettingWaits", func(t *testing.T) {
		t.Parallel()
		for _, settings := range []string{"", `, "trusted_associations": []`, "auto-registered"} {
			b := setup(t, nil)
			if settings != "auto-registered" {
				register(t, b, settings)
			}
			build, claimable := deliver(t, b, withAssociation(t, "OWNER"))
			require.False(t, claimable, "settings %q", settings)
			require.Equal(t, "pending", build["approval"], "settings %q", settings)
			require.Equal(t, "OWNER", pr(build)["author_association"])
		}
	})

	t.Run("SameRepositoryPullRequestNeedsNoApproval", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		register(t, b, `, "trusted_associations": ["MEMBER"]`)
		build, claimable := deliver(t, b, readFixture(t, "pull_request-synchronize.json"))
		require.True(t, claimable)
		require.Nil(t, build["approval"], "not a fork: nothing to trust or approve")
		require.Equal(t, testRegistry+"/acme/app", build["image"])
	})

	t.Run("RetryDecidesWithTheCurrentSetting", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		register(t, b, `, "trusted_associations": ["MEMBER"]`)
		build, _ := deliver(t, b, withAssociation(t, "MEMBER"))
		resp, out := b.send(t, http.MethodPost, fmt.Sprintf("/api/v1/builds/%v/cancel", build["id"]), "")
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		resp, out = b.send(t, http.MethodPatch, "/api/v1/repos/acme/app", `{"trusted_associations": []}`)
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.Equal(t, []any{}, out["trusted_associations"])

		resp, out = b.send(t, http.MethodPost, fmt.Sprintf("/api/v1/builds/%v/retry", build["id"]), "")
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		retry := out["build"].(map[string]any)
		require.Equal(t, "pending", retry["approval"], "trust taken back: the retry waits")
		require.Equal(t, "MEMBER", pr(retry)["author_association"], "the association of the signed delivery is kept")
	})

	t.Run("BadSettingIsRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		for _, body := range []string{
			`{"forge": "github", "owner": "acme", "name": "app", "trusted_associations": ["MEMBER", "CONTRIBUTOR"]}`,
			`{"forge": "github", "owner": "acme", "name": "app", "trusted_associations": ["member"]}`,
			`{"forge": "github", "owner": "acme", "name": "app", "trusted_associations": ["OWNER", "OWNER"]}`,
			// GitLab's and Gitea's payloads name no association: the setting could never apply.
			`{"forge": "gitlab", "owner": "acme", "name": "app", "trusted_associations": ["MEMBER"]}`,
			`{"forge": "gitea", "owner": "acme", "name": "app", "trusted_associations": ["MEMBER"]}`,
		} {
			resp, out := b.send(t, http.MethodPost, "/api/v1/repos", body)
			msg := requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
			require.Contains(t, msg, "trusted_associations", body)
		}
		require.Equal(t, 0, b.count(t, "repos"))

		register(t, b, "")
		resp, out := b.send(t, http.MethodPatch, "/api/v1/repos/acme/app", `{"trusted_associations": ["ADMIN"]}`)
		msg := requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
		require.Contains(t, msg, "trusted_associations[0]")
		require.Contains(t, msg, "OWNER, MEMBER, COLLABORATOR", "the message names what to use instead")

		resp, out = b.send(t, http.MethodPost, "/api/v1/repos", `{"forge": "gitlab", "owner": "acme", "name": "web"}`)
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
		resp, out = b.send(t, http.MethodPatch, "/api/v1/repos/acme/web?forge=gitlab", `{"trusted_associations": ["OWNER"]}`)
		msg = requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
		require.Contains(t, msg, "trusted_associations must be empty for a gitlab repository")

		resp, out = b.send(t, http.MethodGet, "/api/v1/repos/acme/app?forge=github", "")
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.Equal(t, []any{}, out["trusted_associations"], "a refused setting changed nothing")
	})
}

// lyingLocate is GitHub, except that Locate names another repository than
// the payload's, as a forge whose Locate and Parse read different fields
// would.
type lyingLocate struct {
	*forge.GitHub
	owner, name string
}

func (l lyingLocate) Locate([]byte) (string, string, bool) { return l.owner, l.name, true }

// TestWebhookOneRepositoryPerPayload: a delivery signed with one
// repository's own secret cannot queue or cancel builds of another, even when
// the hook locates a different repository than the event it parses: it is
// refused with 400 naming both, and nothing is written.
func TestWebhookOneRepositoryPerPayload(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	for _, body := range []string{
		`{"forge": "github", "owner": "mallory", "name": "tools", "webhook_secret": "mallory-own-secret"}`,
		`{"forge": "github", "owner": "acme", "name": "app"}`,
	} {
		resp, out := b.send(t, http.MethodPost, "/api/v1/repos", body)
		require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
	}
	cfg := Config{GitHubWebhookSecret: testSecret, Registry: testRegistry, PublicURL: testPublic}.withDefaults()
	hook := lyingLocate{GitHub: &forge.GitHub{Webhook: forge.Webhook{Secret: testSecret}}, owner: "mallory", name: "tools"}
	handler := handleWebhook(cfg, newBodyBudget(cfg), hook, b.repos, b.builds)

	for _, c := range []struct{ event, fixture string }{
		{"push", "push-branch.json"},
		{"pull_request", "pull_request-closed.json"},
	} {
		t.Run(c.event, func(t *testing.T) {
			body := readFixture(t, c.fixture)
			req := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-GitHub-Event", c.event)
			req.Header.Set("X-GitHub-Delivery", "lying-"+c.event)
			req.Header.Set("X-Hub-Signature-256", signGitHub("mallory-own-secret", body))
			rec := httptest.NewRecorder()
			handler(rec, req)
			require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
			require.Contains(t, rec.Body.String(), "names two repositories")
			require.Contains(t, rec.Body.String(), "mallory/tools")
		})
	}
	var n int
	require.NoError(t, b.db.Pool().QueryRow(t.Context(), "SELECT count(*) FROM builds").Scan(&n))
	require.Zero(t, n, "no build was queued")
}
