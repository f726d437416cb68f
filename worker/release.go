package worker

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"golang.org/x/mod/semver"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/promote"
)

// DefaultReleasePattern is the tag pattern of a release when .slipway.yml's
// release section names none: v1.2.3 or 1.2.3, with an optional pre-release
// such as -rc.1.
const DefaultReleasePattern = `^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`

// What a release does when its commit has no tested build (release.untested).
const (
	UntestedBuild  = "build"  // build and test it, then release (the default)
	UntestedRefuse = "refuse" // fail the tag's build
)

// ReleaseSpec is the release section of .slipway.yml. A tag push whose name
// matches Pattern is a release: it promotes the index digest of the commit's
// tested build to the release tags instead of building again.
type ReleaseSpec struct {
	// Enabled turns releases off with false; default on.
	Enabled *bool `yaml:"enabled"`
	// Pattern is a regular expression (RE2) the tag's short name must match.
	Pattern string `yaml:"pattern"`
	// Latest moves "latest" with every release that is not a pre-release; default true.
	Latest *bool `yaml:"latest"`
	// Untested is UntestedBuild or UntestedRefuse.
	Untested string `yaml:"untested"`

	re *regexp.Regexp
}

// validate fills in the defaults; an error names the field.
func (r *ReleaseSpec) validate() error {
	if r.Pattern == "" {
		r.Pattern = DefaultReleasePattern
	}
	re, err := regexp.Compile(r.Pattern)
	if err != nil {
		return fmt.Errorf("pattern: %q is not a regular expression: %v", r.Pattern, err)
	}
	r.re = re
	switch r.Untested {
	case "":
		r.Untested = UntestedBuild
	case UntestedBuild, UntestedRefuse:
	default:
		return fmt.Errorf("untested: %q is not build or refuse", r.Untested)
	}
	return nil
}

// releaseTags returns the tags a release of ref gets, and false when ref is no
// release: not a tag, or a tag that does not match the pattern. The leading
// "v" is trimmed; a semantic version that is not a pre-release also gets
// MAJOR.MINOR, MAJOR and (with Latest) "latest": v1.2.3 → 1.2.3, 1.2, 1,
// latest; v2.0.0-rc.1 → 2.0.0-rc.1 only. The first tag is the version, which
// never moves once it points at an image.
func (r *ReleaseSpec) releaseTags(ref string) ([]string, bool) {
	name, ok := strings.CutPrefix(ref, "refs/tags/")
	if !ok || r == nil || (r.Enabled != nil && !*r.Enabled) || !r.re.MatchString(name) {
		return nil, false
	}
	version := strings.TrimPrefix(name, "v")
	if !slipway.ValidTag(version) {
		return nil, false
	}
	tags := []string{version}
	sv := "v" + version
	if semver.IsValid(sv) && semver.Prerelease(sv) == "" && semver.Build(sv) == "" {
		mm := strings.TrimPrefix(semver.MajorMinor(sv), "v")
		major := strings.TrimPrefix(semver.Major(sv), "v")
		for _, t := range []string{mm, major} {
			if t != version {
				tags = append(tags, t)
			}
		}
		if r.Latest == nil || *r.Latest {
			tags = append(tags, "latest")
		}
	}
	return tags, true
}

// testedBuild returns the newest succeeded build of build's commit in the same
// repository and image, other than build and not of a pull request, or nil.
func (w *Worker) testedBuild(ctx context.Context, build *slipway.Build) (*slipway.Build, error) {
	list, err := w.builds.FindBuilds(ctx, slipway.BuildFilter{Repo: build.Repo, Commit: build.Commit, State: slipway.BuildSucceeded, Limit: 20})
	if err != nil {
		return nil, fmt.Errorf("finding tested builds of %s: %w", build.Commit, err)
	}
	for _, b := range list {
		if b.ID != build.ID && b.PullRequest == nil && b.IndexDigest != "" && b.Image == build.Image && b.RepoID == build.RepoID {
			return b, nil
		}
	}
	return nil, nil
}

// release points tags of build.Image at source's tested index digest
// through the promotion service, the code and audit trail of a manual
// promotion (actor: the tag push). The version (tags[0]) is immutable: when
// it points at another image already, nothing is written.
func (w *Worker) release(ctx context.Context, build, source *slipway.Build, tags []string) (*promote.Result, error) {
	actor := releaseActor(build)
	svc := promote.Service{Registry: w.registry, Store: w.cfg.Promotions}
	res, err := svc.Promote(ctx, promote.Request{Build: source, Tags: tags, Target: build.Image, Actor: actor, Release: true})
	if err != nil {
		return nil, errors.New(slipway.ErrorMessage(err))
	}
	return res, nil
}

// releaseActor is the actor of a release's audit rows and its record:
// "tag push v1.2.3 by <sender>".
func releaseActor(build *slipway.Build) string {
	actor := "tag push " + slipway.RefName(build.Ref)
	if build.Sender != "" {
		actor += " by " + build.Sender
	}
	return actor
}

// chartFunc checks and pushes the app's Helm chart pinned to image@digest
// (checkChart with push); nil, nil without a chart.
type chartFunc func(image, digest string) (*slipway.ReleaseChart, error)

// releaseAndRecord releases source's index as build's tags (release), pushes
// the chart, and then writes the release record: its version is tags[0], its
// provenance the attestation manifests of source's index, read before
// anything moves. Nothing is recorded unless every step succeeded; a chart
// that fails to push leaves the tags promoted (and audited) but no record,
// and the tag's build fails, so pushing the tag again completes the release.
func (w *Worker) releaseAndRecord(ctx context.Context, build, source *slipway.Build, tags []string, chart chartFunc, sink *logSink) error {
	attest, err := w.registry.Attestations(ctx, source.Image+"@"+source.IndexDigest)
	if err != nil {
		return fmt.Errorf("reading the provenance of %s@%s: %w", source.Image, source.IndexDigest, fromService(err))
	}
	res, err := w.release(ctx, build, source, tags)
	if err != nil {
		return err
	}
	sink.Add("", "release", fmt.Sprintf("Released %s:%s → %s", build.Image, strings.Join(tags, ", "), source.IndexDigest))
	pushed, err := chart(build.Image, source.IndexDigest)
	if err != nil {
		return err
	}
	if w.cfg.Releases == nil {
		return nil
	}
	rec := &slipway.Release{Version: tags[0], Tag: slipway.RefName(build.Ref), Tags: tags, Image: build.Image,
		Commit: source.Commit, IndexDigest: source.IndexDigest, SourceBuildID: source.ID, BuildID: build.ID,
		Chart: pushed, ReleasedBy: releaseActor(build)}
	for _, p := range source.Platforms {
		rec.Platforms = append(rec.Platforms, slipway.ReleasePlatform{Platform: p.Platform, Digest: p.Digest, Attestation: attest[p.Digest]})
	}
	for _, id := range res.AuditIDs {
		if id != 0 {
			rec.PromotionIDs = append(rec.PromotionIDs, id)
		}
	}
	if err := w.cfg.Releases.CreateRelease(context.WithoutCancel(ctx), rec); err != nil {
		return fmt.Errorf("recording the release: %w", err)
	}
	sink.Add("", "release", fmt.Sprintf("Recorded release %s of %s (GET /api/v1/releases/%s/%s)", rec.Version, build.Repo, build.Repo, rec.Version))
	return nil
}

// releaseTested releases build's commit from its tested build when there is
// one: no BuildKit solve, the build ends succeeded with the tested build's
// digests and test results, or err says why the release failed. done is
// false when there is no tested build.
//
// chart, called with the released image and digest after the promotion,
// checks and pushes the app's Helm chart (checkChart).
func (w *Worker) releaseTested(ctx context.Context, job *slipway.Job, build *slipway.Build, tags []string,
	chart chartFunc, sink *logSink,
	fail func(string, ...any) *buildFailure) (u slipway.BuildUpdate, done bool, _ error) {
	source, err := w.testedBuild(ctx, build)
	if err != nil {
		return u, true, fail("%v", err)
	}
	if source == nil {
		return u, false, nil
	}
	sink.Add("", "release", fmt.Sprintf("Releasing %s from tested build %d (%s@%s): no rebuild",
		slipway.RefName(build.Ref), source.ID, source.Image, source.IndexDigest))
	ref := source.ImageRef
	if err := w.jobs.JobUpdateBuild(ctx, job, slipway.BuildUpdate{ImageRef: &ref, IndexDigest: &source.IndexDigest, Platforms: source.Platforms}); err != nil {
		return u, true, fail("recording the release: %v", err)
	}
	if err := w.releaseAndRecord(ctx, build, source, tags, chart, sink); err != nil {
		return u, true, fail("releasing %s failed: %v", slipway.RefName(build.Ref), err)
	}
	state := slipway.BuildSucceeded
	tests := source.Tests
	if tests == nil {
		tests = []slipway.TestResult{}
	}
	return slipway.BuildUpdate{State: &state, Tags: tags, Tests: tests}, true, nil
}
