// Package promote is slipway's promotion service: it points release tags at
// a tested build's index digest, without a rebuild and without changing the
// digest, after the rules of promotion, and writes the audit trail. The REST
// API, the dashboard and the release of a version tag push all promote
// through Service, so they follow the same rules and leave the same rows.
//
// A promotion is: check the rules that need no registry (role, build state,
// pull request, target allowed); take the target repository's lock (a
// PostgreSQL advisory lock, so promotions from every server replica and
// worker are serialized); resolve what each tag points at now; check the
// immutability of version tags; retag; append one audit row per tag, whatever
// the outcome.
package promote

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/rs/zerolog"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/metrics"
	"github.com/slipway-ci/slipway/registry"
)

// MaxTags bounds the tags of one promotion.
const MaxTags = 20

// Registry is what a promotion needs of the image registry;
// *registry.Client implements it.
type Registry interface {
	// Resolve reads the digest each tag points at now and the source,
	// writing nothing.
	Resolve(ctx context.Context, spec registry.PromoteSpec) (*registry.Resolved, error)
	// Retag writes the tags Resolve found elsewhere.
	Retag(ctx context.Context, r *registry.Resolved) error
}

// Service promotes builds. Registry is required for Promote and Preview;
// Store holds the audit trail and the lock per target (nil: no audit rows and
// no lock, for tests of a single process only); Repos gives a repository's
// promotion_targets (nil: only Targets apply); Targets is
// SLIPWAY_PROMOTION_TARGETS.
type Service struct {
	Registry Registry
	Store    slipway.PromotionService
	Repos    slipway.RepoService
	Targets  []string
}

// Request is one promotion of Build to Tags.
type Request struct {
	Build *slipway.Build
	// Tags are bare tags ("v1.2.3", "stable"), 1 to MaxTags, each once.
	Tags []string
	// Target is a repository with its registry (registry.example.com/team/app,
	// no tag, no digest); "" is the build's own image.
	Target string
	// Force moves version tags that point elsewhere; it needs the admin role.
	Force bool
	// Actor names who promotes in the audit trail (a token's name, "tag push
	// v1.2.3 by alice"), and Role is that token's role.
	Actor string
	Role  slipway.Role
	// Release marks the release of a version tag push (Tags[0] is the
	// version, the rest follow it, such as 1.2, 1 and latest): no role is
	// needed, only Tags[0] is immutable, and Force is ignored.
	Release bool
}

// Tag is the outcome of one tag of a promotion.
type Tag struct {
	Tag            string                   `json:"tag"`
	PreviousDigest string                   `json:"previous_digest"`
	Outcome        slipway.PromotionOutcome `json:"outcome"`
}

// Result is what a promotion did.
type Result struct {
	BuildID    int64  `json:"build_id"`
	Digest     string `json:"digest"`
	Source     string `json:"source"` // image@digest
	Repository string `json:"repository"`
	Tags       []Tag  `json:"tags"`
	// AuditIDs are the ids of the audit rows written, one per tag in order.
	AuditIDs []int64 `json:"-"`
}

// Validate checks the shape of req (tags and target), before any rule:
// EINVALID with a message a person can act on.
func (req *Request) Validate() error {
	if len(req.Tags) == 0 {
		return slipway.Errorf(slipway.EINVALID, `tags is required: {"tags": ["v1.2.3", "stable"]}.`)
	}
	if len(req.Tags) > MaxTags {
		return slipway.Errorf(slipway.EINVALID, "At most %d tags per promotion, got %d.", MaxTags, len(req.Tags))
	}
	seen := map[string]bool{}
	for _, t := range req.Tags {
		if !slipway.ValidTag(t) {
			return slipway.Errorf(slipway.EINVALID, "%q is not a valid tag: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'.", t)
		}
		if seen[t] {
			return slipway.Errorf(slipway.EINVALID, "Tag %q is listed twice.", t)
		}
		seen[t] = true
	}
	if req.Target != "" {
		host, _, _ := strings.Cut(req.Target, "/")
		_, err := name.NewRepository(req.Target, name.StrictValidation)
		if err != nil || !strings.Contains(req.Target, "/") || !(strings.ContainsAny(host, ".:") || host == "localhost") {
			return slipway.Errorf(slipway.EINVALID,
				"repository %q is not a repository with its registry, such as registry.example.com/team/app (no tag, no digest).", req.Target)
		}
	}
	return nil
}

func (req *Request) target() string {
	if req.Target == "" {
		return req.Build.Image
	}
	return req.Target
}

// Promote points each tag of req at req.Build's index digest, after the
// rules: only a succeeded build that is not of a pull request; the release
// manager role (unless req.Release); a target other than the build's own
// image only where the repository's promotion_targets (or, while that is
// empty, Targets) allow it; a version tag that points at another image moves
// only with Force and the admin role (a release: its version never moves).
// Every attempt, refused or not, leaves one audit row per tag. A refusal is
// EFORBIDDEN or ECONFLICT and writes nothing to the registry; a refused
// target is not contacted at all. A registry failure is returned as the
// registry package gives it (the host named), after its audit rows.
func (s *Service) Promote(ctx context.Context, req Request) (*Result, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	b, target := req.Build, req.target()
	log := zerolog.Ctx(ctx)
	rows := auditRows(req)
	refuse := func(err *slipway.Error, reasons []string) error {
		for i, row := range rows {
			row.Outcome, row.Reason = slipway.PromotionRefused, err.Message
			if reasons != nil && reasons[i] != "" {
				row.Reason = reasons[i]
			}
		}
		if aerr := s.audit(ctx, rows); aerr != nil {
			return aerr
		}
		log.Info().Int64("build_id", b.ID).Str("target", target).Strs("tags", req.Tags).
			Str("reason", err.Message).Msg("Promotion refused")
		return err
	}
	if err := checkActor(req); err != nil {
		return nil, refuse(err, nil)
	}
	if err := s.checkTarget(ctx, b, target); err != nil {
		var serr *slipway.Error
		if errors.As(err, &serr) && serr.Code == slipway.EFORBIDDEN {
			return nil, refuse(serr, nil)
		}
		return nil, err
	}
	if err := checkState(b); err != nil {
		return nil, refuse(err, nil)
	}
	if s.Registry == nil {
		return nil, slipway.Errorf(slipway.EUNAVAILABLE, "Promotion is not available on this server.")
	}
	// Resolve-check-retag must not interleave with another promotion to the
	// same repository, or two could both see a version tag free.
	if s.Store != nil {
		unlock, err := s.Store.LockTarget(ctx, target)
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	res, err := s.Registry.Resolve(ctx, registry.PromoteSpec{Source: b.Image, Digest: b.IndexDigest, Target: target, Tags: req.Tags})
	if err == nil {
		for i, prev := range res.Previous {
			rows[i].PreviousDigest = prev
		}
		if refusal, reasons := checkImmutable(req, res.Previous); refusal != nil {
			return nil, refuse(refusal, reasons)
		}
		err = s.Registry.Retag(ctx, res)
	}
	if err != nil {
		for _, row := range rows {
			row.Outcome, row.Reason = slipway.PromotionFailed, slipway.ErrorMessage(err)
			if slipway.ErrorCode(err) == slipway.EINTERNAL {
				row.Reason = slipway.OneLine(err.Error())
			}
		}
		if aerr := s.audit(ctx, rows); aerr != nil {
			log.Error().Err(aerr).Int64("build_id", b.ID).Msg("Recording a failed promotion")
		}
		metrics.PromotionDone("failed")
		return nil, err
	}
	out := &Result{BuildID: b.ID, Digest: b.IndexDigest, Source: b.Image + "@" + b.IndexDigest, Repository: target}
	for _, row := range rows {
		row.Outcome = slipway.PromotionPromoted
		if row.PreviousDigest == b.IndexDigest {
			row.Outcome = slipway.PromotionUnchanged
		}
		out.Tags = append(out.Tags, Tag{Tag: row.Tag, PreviousDigest: row.PreviousDigest, Outcome: row.Outcome})
	}
	if err := s.audit(ctx, rows); err != nil {
		return nil, err
	}
	for _, row := range rows {
		out.AuditIDs = append(out.AuditIDs, row.ID)
	}
	log.Info().Int64("build_id", b.ID).Str("digest", b.IndexDigest).Str("target", target).
		Strs("tags", req.Tags).Str("actor", req.Actor).Msg("Build promoted")
	metrics.PromotionDone("succeeded")
	return out, nil
}

// Preview returns the digest each tag of req points at now ("" for a new
// tag), reading the target repository without writing to it or to the audit
// trail. A target the rules refuse is EFORBIDDEN and is not contacted.
func (s *Service) Preview(ctx context.Context, req Request) ([]string, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if s.Registry == nil {
		return nil, slipway.Errorf(slipway.EUNAVAILABLE, "Promotion is not available on this server.")
	}
	b, target := req.Build, req.target()
	if err := s.checkTarget(ctx, b, target); err != nil {
		return nil, err
	}
	res, err := s.Registry.Resolve(ctx, registry.PromoteSpec{Source: b.Image, Digest: b.IndexDigest, Target: target, Tags: req.Tags})
	if err != nil {
		return nil, err
	}
	return res.Previous, nil
}

// audit stores rows. The audit trail must hold refusals too, so it runs on a
// context the caller's cancel does not end.
func (s *Service) audit(ctx context.Context, rows []*slipway.Promotion) error {
	if s.Store == nil {
		return nil
	}
	return s.Store.CreatePromotions(context.WithoutCancel(ctx), rows)
}

// auditRows returns one audit row per tag of req, outcome not yet known.
func auditRows(req Request) []*slipway.Promotion {
	b, target := req.Build, req.target()
	source := b.Image + "@" + b.IndexDigest
	if b.IndexDigest == "" {
		source = b.Image
	}
	rows := make([]*slipway.Promotion, len(req.Tags))
	for i, t := range req.Tags {
		rows[i] = &slipway.Promotion{BuildID: b.ID, Actor: req.Actor, Digest: b.IndexDigest, Source: source,
			Target: target + ":" + t, TargetRepo: target, Tag: t, Forced: req.Force && !req.Release}
	}
	return rows
}

// checkTarget returns EFORBIDDEN unless b may be promoted to target (see
// slipway.PromotionTargetAllowed): its own image always, another repository
// only when the repository's promotion_targets (or, while that is empty,
// s.Targets) match it. It reads only the database.
func (s *Service) checkTarget(ctx context.Context, b *slipway.Build, target string) error {
	if target == b.Image {
		return nil
	}
	owner, repoName := slipway.SplitRepo(b.Repo)
	patterns, setting := s.Targets, "SLIPWAY_PROMOTION_TARGETS"
	if s.Repos != nil {
		repo, err := s.Repos.FindRepo(ctx, slipway.RepoKey{Forge: b.Forge, Owner: owner, Name: repoName})
		if err != nil && slipway.ErrorCode(err) != slipway.ENOTFOUND {
			return err
		}
		if repo != nil && len(repo.PromotionTargets) > 0 {
			patterns, setting = repo.PromotionTargets, "the repository's promotion_targets"
		}
	}
	if slipway.PromotionTargetAllowed(target, b.Image, owner, repoName, patterns) {
		return nil
	}
	allowed := "none"
	if len(patterns) > 0 {
		allowed = strings.Join(patterns, ", ")
	}
	return slipway.Errorf(slipway.EFORBIDDEN,
		"Builds of %s may be promoted to their own image %s, or to repositories that %s allows (%s); %s is not one of them. Promote to the build's own image, or ask an admin to add the target to the repository's promotion_targets.",
		b.Repo, b.Image, setting, allowed, target)
}

// checkActor is the rule on who promotes what: the release manager role (a
// release needs none), and never a build of a pull request.
func checkActor(req Request) *slipway.Error {
	b := req.Build
	if !req.Release && !req.Role.Allows(slipway.RoleReleaseManager) {
		return slipway.Errorf(slipway.EFORBIDDEN, "Promoting needs the %s role; token %q has the %s role.",
			slipway.RoleReleaseManager, req.Actor, req.Role)
	}
	if b.PullRequest != nil {
		return slipway.Errorf(slipway.ECONFLICT,
			"Build %d is a build of pull request %d, which is not merged code; promote a build of the branch it merges into instead.",
			b.ID, b.PullRequest.Number)
	}
	return nil
}

// checkState is the rule on the build: only a succeeded one is promoted.
func checkState(b *slipway.Build) *slipway.Error {
	if b.State != slipway.BuildSucceeded {
		why := fmt.Sprintf("Build %d is %s", b.ID, b.State)
		if b.Error != "" {
			why += ": " + b.Error
		}
		return slipway.Errorf(slipway.ECONFLICT, "%s. Only a succeeded build (every test passed on every platform) can be promoted.", why)
	}
	return nil
}

// checkImmutable is the rule on version tags: a tag that looks like a
// version (slipway.IsVersionTag) and points at another image already does
// not move, unless Force with the admin role; for a release only its version
// (Tags[0]) is held so, and nothing forces it. previous is the digest each
// tag points at now. The refusal is ECONFLICT, with one reason per tag.
func checkImmutable(req Request, previous []string) (*slipway.Error, []string) {
	digest := req.Build.IndexDigest
	reasons := make([]string, len(previous))
	var moved []string
	for i, prev := range previous {
		tag := req.Tags[i]
		if prev == "" || prev == digest {
			continue
		}
		if req.Release {
			if i > 0 {
				continue
			}
		} else if !slipway.IsVersionTag(tag) || (req.Force && req.Role.Allows(slipway.RoleAdmin)) {
			continue
		}
		moved = append(moved, fmt.Sprintf("%s (now %s)", tag, prev))
		reasons[i] = fmt.Sprintf("version tag %s points at %s", tag, prev)
	}
	if len(moved) == 0 {
		return nil, nil
	}
	for i := range reasons {
		if reasons[i] == "" {
			reasons[i] = "not written: another tag of the same request was refused"
		}
	}
	if req.Release {
		return slipway.Errorf(slipway.ECONFLICT,
			"Version tag %s already points at another image; a released version never moves. Nothing was changed.", moved[0]), reasons
	}
	need := `"force": true and the admin role`
	if req.Force {
		need = fmt.Sprintf(`the admin role with "force": true (token %q has the %s role)`, req.Actor, req.Role)
	}
	return slipway.Errorf(slipway.ECONFLICT,
		"Version tags are immutable: %s already point at another image. Moving them needs %s. Nothing was changed.",
		strings.Join(moved, ", "), need), reasons
}
