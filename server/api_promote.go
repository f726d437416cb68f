package server

import (
	"context"
	"net/http"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/promote"
	"github.com/slipway-ci/slipway/registry"
)

// promoteRequest is the body of POST /api/v1/builds/{id}/promote.
type promoteRequest struct {
	Tags       []string `json:"tags"`
	Repository string   `json:"repository"`
	Force      bool     `json:"force"`
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

// promoteBuild promotes b as req asks for the principal of r, through the
// promotion service (promote.Service.Promote has the rules and the audit
// trail). The API and the dashboard both promote through it.
func promoteBuild(r *http.Request, b *slipway.Build, req promoteRequest, cfg Config, svc Services) (*promote.Result, error) {
	if svc.Promotions == nil {
		return nil, unavailable("Promotion")
	}
	who := principalFrom(r.Context())
	ctx, err := withRepoRegistryAuths(r.Context(), b, cfg)
	if err != nil {
		return nil, err
	}
	return promoter(cfg, svc).Promote(ctx, promote.Request{Build: b, Tags: req.Tags, Target: req.Repository,
		Force: req.Force, Actor: who.Name, Role: who.Role})
}

// previewPromotion returns the digest each tag of req points at now ("" for
// a new tag), reading the target repository without writing to it.
func previewPromotion(ctx context.Context, b *slipway.Build, req promoteRequest, cfg Config, svc Services) ([]string, error) {
	ctx, err := withRepoRegistryAuths(ctx, b, cfg)
	if err != nil {
		return nil, err
	}
	return promoter(cfg, svc).Preview(ctx, promote.Request{Build: b, Tags: req.Tags, Target: req.Repository, Force: req.Force})
}

// withRepoRegistryAuths returns ctx carrying the registry credentials of b's
// repository (see registry.WithRepoAuths), so a promotion reads and writes
// with them first and SLIPWAY_DOCKER_CONFIG for other hosts, as the build
// did. ctx itself when the server has no store for them or the repository
// none; a store failure is returned as it is.
func withRepoRegistryAuths(ctx context.Context, b *slipway.Build, cfg Config) (context.Context, error) {
	if cfg.RegistryAuths == nil {
		return ctx, nil
	}
	auths, err := cfg.RegistryAuths.OpenRegistryAuths(ctx, b.RepoID)
	if err != nil {
		return nil, err
	}
	return registry.WithRepoAuths(ctx, auths), nil
}

// promoter is the promotion service over svc.
func promoter(cfg Config, svc Services) *promote.Service {
	return &promote.Service{Registry: svc.Registry, Store: svc.Promotions, Repos: svc.Repos, Targets: cfg.PromotionTargets}
}
