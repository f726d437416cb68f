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
