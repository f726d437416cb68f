package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// TestTagPushReleasesTestedImage: a version tag on a commit built on main
// promotes that build's index digest (no second BuildKit solve) to 1.2.3, 1.2,
// 1 and latest, with audit rows; a pre-release moves no latest, 2 or 2.0; a
// tag on a commit never built is built, tested, then released.
func TestTagPushReleasesTestedImage(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	s := newStack(t)
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-release")
	r := newRepos(t)
	url, c1 := r.add("relapp", map[string]string{"Dockerfile": dockerfile(base, ""), ".slipway.yml": archTest})
	dir := filepath.Join(r.base, "relapp.git")
	image := s.image("acme", "relapp")
	n := 0
	pushRef := func(ref, commit string) *slipway.Build {
		t.Helper()
		n++
		body := push(t, testenv.PushParams{Owner: "acme", Name: "relapp", CloneURL: url, Ref: ref, After: commit})
		code, out := s.webhook("push", fmt.Sprintf("rel-%d", n), body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		id := int64(out["build_id"].(float64))
		b := s.waitDone(id)
		require.Equal(t, slipway.BuildSucceeded, b.State, "%s: error %s\nlog:\n%s", ref, b.Error, s.logs(id))
		return b
	}
	digest := func(tag string) string {
		t.Helper()
		ref, err := name.NewTag(image + ":" + tag)
		require.NoError(t, err)
		d, err := remote.Head(ref)
		if err != nil {
			return ""
		}
		return d.Digest.String()
	}

	onMain := pushRef("refs/heads/main", c1)
	require.Len(t, onMain.Tests, 2, "one test on each platform")

	rel := pushRef("refs/tags/v1.2.3", c1)
	log := s.logs(rel.ID)
	require.Contains(t, log, fmt.Sprintf("from tested build %d", onMain.ID))
	require.NotContains(t, log, "Building "+image, "no new BuildKit solve")
	require.Equal(t, onMain.IndexDigest, rel.IndexDigest)
	require.Equal(t, onMain.Platforms, rel.Platforms)
	require.Equal(t, onMain.Tests, rel.Tests, "the release carries the tests that passed")
	require.Equal(t, onMain.IndexDigest, digest(slipway.CommitTag(c1)))
	for _, tag := range []string{"1.2.3", "1.2", "1", "latest"} {
		require.Equal(t, onMain.IndexDigest, digest(tag), tag)
	}
	require.Subset(t, rel.Tags, []string{"1.2.3", "1.2", "1", "latest"})

	var audit struct{ Promotions []slipway.Promotion }
	code, body := s.api(fmt.Sprintf("/promotions?build=%d", onMain.ID), nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.NoError(t, json.Unmarshal(body, &audit))
	byTag := map[string]slipway.Promotion{}
	for _, p := range audit.Promotions {
		byTag[p.Tag] = p
	}
	for _, tag := range []string{"1.2.3", "1.2", "1", "latest"} {
		p, ok := byTag[tag]
		require.True(t, ok, "an audit row for %s: %+v", tag, audit.Promotions)
		require.Equal(t, slipway.PromotionPromoted, p.Outcome)
		require.Equal(t, onMain.IndexDigest, p.Digest)
		require.Contains(t, p.Actor, "tag push v1.2.3")
	}

	// A pre-release on a newer commit built on main: only 2.0.0-rc.1 moves.
	c2, err := testenv.CommitFiles(ctx, dir, map[string]string{"Dockerfile": dockerfile(base, "LABEL v=2\n")}, "second")
	require.NoError(t, err)
	main2 := pushRef("refs/heads/main", c2)
	require.NotEqual(t, onMain.IndexDigest, main2.IndexDigest)
	rc := pushRef("refs/tags/v2.0.0-rc.1", c2)
	require.NotContains(t, s.logs(rc.ID), "Building "+image)
	require.Equal(t, main2.IndexDigest, digest("2.0.0-rc.1"))
	require.Equal(t, onMain.IndexDigest, digest("latest"), "a pre-release moves no latest")
	require.Empty(t, digest("2"), "a pre-release makes no major tag")
	require.Empty(t, digest("2.0"), "a pre-release makes no minor tag")

	// A tag on a commit never built: built, tested, then released.
	c3, err := testenv.CommitFiles(ctx, dir, map[string]string{"Dockerfile": dockerfile(base, "LABEL v=3\n")}, "third")
	require.NoError(t, err)
	fresh := pushRef("refs/tags/v3.0.0", c3)
	log = s.logs(fresh.ID)
	require.Contains(t, log, "Building "+image, "built")
	require.Contains(t, log, "building and testing it before the release")
	require.Len(t, fresh.Tests, 2)
	for _, tr := range fresh.Tests {
		require.True(t, tr.Passed)
	}
	for _, tag := range []string{"3.0.0", "3.0", "3", "latest"} {
		require.Equal(t, fresh.IndexDigest, digest(tag), tag)
	}
	code, body = s.api(fmt.Sprintf("/promotions?build=%d", fresh.ID), nil)
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, json.Unmarshal(body, &audit))
	require.Len(t, audit.Promotions, 4, "%s", body)

	// The release records: the fresh release names the tag's own build as
	// the tested one, and has no chart; the list is newest first.
	var rec struct {
		IndexDigest  string `json:"index_digest"`
		Chart        *slipway.ReleaseChart
		Source       struct{ ID int64 } `json:"source_build"`
		Build        struct{ ID int64 }
		PromotionIDs []int64 `json:"promotion_ids"`
	}
	code, body = s.api("/releases/acme/relapp/v3.0.0", &rec)
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.Equal(t, fresh.IndexDigest, rec.IndexDigest)
	require.Equal(t, fresh.ID, rec.Source.ID)
	require.Equal(t, fresh.ID, rec.Build.ID)
	require.Nil(t, rec.Chart, "no chart folder, no chart")
	ids := []int64{}
	for _, p := range audit.Promotions {
		ids = append(ids, p.ID)
	}
	require.ElementsMatch(t, ids, rec.PromotionIDs, "the record names its audit rows")
	var list struct{ Releases []slipway.Release }
	code, body = s.api("/releases/acme/relapp", &list)
	require.Equal(t, http.StatusOK, code, "%s", body)
	versions := []string{}
	for _, r := range list.Releases {
		versions = append(versions, r.Version)
	}
	require.Equal(t, []string{"3.0.0", "2.0.0-rc.1", "1.2.3"}, versions)
	require.Equal(t, rel.ID, list.Releases[2].BuildID)
	require.Equal(t, onMain.ID, list.Releases[2].SourceBuildID)
}
