package server

import (
	"net/http"

	"github.com/rs/zerolog/hlog"

	"github.com/slipway-ci/slipway"
)

// handleIntegrationReport answers POST /api/v1/builds/{id}/tests, the callback
// of an external integration test run. It authenticates with the build's
// one-time callback token (Authorization: Bearer <token>), not an API token,
// and takes a slipway.IntegrationResult. The waiting worker picks it up.
func handleIntegrationReport(integrations slipway.IntegrationService) http.HandlerFunc {
	type response struct {
		BuildID int64 `json:"build_id"`
		Passed  bool  `json:"passed"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if integrations == nil {
			writeError(w, r, unavailable("External integration tests"))
			return
		}
		id, err := buildID(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		token, ok := bearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="slipway"`)
			writeError(w, r, slipway.Errorf(slipway.EUNAUTHORIZED,
				"Send the callback token of the integration request: Authorization: Bearer <callback.token>."))
			return
		}
		var res slipway.IntegrationResult
		if err := decodeJSON(w, r, &res); err != nil {
			writeError(w, r, err)
			return
		}
		if len(res.Message) > 2048 {
			writeError(w, r, slipway.Errorf(slipway.EINVALID, "message is longer than 2048 bytes."))
			return
		}
		if len(res.Tests) > 1000 {
			writeError(w, r, slipway.Errorf(slipway.EINVALID, "At most 1000 tests per report, got %d.", len(res.Tests)))
			return
		}
		for i, t := range res.Tests {
			if t.Name == "" {
				writeError(w, r, slipway.Errorf(slipway.EINVALID, "tests[%d]: name is required.", i))
				return
			}
		}
		if err := integrations.ReportIntegration(r.Context(), id, token, res); err != nil {
			if slipway.ErrorCode(err) == slipway.EUNAUTHORIZED {
				w.Header().Set("WWW-Authenticate", `Bearer realm="slipway"`)
			}
			writeError(w, r, err)
			return
		}
		hlog.FromRequest(r).Info().Int64("build_id", id).Bool("passed", res.Passed).Msg("Integration result received")
		writeJSON(w, r, http.StatusOK, response{BuildID: id, Passed: res.Passed})
	}
}
