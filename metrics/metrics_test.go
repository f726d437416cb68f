package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/metrics"
)

// scrape returns what GET /metrics answers.
func scrape(t *testing.T) string {
	t.Helper()
	rec := httptest.NewRecorder()
	metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.String()
}

func TestCountWebhooks(t *testing.T) {
	forge := func(r *http.Request) string {
		f, _ := strings.CutPrefix(r.URL.Path, "/webhooks/")
		if f == r.URL.Path {
			return ""
		}
		return f
	}
	h := metrics.CountWebhooks(forge)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("answer") {
		case "ignored":
			metrics.SetWebhookOutcome(r.Context(), metrics.WebhookIgnored)
			w.WriteHeader(http.StatusAccepted)
		case "bad":
			w.WriteHeader(http.StatusUnauthorized)
		case "down":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			_, _ = io.WriteString(w, "{}") // an implicit 200
		}
	}))
	send := func(path string) {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, path, nil))
	}
	before := scrape(t)
	send("/webhooks/testforge")
	send("/webhooks/testforge?answer=ignored")
	send("/webhooks/testforge?answer=ignored")
	send("/webhooks/testforge?answer=bad")
	send("/webhooks/testforge?answer=down")
	send("/healthz") // not a webhook: not counted
	after := scrape(t)

	require.NotContains(t, before, `forge="testforge"`)
	for _, line := range []string{
		`slipway_webhooks_total{forge="testforge",outcome="accepted"} 1`,
		`slipway_webhooks_total{forge="testforge",outcome="ignored"} 2`,
		`slipway_webhooks_total{forge="testforge",outcome="rejected"} 1`,
		`slipway_webhooks_total{forge="testforge",outcome="error"} 1`,
	} {
		require.Contains(t, after, line)
	}
	require.NotContains(t, after, `forge=""`)
}

func TestBuildMetrics(t *testing.T) {
	platforms := []string{"linux/testarch", "linux/testarch2"}
	metrics.BuildStarted(platforms, 3*time.Second)
	metrics.BuildFinished(platforms, "succeeded", 42*time.Second)
	// A build that failed before its platforms were known.
	metrics.BuildFinished(nil, "failed", time.Second)

	out := scrape(t)
	for _, line := range []string{
		`slipway_build_pickup_latency_seconds_sum{platform="linux/testarch"} 3`,
		`slipway_build_pickup_latency_seconds_count{platform="linux/testarch2"} 1`,
		`slipway_build_duration_seconds_sum{platform="linux/testarch",state="succeeded"} 42`,
		`slipway_build_duration_seconds_bucket{platform="linux/testarch",state="succeeded",le="60"} 1`,
		`slipway_build_duration_seconds_bucket{platform="linux/testarch",state="succeeded",le="30"} 0`,
		`slipway_build_duration_seconds_count{platform="unknown",state="failed"} 1`,
		`slipway_builds_finished_total{state="succeeded"}`,
		`slipway_builds_finished_total{state="failed"}`,
	} {
		require.Contains(t, out, line)
	}
}

func TestPromotionDone(t *testing.T) {
	metrics.PromotionDone("succeeded")
	metrics.PromotionDone("succeeded")
	require.Contains(t, scrape(t), `slipway_promotions_total{outcome="succeeded"} 2`)
}

func TestQueueCollector(t *testing.T) {
	var fail bool
	require.NoError(t, metrics.RegisterQueue(func(ctx context.Context) (metrics.QueueStats, error) {
		if fail {
			return metrics.QueueStats{}, errors.New("database down")
		}
		return metrics.QueueStats{Depth: 7, Running: 2, Oldest: 95 * time.Second}, nil
	}))
	out := scrape(t)
	require.Contains(t, out, "slipway_queue_depth 7\n")
	require.Contains(t, out, "slipway_queue_running 2\n")
	require.Contains(t, out, "slipway_queue_oldest_age_seconds 95\n")
	require.Contains(t, out, "slipway_queue_stats_up 1\n")

	fail = true
	out = scrape(t)
	require.Contains(t, out, "slipway_queue_stats_up 0\n")
	require.NotContains(t, out, "slipway_queue_depth ", "no made-up numbers while the database is down")

	// Registering again replaces the collector instead of failing.
	require.NoError(t, metrics.RegisterQueue(func(ctx context.Context) (metrics.QueueStats, error) {
		return metrics.QueueStats{Depth: 1}, nil
	}))
	require.Contains(t, scrape(t), "slipway_queue_depth 1\n")
}

func TestBuilderCollector(t *testing.T) {
	require.NoError(t, metrics.RegisterBuilders([]metrics.Builder{
		{Name: "tcp://bk-amd64:1234", Platforms: "linux/amd64", Ping: func(context.Context) error { return nil }},
		{Name: "tcp://bk-arm64:1234", Platforms: "linux/arm64", Ping: func(context.Context) error { return errors.New("connection refused") }},
	}))
	out := scrape(t)
	require.Contains(t, out, `slipway_builder_up{builder="tcp://bk-amd64:1234",platforms="linux/amd64"} 1`)
	require.Contains(t, out, `slipway_builder_up{builder="tcp://bk-arm64:1234",platforms="linux/arm64"} 0`)
}

func TestLint(t *testing.T) {
	problems, err := testutil.GatherAndLint(metrics.Registry)
	require.NoError(t, err)
	var own []string
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "slipway_") {
			own = append(own, p.Metric+": "+p.Text)
		}
	}
	require.Empty(t, own)
}
