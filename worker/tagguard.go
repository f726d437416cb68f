package worker

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/slipway-ci/slipway"
)

// guardTags drops from tags the ones this build's ref may not move, by one
// rule (the README's "Who moves a tag"):
//
//   - a tag a promotion or a release wrote is never moved by a build;
//   - a tag last written by a build of another ref is not moved, except that
//     a git tag's build takes its name over from a branch's build (a branch
//     named v2 never moves :v2 of tag v2, and tag v2 is what :v2 means);
//   - sha-… tags name one commit and any build of it may write them.
//
// Each skipped tag is logged with its reason and returned for the build's
// JSON. When the stores cannot be read the tag is skipped too, saying so: a
// tag is never moved on a guess.
func (w *Worker) guardTags(ctx context.Context, build *slipway.Build, tags []string, sink *logSink) ([]string, []slipway.SkippedTag) {
	if len(tags) == 0 {
		return tags, nil
	}
	var (
		keep    []string
		skipped []slipway.SkippedTag
	)
	skip := func(tag, reason string) {
		skipped = append(skipped, slipway.SkippedTag{Tag: tag, Reason: reason})
		sink.Add("", "tag", fmt.Sprintf("Not moving %s:%s: %s.", build.Image, tag, reason))
	}
	var writers []*slipway.Build
	listed := false
	for _, tag := range tags {
		if tag == slipway.CommitTag(build.Commit) {
			keep = append(keep, tag)
			continue
		}
		if w.cfg.Promotions != nil {
			rows, err := w.cfg.Promotions.FindPromotions(ctx, slipway.PromotionFilter{Repo: build.Image, Tag: tag, Limit: 20})
			if err != nil {
				skip(tag, "the promotion audit trail could not be read: "+err.Error())
				continue
			}
			if i := slices.IndexFunc(rows, func(p *slipway.Promotion) bool {
				// "unchanged": the tag already pointed there, and the
				// promotion made it the release manager's all the same.
				return (p.Outcome == slipway.PromotionPromoted || p.Outcome == slipway.PromotionUnchanged) && p.TargetRepo == build.Image
			}); i >= 0 {
				skip(tag, fmt.Sprintf("a promotion wrote it (audit row %d by %s); only promotion moves it", rows[i].ID, rows[i].Actor))
				continue
			}
		}
		if !listed {
			list, err := w.builds.FindBuilds(ctx, slipway.BuildFilter{Repo: build.Repo, State: slipway.BuildSucceeded, Limit: 500})
			if err != nil {
				skip(tag, "the builds that wrote it could not be read: "+err.Error())
				continue
			}
			writers, listed = list, true
		}
		// The newest succeeded build of the same image that wrote the tag.
		var last *slipway.Build
		for _, b := range writers {
			if b.ID != build.ID && b.Image == build.Image && slices.Contains(b.Tags, tag) {
				last = b
				break
			}
		}
		switch {
		case last == nil, last.Ref == build.Ref:
			keep = append(keep, tag)
		case strings.HasPrefix(build.Ref, "refs/tags/") && strings.HasPrefix(last.Ref, "refs/heads/"):
			sink.Add("", "tag", fmt.Sprintf("Tag %s takes %s:%s over from build %d of branch %s.",
				slipway.RefName(build.Ref), build.Image, tag, last.ID, slipway.RefName(last.Ref)))
			keep = append(keep, tag)
		default:
			skip(tag, fmt.Sprintf("build %d of %s wrote it, and a build of %s does not move another ref's tag", last.ID, last.Ref, build.Ref))
		}
	}
	return keep, skipped
}

// entitledTags drops the tags build's own ref does not entitle it to write:
// version-like tags (v1.2.3, 1.2, 1; slipway.IsVersionTag) and latest come
// from tag pushes and promotion, so a branch's or a pull request's build
// never writes them, whatever its .slipway.yml says; a tag push's build
// writes only the version tags made of its own name (the tag, its
// semver.version, major, major.minor). latest is moved only by a release or
// a promotion. The rest is left to guardTags.
func entitledTags(build *slipway.Build, tags []string, sink *logSink) ([]string, []slipway.SkippedTag) {
	own := map[string]bool{}
	if strings.HasPrefix(build.Ref, "refs/tags/") {
		v := TagValues(build.Ref, build.Commit)
		for _, t := range []string{v["tag"], v["semver.version"], v["semver.major"], v["semver.major"] + "." + v["semver.minor"]} {
			own[t] = true
		}
	}
	var (
		keep    []string
		skipped []slipway.SkippedTag
	)
	for _, tag := range tags {
		var reason string
		switch {
		case tag == slipway.CommitTag(build.Commit):
		case tag == "latest":
			reason = "latest moves only through a release or a promotion"
		case slipway.IsVersionTag(tag) && !own[tag]:
			reason = fmt.Sprintf("a version tag comes from its own tag push or a promotion, not from a build of %s", build.Ref)
		}
		if reason == "" {
			keep = append(keep, tag)
			continue
		}
		skipped = append(skipped, slipway.SkippedTag{Tag: tag, Reason: reason})
		sink.Add("", "tag", fmt.Sprintf("Not moving %s:%s: %s.", build.Image, tag, reason))
	}
	return keep, skipped
}
