package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
)

// releaseFixture is a tested build of acme/app on main, a tag push's build
// of the same commit, and the release record the worker writes for them.
type releaseFixture struct {
	source, tag *slipway.Build
	rel         *slipway.Release
}

func digestOf(c string) string { return "sha256:" + strings.Repeat(c, 64) }

// storeRelease stores a release of version (v-prefixed tag) of acme/app with
// the given chart (nil: none), as worker.releaseAndRecord does.
func storeRelease(t *testing.T, b *testBundle, version string, chart *slipway.ReleaseChart) releaseFixture {
	t.Helper()
	ctx := context.Background()
	commit := strings.Repeat("ab", 20)
	enqueue := func(ref, delivery string) *slipway.Build {
		res, err := b.builds.EnqueueTrigger(ctx, slipway.Trigger{Forge: "github", DeliveryID: delivery, Event: "push",
			Owner: "acme", Name: "app", CloneURL: "https://github.com/acme/app.git", Ref: ref, Commit: commit,
			Message: "Fix the widget", Sender: "alice"}, testRegistry+"/acme/app")
		require.NoError(t, err)
		return res.Build
	}
	source := enqueue("refs/heads/main", "d-main-"+version)
	tests := []slipway.TestResult{
		{Name: "arch", Platform: "linux/amd64", Passed: true, DurationMS: 120},
		{Name: "arch", Platform: "linux/arm64", Passed: true, DurationMS: 340},
		{Name: "smoke", Platform: "linux/arm64", Passed: true, DurationMS: 50},
	}
	platforms := []slipway.PlatformDigest{{Platform: "linux/amd64", Digest: digestOf("1")}, {Platform: "linux/arm64", Digest: digestOf("2")}}
	tj, err := json.Marshal(tests)
	require.NoError(t, err)
	pj, err := json.Marshal(platforms)
	require.NoError(t, err)
	_, err = b.db.Pool().Exec(ctx, `UPDATE builds SET state = 'succeeded', index_digest = $2, platforms = $3::jsonb, tests = $4::jsonb, finished_at = now() WHERE id = $1`,
		source.ID, digestOf("0"), pj, tj)
	require.NoError(t, err)
	tag := enqueue("refs/tags/"+version, "d-tag-"+version)
	rel := &slipway.Release{Version: strings.TrimPrefix(version, "v"), Tag: version, Tags: []string{strings.TrimPrefix(version, "v"), "latest"},
		Image: testRegistry + "/acme/app", Commit: commit, IndexDigest: digestOf("0"),
		Platforms: []slipway.ReleasePlatform{
			{Platform: "linux/amd64", Digest: digestOf("1"), Attestation: digestOf("3")},
			{Platform: "linux/arm64", Digest: digestOf("2"), Attestation: digestOf("4")},
		},
		Chart: chart, SourceBuildID: source.ID, BuildID: tag.ID, ReleasedBy: "tag push " + version + " by alice", PromotionIDs: []int64{7, 8}}
	require.NoError(t, postgres.NewReleaseService(b.db).CreateRelease(ctx, rel))
	require.NotZero(t, rel.ID)
	require.NotZero(t, rel.RepoID)
	return releaseFixture{source: source, tag: tag, rel: rel}
}

func TestReleases(t *testing.T) {
	t.Parallel()

	t.Run("ViewAndList", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		chart := &slipway.ReleaseChart{Name: "app", Reference: "oci://" + testRegistry + "/acme/charts/app:1.2.3",
			Digest: digestOf("5"), Version: "1.2.3", AppVersion: "1.2.3"}
		f := storeRelease(t, b, "v1.2.3", chart)
		viewer := "Bearer " + createToken(t, b.db, "qa", slipway.RoleViewer)

		for _, version := range []string{"v1.2.3", "1.2.3"} {
			resp, out := b.get(t, "/api/v1/releases/acme/app/"+version, viewer)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", version, out["_raw"])
			var v struct {
				Repo, Version, Tag, Commit, Subject, Image string
				IndexDigest                                string `json:"index_digest"`
				Platforms                                  []struct {
					Platform, Digest, Provenance string
					Tests                        []slipway.TestResult
				}
				Chart       *slipway.ReleaseChart
				Tags        []string
				ReleasedBy  string `json:"released_by"`
				ReleasedAt  string `json:"released_at"`
				SourceBuild struct {
					ID        int64
					URL, Page string
				} `json:"source_build"`
				Build       struct{ ID int64 }
				Promotions  []int64 `json:"promotion_ids"`
				TestsPassed bool    `json:"tests_passed"`
			}
			require.NoError(t, json.Unmarshal([]byte(out["_raw"].(string)), &v))
			require.Equal(t, "acme/app", v.Repo)
			require.Equal(t, "1.2.3", v.Version)
			require.Equal(t, "v1.2.3", v.Tag)
			require.Equal(t, f.rel.Commit, v.Commit)
			require.Equal(t, "Fix the widget", v.Subject)
			require.Equal(t, digestOf("0"), v.IndexDigest)
			require.Len(t, v.Platforms, 2)
			require.Equal(t, "linux/amd64", v.Platforms[0].Platform)
			require.Equal(t, digestOf("1"), v.Platforms[0].Digest)
			require.Equal(t, digestOf("3"), v.Platforms[0].Provenance)
			require.Len(t, v.Platforms[0].Tests, 1, "tests are split by platform")
			require.Equal(t, digestOf("4"), v.Platforms[1].Provenance)
			require.Len(t, v.Platforms[1].Tests, 2)
			require.Equal(t, "smoke", v.Platforms[1].Tests[1].Name)
			require.Equal(t, chart, v.Chart)
			require.Equal(t, []string{"1.2.3", "latest"}, v.Tags)
			require.Equal(t, "tag push v1.2.3 by alice", v.ReleasedBy)
			require.NotEmpty(t, v.ReleasedAt)
			require.Equal(t, f.source.ID, v.SourceBuild.ID)
			require.Equal(t, fmt.Sprintf("%s/api/v1/builds/%d", testPublic, f.source.ID), v.SourceBuild.URL)
			require.Equal(t, fmt.Sprintf("%s/builds/%d", testPublic, f.source.ID), v.SourceBuild.Page)
			require.Equal(t, f.tag.ID, v.Build.ID)
			require.Equal(t, []int64{7, 8}, v.Promotions)
			require.True(t, v.TestsPassed)
		}

		// Owner and name are case-insensitive, as everywhere.
		resp, out := b.get(t, "/api/v1/releases/ACME/App/1.2.3", viewer)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out["_raw"])

		resp, out = b.get(t, "/api/v1/releases/acme/app/9.9.9", viewer)
		require.Contains(t, requireError(t, resp, out, http.StatusNotFound, "not_found"), "acme/app has no release 9.9.9")
		resp, out = b.get(t, "/api/v1/releases/acme/nope/1.2.3", viewer)
		require.Contains(t, requireError(t, resp, out, http.StatusNotFound, "not_found"), "acme/nope has no release 1.2.3")

		// A second version, then the list: newest first.
		storeRelease(t, b, "v1.3.0", nil)
		resp, out = b.get(t, "/api/v1/releases/acme/app", viewer)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out["_raw"])
		var list struct{ Releases []slipway.Release }
		require.NoError(t, json.Unmarshal([]byte(out["_raw"].(string)), &list))
		require.Len(t, list.Releases, 2)
		require.Equal(t, "1.3.0", list.Releases[0].Version)
		require.Nil(t, list.Releases[0].Chart, "no chart, no chart object")
		require.Equal(t, "1.2.3", list.Releases[1].Version)
		require.Equal(t, chart, list.Releases[1].Chart)
		resp, out = b.get(t, "/api/v1/releases/acme/other", viewer)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "{\"releases\":[]}\n", out["_raw"])
	})

	t.Run("NeedsAToken", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		storeRelease(t, b, "v1.2.3", nil)
		resp, out := b.get(t, "/api/v1/releases/acme/app/1.2.3", "Bearer wrong")
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s", out["_raw"])
		resp, out = b.get(t, "/api/v1/releases/acme/app", "")
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s", out["_raw"])
	})

	t.Run("SecondReleaseOfAVersionReplacesTheRecord", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		first := storeRelease(t, b, "v2.0.0", nil)
		second := storeRelease(t, b, "v2.0.0", &slipway.ReleaseChart{Name: "app", Reference: "oci://x/acme/charts/app:2.0.0", Digest: digestOf("6"), Version: "2.0.0", AppVersion: "2.0.0"})
		require.Equal(t, first.rel.ID, second.rel.ID, "one record per version")
		list, err := postgres.NewReleaseService(b.db).FindReleases(context.Background(), slipway.ReleaseFilter{Repo: "acme/app"})
		require.NoError(t, err)
		require.Len(t, list, 1)
		require.Equal(t, second.tag.ID, list[0].BuildID)
		require.Equal(t, digestOf("6"), list[0].Chart.Digest)
	})

	t.Run("RefusesABadRecord", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		f := storeRelease(t, b, "v1.0.0", nil)
		bad := *f.rel
		bad.Version, bad.IndexDigest = "1.0.1", "latest"
		err := postgres.NewReleaseService(b.db).CreateRelease(context.Background(), &bad)
		require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err), "%v", err)
	})
}

func TestDashboardRelease(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	chart := &slipway.ReleaseChart{Name: "app", Reference: "oci://" + testRegistry + "/acme/charts/app:1.2.3",
		Digest: digestOf("5"), Version: "1.2.3", AppVersion: "1.2.3"}
	f := storeRelease(t, b, "v1.2.3", chart)
	br := newBrowser(t, b.srv.URL)

	resp, _ := br.do(http.MethodGet, "/releases/acme/app/v1.2.3", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, "signed out: to the sign-in page")
	br.signIn(createToken(t, b.db, "qa", slipway.RoleViewer))

	for _, path := range []string{"/releases/acme/app/v1.2.3", "/releases/acme/app/1.2.3"} {
		resp, page := br.do(http.MethodGet, path, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, page)
		require.Contains(t, page, "Release 1.2.3")
		require.Contains(t, page, `<code id="index-digest">`+digestOf("0")+`</code>`)
		require.Contains(t, page, `data-copy="`+digestOf("0")+`"`, "a copy button for the index digest")
		require.Contains(t, page, "docker pull "+testRegistry+"/acme/app@"+digestOf("0"))
		for _, d := range []string{digestOf("1"), digestOf("2")} {
			require.Contains(t, page, `<code class="platform-digest">`+d+`</code>`)
			require.Contains(t, page, `data-copy="`+d+`"`)
		}
		require.Contains(t, page, `<code class="provenance-digest">`+digestOf("3")+`</code>`)
		require.Contains(t, page, `<code class="provenance-digest">`+digestOf("4")+`</code>`)
		require.Contains(t, page, `<code id="chart-ref">`+chart.Reference+`</code>`)
		require.Contains(t, page, "helm pull "+chart.Reference+"@"+digestOf("5"))
		require.Contains(t, page, "smoke", "the tests per platform")
		require.Contains(t, page, "Released by tag push v1.2.3 by alice")
		require.Contains(t, page, fmt.Sprintf(`href="/builds/%d"`, f.source.ID))
		require.Contains(t, page, f.rel.Commit)
	}

	for _, id := range []int64{f.source.ID} {
		resp, page := br.do(http.MethodGet, fmt.Sprintf("/builds/%d", id), nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, page)
		require.Contains(t, page, `Released as <a href="/releases/acme/app/1.2.3">1.2.3</a>`, "the tested build links its release")
	}

	resp, page := br.do(http.MethodGet, "/releases/acme/app", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, page)
	require.Contains(t, page, `href="/releases/acme/app/1.2.3"`)
	resp, page = br.do(http.MethodGet, "/releases/acme/app/9.9.9", nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode, page)
	require.Contains(t, page, "acme/app has no release 9.9.9")
	resp, page = br.do(http.MethodGet, "/releases/acme/nothing", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, page)
	require.Contains(t, page, "No releases yet")
	resp, page = br.do(http.MethodGet, "/repos/acme/app", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, page)
	require.Contains(t, page, `href="/releases/acme/app" id="repo-releases"`)

	// No chart: the page says so, and offers no helm pull.
	storeRelease(t, b, "v1.3.0", nil)
	resp, page = br.do(http.MethodGet, "/releases/acme/app/1.3.0", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, page)
	require.Contains(t, page, "No chart")
	require.NotContains(t, page, "helm pull")
}
