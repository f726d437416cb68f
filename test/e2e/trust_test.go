package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// TestBranchCannotWriteReleaseTags is the fault of issue 12 as found: a
// feature branch's own .slipway.yml says tags: [v1.0.0, latest, main]. The
// build succeeds and writes its branch's tag, but v1.0.0 (a release), latest
// and main (another branch's) stay where they were, each skip logged and in
// skipped_tags.
func TestBranchCannotWriteReleaseTags(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	s := newStack(t)
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-trust-tags")
	r := newRepos(t)
	url, c1 := r.add("trusted", map[string]string{"Dockerfile": dockerfile(base, "")})
	image := s.image("acme", "trusted")
	digestOf := func(tag string) string {
		t.Helper()
		d, err := remote.Head(mustRef(t, image+":"+tag))
		require.NoError(t, err, tag)
		return d.Digest.String()
	}
	n := 0
	build := func(ref, commit string) *slipway.Build {
		t.Helper()
		n++
		body := push(t, testenv.PushParams{Owner: "acme", Name: "trusted", CloneURL: url, Ref: ref, After: commit})
		code, out := s.webhook("push", fmt.Sprintf("trust-%d", n), body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		b := s.waitDone(int64(out["build_id"].(float64)))
		require.Equal(t, slipway.BuildSucceeded, b.State, "%s\n%s", b.Error, s.logs(b.ID))
		return b
	}
	onMain := build("refs/heads/main", c1)
	release := build("refs/tags/v1.0.0", c1)
	require.Subset(t, release.Tags, []string{"1.0.0", "latest"})
	before := map[string]string{}
	for _, tag := range []string{"main", "v1.0.0", "1.0.0", "latest"} {
		before[tag] = digestOf(tag)
	}

	c2, err := testenv.CommitFiles(ctx, filepath.Join(r.base, "trusted.git"), map[string]string{
		"Dockerfile":   dockerfile(base, "LABEL feature=1\n"),
		".slipway.yml": "tags: [v1.0.0, \"1.0.0\", latest, main, \"{{branch}}\"]\n",
	}, "feature")
	require.NoError(t, err)
	feature := build("refs/heads/feature-x", c2)
	require.NotEqual(t, onMain.IndexDigest, feature.IndexDigest)
	for tag, d := range before {
		require.Equal(t, d, digestOf(tag), "%s did not move", tag)
	}
	require.Equal(t, feature.IndexDigest, digestOf("feature-x"), "its own branch tag is written")
	skipped := map[string]string{}
	for _, st := range feature.SkippedTags {
		skipped[st.Tag] = st.Reason
	}
	require.Contains(t, skipped["v1.0.0"], "a version tag comes from its own tag push or a promotion")
	require.Contains(t, skipped["1.0.0"], "a version tag comes from its own tag push or a promotion")
	require.Contains(t, skipped["latest"], "latest moves only through a release or a promotion")
	require.Contains(t, skipped["main"], "refs/heads/main wrote it")
	log := s.logs(feature.ID)
	require.Contains(t, log, "Not moving "+image+":v1.0.0")
	require.Contains(t, log, "Not moving "+image+":latest")
}

// TestAPITriggerCommitMustBeOnRef is issue 12's medium fault as found: a
// developer-role trigger with ref=main and a commit of another branch built
// that commit and tagged it main. Now the worker fails it before building,
// and main's tag stays where it was; without a commit the server runs no git
// and the worker builds main's tip, recording its commit and subject.
func TestAPITriggerCommitMustBeOnRef(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	s := newStack(t)
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-trust-ref")
	r := newRepos(t)
	url, c1 := r.add("refcheck", map[string]string{"Dockerfile": dockerfile(base, ""), ".slipway.yml": "platforms: [linux/amd64]\n"})
	repoDir := filepath.Join(r.base, "refcheck.git")
	image := s.image("acme", "refcheck")
	digestOf := func(tag string) (string, error) {
		d, err := remote.Head(mustRef(t, image+":"+tag))
		if err != nil {
			return "", err
		}
		return d.Digest.String(), nil
	}
	body := push(t, testenv.PushParams{Owner: "acme", Name: "refcheck", CloneURL: url, Ref: "refs/heads/main", After: c1})
	code, out := s.webhook("push", "refcheck-1", body, testenv.Sign(webhookSecret, body))
	require.Equal(t, http.StatusAccepted, code, "%v", out)
	first := s.waitDone(int64(out["build_id"].(float64)))
	require.Equal(t, slipway.BuildSucceeded, first.State, "%s\n%s", first.Error, s.logs(first.ID))
	mainBefore, err := digestOf("main")
	require.NoError(t, err)

	// The attacker's commit is on a branch of its own, never pushed to main.
	_, err = testenv.Git(ctx, repoDir, nil, "checkout", "-q", "-b", "evil")
	require.NoError(t, err)
	evil, err := testenv.CommitFiles(ctx, repoDir, map[string]string{"Dockerfile": dockerfile(base, "LABEL evil=1\n")}, "evil")
	require.NoError(t, err)
	_, err = testenv.Git(ctx, repoDir, nil, "checkout", "-q", "main")
	require.NoError(t, err)
	code, out = s.post("/tokens", adminToken, map[string]any{"name": "dev-e2e", "role": "developer"})
	require.Equal(t, http.StatusCreated, code, out["_raw"])
	dev := out["token"].(string)

	code, out = s.post("/repos/acme/refcheck/builds", dev, map[string]any{"ref": "main", "commit": evil})
	require.Equal(t, http.StatusCreated, code, out["_raw"])
	refused := s.waitDone(int64(out["build_id"].(float64)))
	require.Equal(t, slipway.BuildFailed, refused.State)
	require.Contains(t, refused.Error, "commit "+evil+" is not on branch main; pass a commit of that branch or no commit")
	require.Empty(t, refused.ImageRef, "nothing was built")
	require.Empty(t, refused.Tags)
	mainAfter, err := digestOf("main")
	require.NoError(t, err)
	require.Equal(t, mainBefore, mainAfter, "main did not move")
	_, err = digestOf(slipway.CommitTag(evil))
	require.Error(t, err, "the attacker's commit was never pushed")

	// Without a commit: queued unresolved, resolved and built by the worker.
	c2, err := testenv.CommitFiles(ctx, repoDir, map[string]string{"Dockerfile": dockerfile(base, "LABEL v=2\n")}, "Second commit on main")
	require.NoError(t, err)
	code, out = s.post("/repos/acme/refcheck/builds", dev, map[string]any{"ref": "main"})
	require.Equal(t, http.StatusCreated, code, out["_raw"])
	require.Equal(t, "", out["build"].(map[string]any)["commit"])
	b := s.waitDone(int64(out["build_id"].(float64)))
	require.Equal(t, slipway.BuildSucceeded, b.State, "%s\n%s", b.Error, s.logs(b.ID))
	require.Equal(t, c2, b.Commit)
	require.Equal(t, "refs/heads/main", b.Ref)
	require.Equal(t, "Second commit on main", b.Message)
	require.Equal(t, "token dev-e2e", b.Sender)
	mainNow, err := digestOf("main")
	require.NoError(t, err)
	require.Equal(t, b.IndexDigest, mainNow)
}
