package server

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/hlog"

	"github.com/slipway-ci/slipway/metrics"
)

// NewProbes returns the handler a worker process serves on its own address:
// /healthz, /readyz and /metrics only (a worker has no API).
func NewProbes(logger zerolog.Logger, checks []Check) http.Handler {
	r := chi.NewRouter()
	r.Use(hlog.NewHandler(logger), recoverer)
	r.Get("/healthz", handleHealthz())
	r.Get("/readyz", handleReadyz(checks))
	r.Get("/metrics", metrics.Handler().ServeHTTP)
	return r
}
