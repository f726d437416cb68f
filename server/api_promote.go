package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/rs/zerolog/hlog"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/metrics"
	"github.com/slipway-ci/slipway/registry"
)

// maxPromoteTags bounds the tags of one promotion request.
const maxPromoteTags = 20

// promoteRequest is the body of POST /api/v1/builds/{id}/promote.
type promoteRequest struct {
	Tags       []string `json:"tags"`
	Repository string   `json:"repository"`
	Force      bool     `json:"force"`
}

func (p *promoteRequest) validate() error {
	if len(p.Tags) == 0 {
		return slipway.Errorf(slipway.EINVALID, `tags is required: {"tags": ["v1.2.3", "stable"]}.`)
	}
	if len(p.Tags) > maxPromoteTags {
		return slipway.Errorf(slipway.EINVALID, "At most %d tags per promotion, got %d.", maxPromoteTags, len(p.Tags))
	}
	seen := map[string]bool{}
	for _, t := range p.Tags {
		if !slipway.ValidTag(t) {
			return slipway.Errorf(slipway.EINVALID, "%q is not a valid tag: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'.", t)
		}
		if seen[t] {
			return slipway.Errorf(slipway.EINVALID, "Tag %q is listed twice.", t)
		}
		seen[t] = true
	}
	if p.Repository != "" {
		host, _, _ := strings.Cut(p.Repository, "/")
		_, err := name.NewRepository(p.Repository, name.StrictValidation)
		if err != nil || !strings.Contains(p.Repository, "/") || !(strings.ContainsAny(host, ".:") || host == "localhost") {
			return slipway.Errorf(slipway.EINVALID,
				"repository %q is not a repository with its registry, such as registry.example.com/team/app (no tag, no digest).", p.Repository)
		}
	}
	return nil
}

// promoteTag is the outcome for one tag in the answer of a promotion.
type promoteTag struct {
	Tag            string                   `json:"tag"`
	PreviousDigest string                   `json:"previous_digest"`
	Outcome        slipway.PromotionOutcome `json:"outcome"`
}

// promoteResponse is the answer of a promotion.
type promoteResponse struct {
	BuildID    int64        `json:"build_id"`
	Digest     string       `json:"digest"`
	Source     string       `json:"source"`
	Repository string       `json:"repository"`
	Tags       []promoteTag `json:"tags"`
}

// handlePromote answers POST /api/v1/builds/{id}/promote (see promoteBuild).
func handlePromote(builds slipway.BuildService, cfg Config, svc Services) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := requestBuild(r, builds)
		if err != nil {
			writeError(w, r, err)
			return
		}
		var req promoteRequest
		if err := decodeJSON(w, r, &req); err != nil {
			writeError(w, r, err)
			return
		}
		out, err := promoteBuild(r, b, req, cfg, svc)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, out)
	}
}

// promoteBuild points each tag of req at b's index digest (see
// registry.Client.Promote) for the principal of r, after the rules: only a
// succeeded build; a target other than the build's own image only where the
// repository's promotion_targets or SLIPWAY_PROMOTION_TARGETS allow it; a
// version tag that points elsewhere moves only with force and the admin role.
// Every attempt, refused or not, leaves one audit row per tag. Refusals are
// EFORBIDDEN or ECONFLICT and write nothing to the registry; a refused target
// is not contacted at all. The API and the dashboard both promote through it.
func promoteBuild(r *http.Request, b *slipway.Build, req promoteRequest, cfg Config, svc Services) (*promoteResponse, error) {
	promotions, reg := svc.Promotions, svc.Registry
	if promotions == nil {
		return nil, unavailable("Promotion")
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	who := principalFrom(r.Context())
	target := req.Repository
	if target == "" {
		target = b.Image
	}
	rows := make([]*slipway.Promotion, len(req.Tags))
	for i, t := range req.Tags {
		rows[i] = &slipway.Promotion{BuildID: b.ID, Actor: who.Name, Digest: b.IndexDigest,
			Source: b.Image + "@" + b.IndexDigest, Target: target + ":" + t, TargetRepo: target,
			Tag: t, Forced: req.Force}
	}
	if b.IndexDigest == "" {
		for _, row := range rows {
			row.Source = b.Image
		}
	}
	// audit stores the rows; the audit trail must hold refusals too, so it
	// runs on a context the client cannot cancel.
	audit := func() error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), requestTimeout)
		defer cancel()
		return promotions.CreatePromotions(ctx, rows)
	}
	refuse := func(err *slipway.Error, reasons []string) error {
		for i, row := range rows {
			row.Outcome = slipway.PromotionRefused
			row.Reason = err.Message
			if reasons != nil && reasons[i] != "" {
				row.Reason = reasons[i]
			}
		}
		if aerr := audit(); aerr != nil {
			return aerr
		}
		hlog.FromRequest(r).Info().Int64("build_id", b.ID).Str("target", target).Strs("tags", req.Tags).
			Str("reason", err.Message).Msg("Promotion refused")
		return err
	}

	if !who.Role.Allows(slipway.RoleReleaseManager) {
		return nil, refuse(slipway.Errorf(slipway.EFORBIDDEN, "Promoting needs the %s role; token %q has the %s role.",
			slipway.RoleReleaseManager, who.Name, who.Role), nil)
	}
	if b.PullRequest != nil {
		return nil, refuse(slipway.Errorf(slipway.ECONFLICT,
			"Build %d is a build of pull request %d, which is not merged code; promote a build of the branch it merges into instead.",
			b.ID, b.PullRequest.Number), nil)
	}
	if err := checkPromotionTarget(r.Context(), b, target, cfg, svc.Repos); err != nil {
		var serr *slipway.Error
		if errors.As(err, &serr) && serr.Code == slipway.EFORBIDDEN {
			return nil, refuse(serr, nil)
		}
		return nil, err
	}
	if b.State != slipway.BuildSucceeded {
		why := fmt.Sprintf("Build %d is %s", b.ID, b.State)
		if b.Error != "" {
			why += ": " + b.Error
		}
		return nil, refuse(slipway.Errorf(slipway.ECONFLICT, "%s. Only a succeeded build (every test passed on every platform) can be promoted.", why), nil)
	}

	if reg == nil {
		return nil, unavailable("Promotion")
	}
	// Check-then-write must not interleave with another promotion to the
	// same repository, or two could both see a version tag free. This
	// serializes them within one server process only.
	unlock := lockRepo(target)
	defer unlock()
	var refusal *slipway.Error
	var reasons []string
	check := func(previous []string) error {
		reasons = make([]string, len(previous))
		var moved []string
		for i, prev := range previous {
			rows[i].PreviousDigest = prev
			if prev == "" || prev == b.IndexDigest || !slipway.IsVersionTag(req.Tags[i]) {
				continue
			}
			if req.Force && who.Role.Allows(slipway.RoleAdmin) {
				continue
			}
			moved = append(moved, fmt.Sprintf("%s (now %s)", req.Tags[i], prev))
			reasons[i] = fmt.Sprintf("version tag %s points at %s", req.Tags[i], prev)
		}
		if len(moved) == 0 {
			return nil
		}
		need := `"force": true and the admin role`
		if req.Force {
			need = fmt.Sprintf(`the admin role with "force": true (token %q has the %s role)`, who.Name, who.Role)
		}
		refusal = slipway.Errorf(slipway.ECONFLICT,
			"Version tags are immutable: %s already point at another image. Moving them needs %s. Nothing was changed.",
			strings.Join(moved, ", "), need)
		for i := range reasons {
			if reasons[i] == "" {
				reasons[i] = "not written: another tag of the same request was refused"
			}
		}
		return refusal
	}
	_, err := reg.Promote(r.Context(), registry.PromoteSpec{
		Source: b.Image, Digest: b.IndexDigest, Target: target, Tags: req.Tags,
	}, check)
	if refusal != nil {
		return nil, refuse(refusal, reasons)
	}
	if err != nil {
		for _, row := range rows {
			row.Outcome = slipway.PromotionFailed
			row.Reason = slipway.ErrorMessage(err)
			if slipway.ErrorCode(err) == slipway.EINTERNAL {
				row.Reason = oneLineError(err)
			}
		}
		if aerr := audit(); aerr != nil {
			hlog.FromRequest(r).Error().Err(aerr).Int64("build_id", b.ID).Msg("Recording a failed promotion")
		}
		metrics.PromotionDone("failed")
		return nil, err
	}
	out := &promoteResponse{BuildID: b.ID, Digest: b.IndexDigest, Source: b.Image + "@" + b.IndexDigest, Repository: target}
	for _, row := range rows {
		row.Outcome = slipway.PromotionPromoted
		if row.PreviousDigest == b.IndexDigest {
			row.Outcome = slipway.PromotionUnchanged
		}
		out.Tags = append(out.Tags, promoteTag{Tag: row.Tag, PreviousDigest: row.PreviousDigest, Outcome: row.Outcome})
	}
	if err := audit(); err != nil {
		return nil, err
	}
	hlog.FromRequest(r).Info().Int64("build_id", b.ID).Str("digest", b.IndexDigest).Str("target", target).
		Strs("tags", req.Tags).Msg("Build promoted")
	metrics.PromotionDone("succeeded")
	return out, nil
}

// errPreviewDone stops a preview's Promote before it writes anything.
var errPreviewDone = errors.New("preview only")

// previewPromotion returns the digest each tag of req points at now ("" for
// a new tag), reading the target repository without writing to it.
func previewPromotion(ctx context.Context, b *slipway.Build, req promoteRequest, cfg Config, svc Services) ([]string, error) {
	reg := svc.Registry
	if reg == nil {
		return nil, unavailable("Promotion")
	}
	target := req.Repository
	if target == "" {
		target = b.Image
	}
	if err := checkPromotionTarget(ctx, b, target, cfg, svc.Repos); err != nil {
		return nil, err
	}
	var prev []string
	_, err := reg.Promote(ctx, registry.PromoteSpec{Source: b.Image, Digest: b.IndexDigest, Target: target, Tags: req.Tags},
		func(previous []string) error {
			prev = previous
			return errPreviewDone
		})
	if err != nil && !errors.Is(err, errPreviewDone) {
		return nil, err
	}
	return prev, nil
}

// checkPromotionTarget returns EFORBIDDEN unless b may be promoted to target
// (see slipway.PromotionTargetAllowed): its own image always, another
// repository only when the repository's promotion_targets (or, while that is
// empty, SLIPWAY_PROMOTION_TARGETS) match it. It reads only the database.
func checkPromotionTarget(ctx context.Context, b *slipway.Build, target string, cfg Config, repos slipway.RepoService) error {
	if target == b.Image {
		return nil
	}
	owner, name := slipway.SplitRepo(b.Repo)
	patterns, setting := cfg.PromotionTargets, "SLIPWAY_PROMOTION_TARGETS"
	if repos != nil {
		repo, err := repos.FindRepo(ctx, slipway.RepoKey{Forge: b.Forge, Owner: owner, Name: name})
		if err != nil && slipway.ErrorCode(err) != slipway.ENOTFOUND {
			return err
		}
		if repo != nil && len(repo.PromotionTargets) > 0 {
			patterns, setting = repo.PromotionTargets, "the repository's promotion_targets"
		}
	}
	if slipway.PromotionTargetAllowed(target, b.Image, owner, name, patterns) {
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

// oneLineError is err's text on one line, for the audit trail of a registry
// failure (registry errors carry no secrets: credentials stay in the keychain).
func oneLineError(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// repoLocks holds one mutex per target repository of a promotion.
var repoLocks sync.Map // string → *sync.Mutex

func lockRepo(repo string) (unlock func()) {
	v, _ := repoLocks.LoadOrStore(repo, &sync.Mutex{})
	mu := v.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}
