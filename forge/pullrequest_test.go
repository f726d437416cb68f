package forge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// TestParsePullRequestSamples parses the pull-request samples of
// testdata/webhooks (written after each forge's documented payloads) and
// checks what each asks for: a trigger of the pull-request ref, a cancel, or
// nothing.
func TestParsePullRequestSamples(t *testing.T) {
	t.Parallel()
	type want struct {
		trigger *slipway.Trigger
		cancel  *RefCancel
		ignored string
	}
	gh := func(event string) func(string, []byte) (Event, error) {
		return func(d string, p []byte) (Event, error) { return parseGitHubEvent(event, d, p) }
	}
	gl := func(d string, p []byte) (Event, error) { return parseGitLabEvent("Merge Request Hook", d, p) }
	gt := func(d string, p []byte) (Event, error) { return parseGiteaEvent("pull_request", d, p) }
	tests := []struct {
		file  string
		parse func(string, []byte) (Event, error)
		want  want
	}{
		{"github/pull_request-synchronize.json", gh("pull_request"), want{trigger: &slipway.Trigger{
			Forge: "github", DeliveryID: "d-1", Event: "pull_request", Owner: "acme", Name: "app",
			CloneURL: "https://github.com/acme/app.git", Ref: "refs/pull/7/head",
			Commit: "2bd1c1a6ef1d6d5b3c9d3a5b8e0f2c4a6b8d0e2f", Message: "Faster start-up", Sender: "ada", DefaultBranch: "main",
			PullRequest: &slipway.PullRequest{Number: 7, Title: "Faster start-up", Author: "ada",
				URL: "https://github.com/acme/app/pull/7", Base: "main", AuthorAssociation: "MEMBER"}}}},
		{"github/pull_request-opened-fork.json", gh("pull_request"), want{trigger: &slipway.Trigger{
			Forge: "github", DeliveryID: "d-1", Event: "pull_request", Owner: "acme", Name: "app",
			// The base repository's URL, never the fork's.
			CloneURL: "https://github.com/acme/app.git", Ref: "refs/pull/8/head",
			Commit: "3ce2d2b7f02e7e6c4dae4b6c9f1a3d5b7c9e1f3a", Message: "Fix typo", Sender: "mallory", DefaultBranch: "main",
			PullRequest: &slipway.PullRequest{Number: 8, Title: "Fix typo", Author: "mallory",
				URL: "https://github.com/acme/app/pull/8", Fork: true, Base: "main", AuthorAssociation: "FIRST_TIME_CONTRIBUTOR"}}}},
		{"github/pull_request-closed.json", gh("pull_request"), want{cancel: &RefCancel{
			Forge: "github", Owner: "acme", Name: "app", Ref: "refs/pull/7/head", Reason: "pull request 7 was closed"}}},
		{"github/pull_request-labeled.json", gh("pull_request"), want{ignored: `pull_request action "labeled" does not start builds`}},
		{"gitlab/merge_request-update.json", gl, want{trigger: &slipway.Trigger{
			Forge: "gitlab", DeliveryID: "d-1", Event: "pull_request", Owner: "acme", Name: "app",
			CloneURL: "https://gitlab.example.com/acme/app.git", Ref: "refs/merge-requests/5/head",
			Commit: "4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70", Message: "Cache the config", Sender: "ada", DefaultBranch: "main",
			PullRequest: &slipway.PullRequest{Number: 5, Title: "Faster start-up", Author: "ada",
				URL: "https://gitlab.example.com/acme/app/-/merge_requests/5", Base: "main"}}}},
		{"gitlab/merge_request-open.json", gl, want{trigger: &slipway.Trigger{
			Forge: "gitlab", DeliveryID: "d-1", Event: "pull_request", Owner: "acme", Name: "app",
			CloneURL: "https://gitlab.example.com/acme/app.git", Ref: "refs/merge-requests/5/head",
			Commit: "4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70", Message: "Cache the config", Sender: "ada", DefaultBranch: "main",
			PullRequest: &slipway.PullRequest{Number: 5, Title: "Faster start-up", Author: "ada",
				URL: "https://gitlab.example.com/acme/app/-/merge_requests/5", Base: "main"}}}},
		{"gitlab/merge_request-update-title.json", gl, want{ignored: `Merge Request Hook action "update without new commits" does not start builds`}},
		{"gitlab/merge_request-merge.json", gl, want{cancel: &RefCancel{
			Forge: "gitlab", Owner: "acme", Name: "app", Ref: "refs/merge-requests/5/head", Reason: "pull request 5 was merge"}}},
		{"gitea/pull_request-synchronized.json", gt, want{trigger: &slipway.Trigger{
			Forge: "gitea", DeliveryID: "d-1", Event: "pull_request", Owner: "acme", Name: "app",
			CloneURL: "https://gitea.example.com/acme/app.git", Ref: "refs/pull/3/head",
			Commit: "5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081", Message: "Faster start-up", Sender: "ada", DefaultBranch: "main",
			PullRequest: &slipway.PullRequest{Number: 3, Title: "Faster start-up", Author: "ada",
				URL: "https://gitea.example.com/acme/app/pulls/3", Base: "main"}}}},
		{"gitea/pull_request-closed.json", gt, want{cancel: &RefCancel{
			Forge: "gitea", Owner: "acme", Name: "app", Ref: "refs/pull/3/head", Reason: "pull request 3 was closed"}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			payload, err := os.ReadFile(filepath.Join("testdata", "webhooks", filepath.FromSlash(tt.file)))
			require.NoError(t, err)
			ev, err := tt.parse("d-1", payload)
			require.NoError(t, err)
			require.Equal(t, tt.want.trigger, ev.Trigger)
			require.Equal(t, tt.want.cancel, ev.Cancel)
			require.Equal(t, tt.want.ignored, ev.Ignored)
		})
	}

	// Only GitHub's author_association is read, and only in its shape: a
	// Gitea payload that carried such a field, or a value GitHub never sends,
	// trusts nothing (the association decides whether a fork's build waits).
	t.Run("AssociationOnlyFromGitHub", func(t *testing.T) {
		t.Parallel()
		read := func(file, old, new string) []byte {
			payload, err := os.ReadFile(filepath.Join("testdata", "webhooks", filepath.FromSlash(file)))
			require.NoError(t, err)
			require.Contains(t, string(payload), old)
			return []byte(strings.Replace(string(payload), old, new, 1))
		}
		ev, err := gt("d-1", read("gitea/pull_request-synchronized.json", `"title": "Faster start-up",`,
			`"title": "Faster start-up", "author_association": "OWNER",`))
		require.NoError(t, err)
		require.Empty(t, ev.Trigger.PullRequest.AuthorAssociation)
		for _, bad := range []string{"member", "OWNER ", "MEMBER\\nOWNER", strings.Repeat("OWNER", 7)} {
			ev, err := gh("pull_request")("d-1", read("github/pull_request-opened-fork.json",
				`"FIRST_TIME_CONTRIBUTOR"`, `"`+bad+`"`))
			require.NoError(t, err)
			require.Empty(t, ev.Trigger.PullRequest.AuthorAssociation, "from %q", bad)
		}
	})

	t.Run("GitLabForkIsFork", func(t *testing.T) {
		t.Parallel()
		payload, err := os.ReadFile(filepath.Join("testdata", "webhooks", "gitlab", "merge_request-open-fork.json"))
		require.NoError(t, err)
		ev, err := gl("d-1", payload)
		require.NoError(t, err)
		require.True(t, ev.Trigger.PullRequest.Fork)
		require.Equal(t, "https://gitlab.example.com/acme/app.git", ev.Trigger.CloneURL)
		require.Equal(t, "refs/merge-requests/6/head", ev.Trigger.Ref)
	})
}

// TestParsePullRequestBad checks that a pull-request payload slipway cannot
// build from gets EINVALID naming the field.
func TestParsePullRequestBad(t *testing.T) {
	t.Parallel()
	sample, err := os.ReadFile(filepath.Join("testdata", "webhooks", "github", "pull_request-synchronize.json"))
	require.NoError(t, err)
	edit := func(old, new string) []byte {
		require.Contains(t, string(sample), old)
		return []byte(strings.Replace(string(sample), old, new, -1))
	}
	tests := []struct {
		name, delivery string
		payload        []byte
		errContains    string
	}{
		{"not JSON", "d", sample[:40], "Malformed JSON payload"},
		{"no delivery id", "", sample, "no delivery id"},
		{"bad head", "d", edit(`"sha": "2bd1c1a6ef1d6d5b3c9d3a5b8e0f2c4a6b8d0e2f"`, `"sha": "--upload-pack=evil"`), "pull_request.head.sha"},
		{"bad clone url", "d", edit("\"clone_url\": \"https://github.com/acme/app.git\",\n    \"default_branch\"",
			"\"clone_url\": \"ext::sh -c evil\",\n    \"default_branch\""), "repository.clone_url"},
		{"no number", "d", edit(`"number": 7`, `"number": 0`), "number"},
		{"bad owner", "d", edit(`"login": "acme", "id": 900, "type": "Organization"`, `"login": "../x", "id": 900`), "repository.owner.login"},
		{"no repository", "d", []byte(`{"action":"opened","number":1,"pull_request":{"head":{"sha":"2bd1c1a6ef1d6d5b3c9d3a5b8e0f2c4a6b8d0e2f"}}}`), "no repository"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseGitHubEvent("pull_request", tt.delivery, tt.payload)
			require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err), "%v", err)
			require.ErrorContains(t, err, tt.errContains)
		})
	}
}
