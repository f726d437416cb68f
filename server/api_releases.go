package server

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/slipway-ci/slipway"
)

// releaseView is one release as GET /api/v1/releases/{owner}/{name}/{version}
// answers it and the release page shows it: the stored record joined with
// the tested build's commit subject and test results.
type releaseView struct {
	Repo        string                `json:"repo"`
	Version     string                `json:"version"` // 1.2.3
	Tag         string                `json:"tag"`     // v1.2.3, the git tag
	Commit      string                `json:"commit"`
	Subject     string                `json:"subject"`
	Image       string                `json:"image"`
	IndexDigest string                `json:"index_digest"`
	Platforms   []releasePlatformView `json:"platforms"`
	Chart       *slipway.ReleaseChart `json:"chart"`
	Tags        []string              `json:"tags"`
	ReleasedBy  string                `json:"released_by"`
	ReleasedAt  time.Time             `json:"released_at"`
	Source      releaseBuildLink      `json:"source_build"`
	Build       releaseBuildLink      `json:"build"`
	Tests       []slipway.TestResult  `json:"-"` // every test, for the page's totals
	Promotions  []int64               `json:"promotion_ids"`
	// Passed is true when every test of the tested build passed.
	Passed bool `json:"tests_passed"`
}

// releasePlatformView is one platform of a release: its image manifest, the
// provenance attestation BuildKit attached to it, and its test results.
type releasePlatformView struct {
	Platform string `json:"platform"`
	Digest   string `json:"digest"`
	// Provenance is the digest of the platform's attestation manifest (an
	// in-toto SLSA provenance statement), "" when the build made none.
	Provenance string               `json:"provenance"`
	Tests      []slipway.TestResult `json:"tests"`
}

// releaseBuildLink names a build and where to read it.
type releaseBuildLink struct {
	ID   int64  `json:"id"`
	URL  string `json:"url"`  // the API: /api/v1/builds/{id}
	Page string `json:"page"` // the dashboard: /builds/{id}
}

// loadRelease finds version of repo (owner/name) and joins it with its
// tested build. ENOTFOUND for an unknown one; EUNAVAILABLE without a store.
func loadRelease(ctx context.Context, releases slipway.ReleaseService, builds slipway.BuildService, publicURL, repo, version string) (*releaseView, error) {
	if releases == nil {
		return nil, unavailable("The release records")
	}
	rel, err := releases.FindRelease(ctx, repo, version)
	if err != nil {
		return nil, err
	}
	source, err := builds.FindBuildByID(ctx, rel.SourceBuildID)
	if err != nil {
		return nil, fmt.Errorf("reading the tested build of release %s: %w", rel.Version, err)
	}
	link := func(id int64) releaseBuildLink {
		return releaseBuildLink{ID: id, URL: fmt.Sprintf("%s/api/v1/builds/%d", publicURL, id), Page: fmt.Sprintf("%s/builds/%d", publicURL, id)}
	}
	v := &releaseView{Repo: rel.Repo, Version: rel.Version, Tag: rel.Tag, Commit: rel.Commit, Subject: source.Message,
		Image: rel.Image, IndexDigest: rel.IndexDigest, Chart: rel.Chart, Tags: rel.Tags, ReleasedBy: rel.ReleasedBy,
		ReleasedAt: rel.ReleasedAt, Source: link(rel.SourceBuildID), Build: link(rel.BuildID),
		Promotions: rel.PromotionIDs, Tests: source.Tests, Passed: true}
	v.Platforms = make([]releasePlatformView, len(rel.Platforms))
	for i, p := range rel.Platforms {
		v.Platforms[i] = releasePlatformView{Platform: p.Platform, Digest: p.Digest, Provenance: p.Attestation, Tests: []slipway.TestResult{}}
		for _, t := range source.Tests {
			if t.Platform == p.Platform {
				v.Platforms[i].Tests = append(v.Platforms[i].Tests, t)
			}
		}
	}
	for _, t := range source.Tests {
		v.Passed = v.Passed && t.Passed
	}
	return v, nil
}

// handleReleaseView answers GET /api/v1/releases/{owner}/{name}/{version}
// (version as tagged, v1.2.3, or trimmed, 1.2.3) with a releaseView; 404
// names the repository and version when there is no such release.
func handleReleaseView(cfg Config, releases slipway.ReleaseService, builds slipway.BuildService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		owner, name := repoParams(r)
		v, err := loadRelease(r.Context(), releases, builds, cfg.PublicURL, owner+"/"+name, chi.URLParam(r, "version"))
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, v)
	}
}

// handleReleaseList answers GET /api/v1/releases/{owner}/{name}: the
// repository's release records, newest first, at most limit (default 50,
// at most 500).
func handleReleaseList(releases slipway.ReleaseService) http.HandlerFunc {
	type response struct {
		Releases []*slipway.Release `json:"releases"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if releases == nil {
			writeError(w, r, unavailable("The release records"))
			return
		}
		owner, name := repoParams(r)
		f := slipway.ReleaseFilter{Repo: owner + "/" + name}
		n, err := queryLimit(r.URL.Query(), 500)
		if err != nil {
			writeError(w, r, err)
			return
		}
		f.Limit = n
		list, err := releases.FindReleases(r.Context(), f)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if list == nil {
			list = []*slipway.Release{}
		}
		writeJSON(w, r, http.StatusOK, response{Releases: list})
	}
}
