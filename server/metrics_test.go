package server

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// webhookCount reads slipway_webhooks_total{forge="github",outcome=...} from /metrics.
func webhookCount(t *testing.T, srv *httptest.Server, outcome string) float64 {
	t.Helper()
	resp, out := getPath(t, srv, "/metrics")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	prefix := `slipway_webhooks_total{forge="github",outcome="` + outcome + `"} `
	for _, line := range strings.Split(out["_raw"].(string), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	return 0
}

// TestMetrics is not parallel: it reads process-wide counters, and the
// parallel tests (which post webhooks too) wait until it is done.
func TestMetrics(t *testing.T) {
	b := setup(t, nil)
	before := map[string]float64{}
	for _, o := range []string{"accepted", "ignored", "rejected"} {
		before[o] = webhookCount(t, b.srv, o)
	}
	body := readFixture(t, "push-branch.json")
	resp, out := b.post(t, delivery{event: "push", id: "m-1", body: body})
	require.Equal(t, http.StatusAccepted, resp.StatusCode, out)
	resp, out = b.post(t, delivery{event: "issues", id: "m-2", body: []byte(`{}`)})
	require.Equal(t, http.StatusAccepted, resp.StatusCode, out)
	require.Contains(t, out, "ignored")
	resp, _ = b.post(t, delivery{event: "push", id: "m-3", body: body, sign: func([]byte) string { return "sha256=00" }})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	require.Equal(t, before["accepted"]+1, webhookCount(t, b.srv, "accepted"))
	require.Equal(t, before["ignored"]+1, webhookCount(t, b.srv, "ignored"))
	require.Equal(t, before["rejected"]+1, webhookCount(t, b.srv, "rejected"))

	// Requests to other routes count as no forge's webhook.
	resp, _ = getPath(t, b.srv, "/webhooks/nosuchforge")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, out = getPath(t, b.srv, "/metrics")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotContains(t, out["_raw"], "nosuchforge")
	require.Contains(t, out["_raw"], "go_goroutines", "the runtime collectors are registered")

	t.Run("Worker", func(t *testing.T) {
		srv := httptest.NewServer(NewProbes(zerolog.Nop(), nil))
		t.Cleanup(srv.Close)
		resp, out := getPath(t, srv, "/metrics")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, out["_raw"], "slipway_webhooks_total")
	})
}
