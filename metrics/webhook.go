package metrics

import (
	"context"
	"net/http"
)

type outcomeKey struct{}

// CountWebhooks is middleware that counts every webhook delivery in
// slipway_webhooks_total under the forge that forge(r) names after the handler
// ran (a request for which it returns "" is not counted), with the
// outcome the handler set through SetWebhookOutcome or, failing that, the one
// its status implies (2xx accepted, 4xx rejected, anything else error).
func CountWebhooks(forge func(r *http.Request) string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var outcome string
			rec := &statusRecorder{ResponseWriter: w}
			next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), outcomeKey{}, &outcome)))
			if outcome == "" {
				outcome = outcomeOf(rec.status)
			}
			if f := forge(r); f != "" {
				WebhookReceived(f, outcome)
			}
		})
	}
}

// SetWebhookOutcome tells CountWebhooks the outcome of the delivery ctx belongs
// to, where the status alone cannot (an ignored push is answered 202 too). It
// does nothing outside CountWebhooks.
func SetWebhookOutcome(ctx context.Context, outcome string) {
	if p, ok := ctx.Value(outcomeKey{}).(*string); ok {
		*p = outcome
	}
}

func outcomeOf(status int) string {
	switch {
	case status == 0 || (status >= 200 && status < 300):
		return WebhookAccepted
	case status >= 400 && status < 500:
		return WebhookRejected
	default:
		return WebhookError
	}
}

// statusRecorder remembers the status a handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the original writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
