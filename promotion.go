package slipway

import (
	"context"
	"path"
	"regexp"
	"strings"
	"time"
)

// PromotionOutcome is what a promotion attempt did. The values mirror the
// CHECK constraint on promotions.outcome.
type PromotionOutcome string

// Promotion outcomes.
const (
	// PromotionPromoted: the tag now points at the build's digest.
	PromotionPromoted PromotionOutcome = "promoted"
	// PromotionUnchanged: the tag already pointed at the digest; nothing was written.
	PromotionUnchanged PromotionOutcome = "unchanged"
	// PromotionRefused: a rule said no (build not succeeded, immutable tag, role).
	PromotionRefused PromotionOutcome = "refused"
	// PromotionFailed: the registry failed while promoting.
	PromotionFailed PromotionOutcome = "failed"
)

// Promotion is one audit row: one attempt to point one tag at a build's digest.
type Promotion struct {
	ID             int64            `json:"id"`
	BuildID        int64            `json:"build_id"`
	Actor          string           `json:"actor"` // token name
	Digest         string           `json:"digest"`
	Source         string           `json:"source"` // repo@digest
	Target         string           `json:"target"` // repo:tag
	TargetRepo     string           `json:"target_repo"`
	Tag            string           `json:"tag"`
	PreviousDigest string           `json:"previous_digest"`
	Forced         bool             `json:"forced"`
	Outcome        PromotionOutcome `json:"outcome"`
	Reason         string           `json:"reason,omitempty"`
	CreatedAt      time.Time        `json:"created_at"`
}

// PromotionFilter selects audit rows. Zero fields do not filter.
type PromotionFilter struct {
	Repo    string // target repository, e.g. registry:5000/acme/app, or owner/name suffix
	Tag     string
	BuildID int64
	Limit   int // default 100, at most 500
}

// PromotionService stores the promotion audit trail. Implementations are safe
// for concurrent use.
type PromotionService interface {
	// CreatePromotions appends audit rows and fills in their ID and CreatedAt.
	CreatePromotions(ctx context.Context, ps []*Promotion) error
	// FindPromotions returns audit rows newest first.
	FindPromotions(ctx context.Context, f PromotionFilter) ([]*Promotion, error)
	// LockTarget waits until no other promotion to the target repository
	// repo (registry/path, no tag) holds its lock, in any process, and takes
	// it until unlock is called. An error means the lock was not taken (ctx
	// ended, the store is unreachable: EUNAVAILABLE).
	LockTarget(ctx context.Context, repo string) (unlock func(), err error)
}

// versionTagRE matches tags that look like versions: v1, 1.2, v1.2.3, 1.2.3-rc.1.
var versionTagRE = regexp.MustCompile(`^v?\d+(\.\d+){0,2}([-+][0-9A-Za-z.+-]*)?$`)

// IsVersionTag reports whether tag looks like a version (v1.2.3, 1.2): such
// tags are immutable once they point at an image.
func IsVersionTag(tag string) bool { return versionTagRE.MatchString(tag) }

// tagRE is the OCI distribution spec's tag grammar.
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// ValidTag reports whether tag is a valid image tag.
func ValidTag(tag string) bool { return tagRE.MatchString(tag) }

// MaxPromotionTargets bounds a list of promotion target patterns.
const MaxPromotionTargets = 50

// PromotionTargetAllowed reports whether a build of the repository
// owner/name, whose own image is image (registry/path, no tag), may be
// promoted to target (registry/path, no tag). Its own image always may;
// any other target must match one of patterns: path.Match patterns over the
// whole target (host included, so "*" never crosses a "/"), in which
// "{owner}" and "{name}" stand for the repository's owner and name in lower
// case, e.g. "registry.example.com/releases/{owner}/{name}" or
// "ghcr.io/{owner}/*". Patterns that do not parse match nothing.
func PromotionTargetAllowed(target, image, owner, name string, patterns []string) bool {
	if target == image {
		return true
	}
	r := strings.NewReplacer("{owner}", strings.ToLower(owner), "{name}", strings.ToLower(name))
	for _, p := range patterns {
		if ok, err := path.Match(r.Replace(p), target); err == nil && ok {
			return true
		}
	}
	return false
}

// ValidatePromotionTargets checks a list of promotion target patterns (see
// PromotionTargetAllowed): at most MaxPromotionTargets, each a path.Match
// pattern of 1 to 255 bytes with a registry host before its first "/". field
// names the list in the EINVALID error ("promotion_targets",
// "SLIPWAY_PROMOTION_TARGETS").
func ValidatePromotionTargets(field string, patterns []string) error {
	if len(patterns) > MaxPromotionTargets {
		return Errorf(EINVALID, "%s lists at most %d patterns, got %d.", field, MaxPromotionTargets, len(patterns))
	}
	for i, p := range patterns {
		host, rest, ok := strings.Cut(p, "/")
		_, err := path.Match(p, "")
		if len(p) > 255 || !ok || host == "" || rest == "" || strings.ContainsAny(host, "*?[") || err != nil ||
			strings.ContainsAny(p, " \t\r\n\\") {
			return Errorf(EINVALID, "%s[%d] %q must be a registry host and a repository path, where * matches one path segment: registry.example.com/releases/{owner}/{name} or ghcr.io/{owner}/*.", field, i, p)
		}
	}
	return nil
}
