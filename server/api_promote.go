package server

import (
	"context"
	"net/http"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/promote"
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
	return promoter(cfg, svc).Promote(r.Context(), promote.Request{Build: b, Tags: req.Tags, Target: req.Repository,
		Force: req.Force, Actor: who.Name, Role: who.Role})
}

// previewPromotion returns the digest each tag of req points at now ("" for
// a new tag), reading the target repository without writing to it.
func previewPromotion(ctx context.Context, b *slipway.Build, req promoteRequest, cfg Config, svc Services) ([]string, error) {
	return promoter(cfg, svc).Preview(ctx, promote.Request{Build: b, Tags: req.Tags, Target: req.Repository, Force: req.Force})
}

// promoter is the promotion service over svc.
func promoter(cfg Config, svc Services) *promote.Service {
	return &promote.Service{Registry: svc.Registry, Store: svc.Promotions, Repos: svc.Repos, Targets: cfg.PromotionTargets}
}
