package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog/hlog"
	"github.com/slipway-ci/slipway"
)

// checkTimeout bounds each readiness check.
const checkTimeout = 2 * time.Second

// handleHealthz answers GET /healthz: the process is alive and serving HTTP.
// It checks nothing else, so a database outage never gets pods restarted.
func handleHealthz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	}
}

// handleReadyz answers GET /readyz: it runs every check at once, each with a 2
// second deadline, and answers 200 when all passed and 503 otherwise, with
// {"checks":{"<name>":"ok"|"<safe message>"}}. A failing check's error is
// logged; only a *slipway.Error's message is shown.
func handleReadyz(checks []Check) http.HandlerFunc {
	type response struct {
		Checks map[string]string `json:"checks"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		errs := make([]error, len(checks))
		var wg sync.WaitGroup
		for i, c := range checks {
			if c.Func == nil {
				continue
			}
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(r.Context(), checkTimeout)
				defer cancel()
				errs[i] = c.Func(ctx)
			})
		}
		wg.Wait()

		res := response{Checks: make(map[string]string, len(checks))}
		status := http.StatusOK
		for i, c := range checks {
			err := errs[i]
			if err == nil {
				res.Checks[c.Name] = "ok"
				continue
			}
			status = http.StatusServiceUnavailable
			res.Checks[c.Name] = checkMessage(err)
			hlog.FromRequest(r).Warn().Err(err).Str("check", c.Name).Msg("Readiness check failed")
		}
		writeJSON(w, r, status, res)
	}
}

// checkMessage is what /readyz shows for a failed check: the message of a
// domain error, or a generic text that leaks no address or credential.
func checkMessage(err error) string {
	var e *slipway.Error
	switch {
	case errors.As(err, &e):
		return e.Message
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out after " + checkTimeout.String()
	default:
		return "failed (see the server log)"
	}
}
