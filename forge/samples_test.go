package forge

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The commits of slipway's own samples (testdata/webhooks): sampleHead is
// the head of main, sampleFeature a feature branch's head, sampleTagObject
// the object of the annotated tag v2.0.0, which points at sampleHead.
const (
	sampleHead      = "3f1c9a7e5b2d4c6e8f0a1b2c3d4e5f60718293a4"
	sampleFeature   = "5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7"
	sampleTagObject = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
)

// sampleCase is what one sample must give: the repository, ref and commit of
// its build, the reason it is ignored, or the pull request it cancels.
type sampleCase struct {
	event   string
	repo    string // owner/name of the build
	ref     string
	commit  string
	ignored string
	zen     string
	cancels bool
}

// TestParseSamples runs every one of slipway's own webhook samples through its
// forge's parser. The samples follow each forge's documented payload format
// and cover the shapes the suite needs; a sample without a row, or a row
// without a sample, fails, so none goes unchecked.
func TestParseSamples(t *testing.T) {
	t.Parallel()
	parsers := map[string]func(event, delivery string, payload []byte) (Event, error){
		"github": parseGitHubEvent, "gitlab": parseGitLabEvent, "gitea": parseGiteaEvent,
	}
	const (
		ghRepo = "octo-org/hello-app"
		glRepo = "platform/web-app"
		gtRepo = "tools/deploy-kit"
	)
	tests := map[string]sampleCase{
		"github/ping.json":                 {event: "ping", zen: "Keep it logically awesome."},
		"github/create-tag.json":           {event: "create", ignored: `event "create" does not start builds`},
		"github/push-branch.json":          {event: "push", repo: ghRepo, ref: "refs/heads/main", commit: sampleHead},
		"github/push-branch-created.json":  {event: "push", repo: ghRepo, ref: "refs/heads/feature/login", commit: sampleFeature},
		"github/push-branch-deleted.json":  {event: "push", ignored: `branch "feature/login" was deleted`},
		"github/push-tag-lightweight.json": {event: "push", repo: ghRepo, ref: "refs/tags/v1.2.3", commit: sampleHead},
		// after is the tag object; the build is of the commit it points at.
		"github/push-tag-annotated.json":       {event: "push", repo: ghRepo, ref: "refs/tags/v2.0.0", commit: sampleHead},
		"github/push-tag-deleted.json":         {event: "push", ignored: `tag "v1.2.3" was deleted`},
		"github/pull_request-synchronize.json": {event: "pull_request", repo: "acme/app", ref: "refs/pull/7/head", commit: "2bd1c1a6ef1d6d5b3c9d3a5b8e0f2c4a6b8d0e2f"},
		"github/pull_request-opened-fork.json": {event: "pull_request", repo: "acme/app", ref: "refs/pull/8/head", commit: "3ce2d2b7f02e7e6c4dae4b6c9f1a3d5b7c9e1f3a"},
		"github/pull_request-labeled.json":     {event: "pull_request", ignored: `pull_request action "labeled" does not start builds`},
		"github/pull_request-closed.json":      {event: "pull_request", cancels: true},

		"gitlab/push-branch.json":         {event: "Push Hook", repo: glRepo, ref: "refs/heads/main", commit: sampleHead},
		"gitlab/push-branch-deleted.json": {event: "Push Hook", ignored: `branch "feature/login" was deleted`},
		// A project in a subgroup keeps its groups in the repository path.
		"gitlab/push-subgroup.json":              {event: "Push Hook", repo: "platform/backend/api-server", ref: "refs/heads/main", commit: sampleHead},
		"gitlab/tag_push-lightweight.json":       {event: "Tag Push Hook", repo: glRepo, ref: "refs/tags/v1.2.3", commit: sampleHead},
		"gitlab/tag_push-annotated.json":         {event: "Tag Push Hook", repo: glRepo, ref: "refs/tags/v2.0.0", commit: sampleHead},
		"gitlab/tag_push-deleted.json":           {event: "Tag Push Hook", ignored: `tag "v1.2.3" was deleted`},
		"gitlab/merge_request-open.json":         {event: "Merge Request Hook", repo: "acme/app", ref: "refs/merge-requests/5/head", commit: "4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70"},
		"gitlab/merge_request-open-fork.json":    {event: "Merge Request Hook", repo: "acme/app", ref: "refs/merge-requests/6/head", commit: "4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70"},
		"gitlab/merge_request-update.json":       {event: "Merge Request Hook", repo: "acme/app", ref: "refs/merge-requests/5/head", commit: "4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70"},
		"gitlab/merge_request-update-title.json": {event: "Merge Request Hook", ignored: `Merge Request Hook action "update without new commits" does not start builds`},
		"gitlab/merge_request-merge.json":        {event: "Merge Request Hook", cancels: true},

		"gitea/push-branch.json":                   {event: "push", repo: gtRepo, ref: "refs/heads/main", commit: sampleHead},
		"gitea/push-branch-new-empty-commits.json": {event: "push", repo: gtRepo, ref: "refs/heads/release/1.x", commit: sampleHead},
		"gitea/push-branch-deleted.json":           {event: "push", ignored: `branch "release/1.x" was deleted`},
		"gitea/push-tag-lightweight.json":          {event: "push", repo: gtRepo, ref: "refs/tags/v1.2.3", commit: sampleHead},
		"gitea/push-tag-annotated.json":            {event: "push", repo: gtRepo, ref: "refs/tags/v2.0.0", commit: sampleHead},
		"gitea/create-tag.json":                    {event: "create", ignored: `event "create" does not start builds`},
		"gitea/pull_request-synchronized.json":     {event: "pull_request", repo: "acme/app", ref: "refs/pull/3/head", commit: "5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"},
		"gitea/pull_request-closed.json":           {event: "pull_request", cancels: true},
	}

	seen := map[string]bool{}
	for forge, parse := range parsers {
		files, err := filepath.Glob(filepath.Join(sampleDir(forge), "*.json"))
		require.NoError(t, err)
		require.NotEmpty(t, files, "no %s samples", forge)
		for _, path := range files {
			name := forge + "/" + filepath.Base(path)
			seen[name] = true
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				tt, ok := tests[name]
				require.True(t, ok, "sample %s has no row in this table", name)
				payload, err := os.ReadFile(path)
				require.NoError(t, err)
				ev, err := parse(tt.event, "d-1", payload)
				require.NoError(t, err)
				require.Equal(t, tt.zen != "", ev.Ping, "ping")
				require.Equal(t, tt.zen, ev.Zen)
				require.Equal(t, tt.ignored, ev.Ignored)
				require.Equal(t, tt.cancels, ev.Cancel != nil, "cancels")
				if tt.commit == "" {
					require.Nil(t, ev.Trigger)
					return
				}
				require.NotNil(t, ev.Trigger)
				require.Equal(t, forge, ev.Trigger.Forge)
				require.Equal(t, tt.repo, ev.Trigger.Owner+"/"+ev.Trigger.Name)
				require.Equal(t, tt.ref, ev.Trigger.Ref)
				require.Equal(t, tt.commit, ev.Trigger.Commit)
				require.Equal(t, "d-1", ev.Trigger.DeliveryID)
			})
		}
	}
	for name := range tests {
		require.True(t, seen[name], "table names %s, which is not among the samples", name)
	}
}
