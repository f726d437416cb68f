package slipway

import (
	"context"
	"time"
)

// Release is the record of one version a tag push released (issue 13 item
// 7): what a QA sign-off needs. It is written once a release has fully
// succeeded — its tags promoted and its chart, if any, pushed — and never for
// a refused or failed one (the promotion audit trail has those).
type Release struct {
	ID     int64  `json:"id"`
	RepoID int64  `json:"repo_id"`
	Repo   string `json:"repo"` // owner/name
	// Version is the release version, the tag without a leading "v" ("1.2.3");
	// Tag is the git tag as pushed ("v1.2.3").
	Version string `json:"version"`
	Tag     string `json:"tag"`
	// Tags are the image tags the release wrote (1.2.3, 1.2, 1, latest, …).
	Tags        []string          `json:"tags"`
	Image       string            `json:"image"` // registry/owner/name, no tag
	Commit      string            `json:"commit"`
	IndexDigest string            `json:"index_digest"`
	Platforms   []ReleasePlatform `json:"platforms"`
	// Chart is the pushed Helm chart; nil when .slipway.yml names none.
	Chart *ReleaseChart `json:"chart"`
	// SourceBuildID is the tested build whose index was promoted; BuildID is
	// the tag push's own build (the same when the tag's commit was built for
	// the release).
	SourceBuildID int64 `json:"source_build_id"`
	BuildID       int64 `json:"build_id"`
	// ReleasedBy is the actor of the release's audit rows: "tag push v1.2.3 by <sender>".
	ReleasedBy   string    `json:"released_by"`
	ReleasedAt   time.Time `json:"released_at"`
	PromotionIDs []int64   `json:"promotion_ids"`
}

// ReleasePlatform is one platform of a released index: its image manifest
// digest and the digest of the provenance attestation manifest BuildKit
// attached to it ("" when the build made none, provenance: off).
type ReleasePlatform struct {
	Platform    string `json:"platform"`
	Digest      string `json:"digest"`
	Attestation string `json:"attestation"`
}

// ReleaseChart is a release's Helm chart as pushed: Reference is
// "oci://host/owner/charts/name:1.2.3", Digest its manifest digest
// ("sha256:…"), Version and AppVersion what its Chart.yaml says.
type ReleaseChart struct {
	Name       string `json:"name"`
	Reference  string `json:"reference"`
	Digest     string `json:"digest"`
	Version    string `json:"version"`
	AppVersion string `json:"app_version"`
}

// ReleaseFilter selects releases. Zero fields do not filter.
type ReleaseFilter struct {
	Repo string // owner/name, case-insensitive
	// BuildID selects the releases of a build: as the tested build or as the tag's.
	BuildID int64
	Limit   int // default 50, at most 500
}

// ReleaseService stores release records. Implementations are safe for
// concurrent use.
type ReleaseService interface {
	// CreateRelease records r and fills in its ID and ReleasedAt. A second
	// release of the same version of the same repository replaces the first
	// record (the version tag never moves, so its index digest is the same).
	// EINVALID for a malformed field.
	CreateRelease(ctx context.Context, r *Release) error
	// FindRelease returns the release of version ("1.2.3" or "v1.2.3") of the
	// repository owner/name (case-insensitive; the newest when several forges
	// have one of that name). ENOTFOUND when there is none.
	FindRelease(ctx context.Context, repo, version string) (*Release, error)
	// FindReleases returns releases newest first.
	FindReleases(ctx context.Context, f ReleaseFilter) ([]*Release, error)
}
