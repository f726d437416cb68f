package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

const (
	gitlabToken = "e2e-gitlab-token"
	giteaSecret = "e2e-gitea-secret"
)

// sample reads one of slipway's own webhook samples (forge/testdata/webhooks)
// as a JSON object.
func sample(t *testing.T, rel string) map[string]any {
	t.Helper()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	raw, err := os.ReadFile(filepath.Join(root, "forge", "testdata", "webhooks", filepath.FromSlash(rel)))
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	return m
}

// deliver posts body to /webhooks/<forge> with that forge's headers.
func (s *stack) deliver(forge string, headers map[string]string, body any) (int, map[string]any) {
	s.t.Helper()
	data, err := json.Marshal(body)
	require.NoError(s.t, err)
	req, err := http.NewRequest(http.MethodPost, s.url+"/webhooks/"+forge, bytes.NewReader(data))
	require.NoError(s.t, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if forge == "gitea" {
		req.Header.Set("X-Gitea-Signature", testenv.Sign(giteaSecret, data)[len("sha256="):])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	require.Equal(s.t, http.StatusAccepted, resp.StatusCode, "%s", raw)
	return resp.StatusCode, m
}

// TestGitLabAndGiteaPullRequests: a GitLab merge request and a Gitea pull
// request build the same way as GitHub's: opened then updated gives two
// builds, the first canceled, the second built from the base repository's
// pull-request ref and tagged pr-N only; a merged merge request's queued
// build is canceled.
func TestGitLabAndGiteaPullRequests(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	s := newStack(t, "SLIPWAY_GITLAB_WEBHOOK_TOKEN="+gitlabToken, "SLIPWAY_GITEA_WEBHOOK_SECRET="+giteaSecret)
	r := newRepos(t)
	glURL, _ := r.add("glapp", map[string]string{"Dockerfile": dockerfile(base, "")})
	gtURL, _ := r.add("gtapp", map[string]string{"Dockerfile": dockerfile(base, "")})
	glDir, gtDir := filepath.Join(r.base, "glapp.git"), filepath.Join(r.base, "gtapp.git")

	// GitLab: the head lives under refs/merge-requests/N/head.
	mergeRequestRef := func(n int, extra string) string {
		head := pullRef(t, glDir, n, dockerfile(base, extra))
		run := func(args ...string) {
			out, err := gitCmd(glDir, args...)
			require.NoError(t, err, "%s", out)
		}
		run("update-ref", fmt.Sprintf("refs/merge-requests/%d/head", n), head)
		run("update-ref", "-d", fmt.Sprintf("refs/pull/%d/head", n))
		return head
	}
	mr := func(action string, n int, head, delivery string) map[string]any {
		p := sample(t, "gitlab/merge_request-update.json")
		proj := p["project"].(map[string]any)
		proj["path_with_namespace"], proj["git_http_url"], proj["name"] = "acme/glapp", glURL, "glapp"
		a := p["object_attributes"].(map[string]any)
		a["action"], a["iid"] = action, n
		a["last_commit"].(map[string]any)["id"] = head
		_, out := s.deliver("gitlab", map[string]string{"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": gitlabToken,
			"Idempotency-Key": delivery}, p)
		return out
	}
	gl1 := mergeRequestRef(4, "LABEL mr=4\n")
	firstGL := int64(mr("open", 4, gl1, "gl-open")["build_id"].(float64))
	gl2 := mergeRequestRef(4, "LABEL mr=4 v=2\n")
	secondGL := int64(mr("update", 4, gl2, "gl-update")["build_id"].(float64))
	gl5 := mergeRequestRef(5, "LABEL mr=5\n")
	queuedGL := int64(mr("open", 5, gl5, "gl5-open")["build_id"].(float64))
	out := mr("merge", 5, gl5, "gl5-merge")
	require.Equal(t, []any{float64(queuedGL)}, out["canceled"])

	// Gitea: refs/pull/N/head, action "synchronized".
	pr := func(action string, n int, head, delivery string) map[string]any {
		p := sample(t, "gitea/pull_request-synchronized.json")
		p["action"], p["number"] = action, n
		repo := p["repository"].(map[string]any)
		repo["name"], repo["full_name"], repo["clone_url"] = "gtapp", "acme/gtapp", gtURL
		p["pull_request"].(map[string]any)["head"].(map[string]any)["sha"] = head
		p["pull_request"].(map[string]any)["number"] = n
		_, out := s.deliver("gitea", map[string]string{"X-Gitea-Event": "pull_request", "X-Gitea-Delivery": delivery}, p)
		return out
	}
	gt1 := pullRef(t, gtDir, 3, dockerfile(base, "LABEL pr=3\n"))
	firstGT := int64(pr("opened", 3, gt1, "gt-open")["build_id"].(float64))
	gt2 := pullRef(t, gtDir, 3, dockerfile(base, "LABEL pr=3 v=2\n"))
	secondGT := int64(pr("synchronized", 3, gt2, "gt-sync")["build_id"].(float64))

	for _, id := range []int64{firstGL, firstGT} {
		require.Equal(t, slipway.BuildCanceled, s.build(id).State, "build %d superseded", id)
	}
	require.Equal(t, slipway.BuildCanceled, s.build(queuedGL).State)

	s.start("worker", "SLIPWAY_WORKER_ID=e2e-pr-forges")
	for _, c := range []struct {
		id       int64
		ref, tag string
		head     string
	}{
		{secondGL, "refs/merge-requests/4/head", "pr-4", gl2},
		{secondGT, "refs/pull/3/head", "pr-3", gt2},
	} {
		b := s.waitDone(c.id)
		require.Equal(t, slipway.BuildSucceeded, b.State, "error: %s\nlog:\n%s", b.Error, s.logs(c.id))
		require.Equal(t, c.ref, b.Ref)
		require.Equal(t, c.head, b.Commit)
		require.Equal(t, []string{c.tag}, b.Tags)
		require.Contains(t, s.logs(c.id), "+"+c.ref+":refs/slipway/pull")
	}
}
