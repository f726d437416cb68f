package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// prPayload is a GitHub pull_request delivery made from slipway's own sample
// (forge/testdata/webhooks), pointed at owner/name served from cloneURL.
func prPayload(t *testing.T, action string, number int, head, owner, name, cloneURL string, fork bool) []byte {
	t.Helper()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	raw, err := os.ReadFile(filepath.Join(root, "forge", "testdata", "webhooks", "github", "pull_request-synchronize.json"))
	require.NoError(t, err)
	var p map[string]any
	require.NoError(t, json.Unmarshal(raw, &p))
	repo := map[string]any{"id": 5550001, "name": name, "full_name": owner + "/" + name,
		"owner": map[string]any{"login": owner}, "clone_url": cloneURL, "default_branch": "main"}
	headRepo := repo
	if fork {
		headRepo = map[string]any{"id": 6660001, "name": name, "full_name": "mallory/" + name,
			"owner": map[string]any{"login": "mallory"}, "clone_url": "git://127.0.0.1:1/mallory/evil.git"}
	}
	p["action"], p["number"], p["repository"] = action, number, repo
	pr := p["pull_request"].(map[string]any)
	pr["number"], pr["title"] = number, fmt.Sprintf("Change %d", number)
	pr["html_url"] = fmt.Sprintf("https://github.com/%s/%s/pull/%d", owner, name, number)
	pr["head"] = map[string]any{"ref": "feature", "sha": head, "repo": headRepo}
	pr["base"] = map[string]any{"ref": "main", "sha": head, "repo": repo}
	out, err := json.Marshal(p)
	require.NoError(t, err)
	return out
}

// pullRef points refs/pull/N/head of the repository in dir at a new commit
// that no branch holds (as GitHub keeps a fork's head) and returns it.
func pullRef(t *testing.T, dir string, n int, dockerfile string) string {
	t.Helper()
	return pullRefFiles(t, dir, n, map[string]string{"Dockerfile": dockerfile})
}

// pullRefFiles is pullRef with a commit holding files (top-level names only).
func pullRefFiles(t *testing.T, dir string, n int, files map[string]string) string {
	t.Helper()
	run := gitRunner(t, dir)
	var entries strings.Builder
	for name, content := range files {
		blob := run(content, "hash-object", "-w", "--stdin")
		entries.WriteString("100644 blob " + blob + "\t" + name + "\n")
	}
	tree := run(entries.String(), "mktree")
	commit := run("", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit-tree", "-p", "HEAD", "-m", "pr head", tree)
	run("", "update-ref", fmt.Sprintf("refs/pull/%d/head", n), commit)
	return commit
}

// TestGitHubPullRequest: a pull request opened, then synchronized, makes two
// builds, the first canceled; the second is built from refs/pull/1/head,
// tagged sha-… and pr-1 only, and its status goes to the head commit. A
// closed pull request's queued build is canceled. A fork's waits for a
// developer's approval, runs without build secrets, goes to the -pr
// repository, and cannot be promoted.
func TestGitHubPullRequest(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	api := newGitHubStatusAPI(t)
	s := newStack(t, "SLIPWAY_GITHUB_API_URL="+api.URL, "SLIPWAY_GITHUB_TOKEN=e2e-github-token",
		"SLIPWAY_SECRET_KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	r := newRepos(t)
	// .slipway.yml asks for latest and the branch: a pull request gets neither.
	url, _ := r.add("prapp", map[string]string{
		"Dockerfile":   dockerfile(base, ""),
		".slipway.yml": "tags: [latest, \"{{branch}}\", \"{{ref_name}}\"]\n",
	})
	dir := filepath.Join(r.base, "prapp.git")
	head1 := pullRef(t, dir, 1, dockerfile(base, "LABEL pr=1\n"))
	send := func(delivery string, body []byte) map[string]any {
		t.Helper()
		code, out := s.webhook("pull_request", delivery, body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		return out
	}

	out := send("pr-open", prPayload(t, "opened", 1, head1, "acme", "prapp", url, false))
	first := int64(out["build_id"].(float64))
	head2 := pullRef(t, dir, 1, dockerfile(base, "LABEL pr=1 v=2\n"))
	syncBody := prPayload(t, "synchronize", 1, head2, "acme", "prapp", url, false)
	out = send("pr-sync", syncBody)
	second := int64(out["build_id"].(float64))
	require.NotEqual(t, first, second)
	out = send("pr-sync", syncBody)
	require.Equal(t, true, out["duplicate"], "a redelivery makes no build")
	require.Equal(t, float64(second), out["build_id"])

	b := s.build(first)
	require.Equal(t, slipway.BuildCanceled, b.State)
	require.Equal(t, fmt.Sprintf("superseded by build %d", second), b.Error)

	// Pull request 2 is closed while its build still waits: canceled.
	head3 := pullRef(t, dir, 2, dockerfile(base, "LABEL pr=2\n"))
	out = send("pr2-open", prPayload(t, "opened", 2, head3, "acme", "prapp", url, false))
	third := int64(out["build_id"].(float64))
	out = send("pr2-close", prPayload(t, "closed", 2, head3, "acme", "prapp", url, false))
	require.Equal(t, []any{float64(third)}, out["canceled"])
	b = s.build(third)
	require.Equal(t, slipway.BuildCanceled, b.State)
	require.Equal(t, "pull request 2 was closed", b.Error)

	// Forks: the repository has a build secret; a fork's build waits for
	// approval, then runs without it, into the separate -pr repository.
	code, secretOut := s.put("/repos/acme/prapp/secrets/TOKEN", map[string]any{"value": "s3cret-token"})
	require.Equal(t, http.StatusOK, code, "%v", secretOut)
	needsSecret := pullRefFiles(t, dir, 3, map[string]string{
		"Dockerfile":   dockerfile(base, "RUN --mount=type=secret,id=TOKEN,required=true cat /run/secrets/TOKEN\n"),
		".slipway.yml": "secrets: [TOKEN]\n",
	})
	out = send("pr3-open", prPayload(t, "opened", 3, needsSecret, "acme", "prapp", url, true))
	forkFail := int64(out["build_id"].(float64))
	plainFork := pullRefFiles(t, dir, 4, map[string]string{
		"Dockerfile":   dockerfile(base, "RUN --mount=type=secret,id=TOKEN test ! -e /run/secrets/TOKEN\n"),
		".slipway.yml": "secrets: [TOKEN]\n",
	})
	out = send("pr4-open", prPayload(t, "opened", 4, plainFork, "acme", "prapp", url, true))
	forkOK := int64(out["build_id"].(float64))
	for _, id := range []int64{forkFail, forkOK} {
		b := s.build(id)
		require.Equal(t, "pending", b.Approval)
		require.Equal(t, s.image("acme", "prapp")+"-pr", b.Image, "a fork's image goes to the separate repository")
		require.True(t, b.PullRequest.Fork)
	}

	s.start("worker", "SLIPWAY_WORKER_ID=e2e-pr")
	b = s.waitDone(second)
	require.Equal(t, slipway.BuildSucceeded, b.State, "error: %s\nlog:\n%s", b.Error, s.logs(second))
	require.Equal(t, head2, b.Commit)
	require.Equal(t, "refs/pull/1/head", b.Ref)
	require.Equal(t, []string{"pr-1"}, b.Tags, "a pull request gets pr-N only")
	require.NotNil(t, b.PullRequest)
	require.Equal(t, 1, b.PullRequest.Number)
	require.Equal(t, "Change 1", b.PullRequest.Title)
	require.Equal(t, "https://github.com/acme/prapp/pull/1", b.PullRequest.URL)
	require.Contains(t, s.logs(second), "+refs/pull/1/head:refs/slipway/pull", "fetched from the base repository's pull-request ref")

	// The worker has claimed and finished build 2; the forks still wait.
	for _, id := range []int64{forkFail, forkOK} {
		b := s.build(id)
		require.Equal(t, slipway.BuildQueued, b.State, "a fork's build waits for approval")
		require.Nil(t, b.StartedAt)
	}
	viewer := s.token("pr-viewer", string(slipway.RoleViewer))
	code, out = s.post(fmt.Sprintf("/builds/%d/approve", forkOK), viewer, nil)
	require.Equal(t, http.StatusForbidden, code, "%v", out)
	developer := s.token("pr-developer", string(slipway.RoleDeveloper))
	for _, id := range []int64{forkFail, forkOK} {
		code, out = s.post(fmt.Sprintf("/builds/%d/approve", id), developer, nil)
		require.Equal(t, http.StatusOK, code, "%v", out)
		require.Equal(t, "approved", out["approval"])
		require.Equal(t, "pr-developer", out["approved_by"])
	}
	code, out = s.post(fmt.Sprintf("/builds/%d/approve", forkOK), developer, nil)
	require.Equal(t, http.StatusConflict, code, "%v", out)
	b = s.waitDone(forkFail)
	require.Equal(t, slipway.BuildFailed, b.State, "a Dockerfile that needs a secret fails in a fork: %s", s.logs(forkFail))
	require.Contains(t, s.logs(forkFail), "no build secrets")
	b = s.waitDone(forkOK)
	require.Equal(t, slipway.BuildSucceeded, b.State, "error: %s\nlog:\n%s", b.Error, s.logs(forkOK))
	forkImage := s.image("acme", "prapp") + "-pr"
	d, err := remote.Head(mustRef(t, forkImage+":pr-4"))
	require.NoError(t, err)
	require.Equal(t, b.IndexDigest, d.Digest.String())
	_, err = remote.Head(mustRef(t, s.image("acme", "prapp")+":pr-4"))
	require.Error(t, err, "nothing of a fork lands in the release repository")
	code, out = s.post(fmt.Sprintf("/builds/%d/promote", forkOK), adminToken, map[string]any{"tags": []string{"stable"}})
	require.Equal(t, http.StatusConflict, code, "%v", out)
	require.Contains(t, out["_raw"], "pull request 4")

	b = s.build(second)
	image := s.image("acme", "prapp")
	for _, tag := range []string{slipway.CommitTag(head2), "pr-1"} {
		d, err := remote.Head(mustRef(t, image+":"+tag))
		require.NoError(t, err, tag)
		require.Equal(t, b.IndexDigest, d.Digest.String(), tag)
	}
	for _, tag := range []string{"latest", "main", "feature"} {
		ref, err := name.NewTag(image + ":" + tag)
		require.NoError(t, err)
		_, err = remote.Head(ref)
		require.Error(t, err, "a pull request moved %s", tag)
	}

	var list struct{ Builds []slipway.Build }
	code, body := s.api("/builds?pull_request=1", &list)
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.Len(t, list.Builds, 2)
	require.Equal(t, []int64{second, first}, []int64{list.Builds[0].ID, list.Builds[1].ID})

	// The status of the build went to the head commit.
	waitStatusSent(t, s, second)
	api.mu.Lock()
	defer api.mu.Unlock()
	require.Contains(t, api.paths, "POST /repos/acme/prapp/statuses/"+head2)
}

// gitCmd runs git in dir and returns its combined output.
func gitCmd(dir string, args ...string) (string, error) {
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// put PUTs body to path under /api/v1 with the admin token.
func (s *stack) put(path string, body any) (int, map[string]any) {
	s.t.Helper()
	return s.sendJSON(http.MethodPut, path, adminToken, body)
}
