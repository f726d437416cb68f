package worker

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
)

func TestRunIntegration(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	builds := postgres.NewBuildService(db)
	integrations := postgres.NewIntegrationService(db)
	res, err := builds.EnqueueTrigger(context.Background(), slipway.Trigger{Forge: "github", DeliveryID: "d-1", Event: "push",
		Owner: "acme", Name: "app", CloneURL: "https://github.com/acme/app.git", Ref: "refs/heads/main",
		Commit: strings.Repeat("ab", 20)}, "127.0.0.1:5000/acme/app")
	require.NoError(t, err)
	build := res.Build
	platforms := []slipway.PlatformDigest{{Platform: "linux/amd64", Digest: "sha256:" + strings.Repeat("1", 64)}}

	newWorker := func(secret string) *Worker {
		return &Worker{cfg: Config{PublicURL: "http://slipway.test", IntegrationSecret: secret, Outbound: loopbackPolicy(t),
			Integrations: integrations, PollInterval: 50 * time.Millisecond}}
	}
	sink := newLogSink(build.ID, builds, zerolog.Nop())
	run := func(w *Worker, hook http.HandlerFunc, timeout time.Duration) ([]slipway.TestResult, error) {
		srv := httptest.NewServer(hook)
		defer srv.Close()
		return w.runIntegration(context.Background(), build, &IntegrationSpec{Webhook: srv.URL, Timeout: timeout}, "sha256:idx", platforms, sink)
	}

	t.Run("SignedCallWithResult", func(t *testing.T) {
		results, err := run(newWorker("k3y"), func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if r.Header.Get(SignatureHeader) != SignIntegration("k3y", body) {
				http.Error(w, "bad signature", http.StatusUnauthorized)
				return
			}
			var req IntegrationRequest
			require.NoError(t, json.Unmarshal(body, &req))
			require.Equal(t, "http://slipway.test/api/v1/builds/1/tests", req.Callback.URL)
			require.Equal(t, platforms, req.Platforms)
			require.Equal(t, "sha256:idx", req.IndexDigest)
			// The callback, as the server would record it.
			require.NoError(t, integrations.ReportIntegration(r.Context(), build.ID, req.Callback.Token, slipway.IntegrationResult{
				Passed: true, Message: "one failed",
				Tests: []slipway.TestResult{{Name: "login", Platform: "linux/amd64", Passed: false, ExitCode: 1, Error: "timeout"}},
			}))
			w.WriteHeader(http.StatusAccepted)
		}, time.Minute)
		require.ErrorContains(t, err, "one failed", "a failed test fails the run even when passed is true")
		require.Len(t, results, 1)
		require.Equal(t, "integration:login", results[0].Name)
		require.False(t, results[0].Passed)
	})

	t.Run("HostNotAllowed", func(t *testing.T) {
		// Loopback by name, and a host nobody listed, are never called.
		called := false
		srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
		defer srv.Close()
		w := newWorker("k3y")
		for _, hook := range []string{strings.Replace(srv.URL, "127.0.0.1", "localhost", 1), "http://169.254.169.254/hook", "https://qa.internal.example/hook"} {
			w.cfg.Outbound = loopbackPolicy(t)
			if strings.Contains(hook, "localhost") {
				w.cfg.Outbound, _ = slipway.ParseOutboundPolicy("localhost")
				w.outboundOnce = sync.Once{}
			}
			_, err := w.runIntegration(context.Background(), build, &IntegrationSpec{Webhook: hook, Timeout: time.Second}, "sha256:idx", platforms, sink)
			require.ErrorContains(t, err, "integration webhook not called", hook)
			require.ErrorContains(t, err, "SLIPWAY_OUTBOUND_ALLOWED_HOSTS", hook)
		}
		require.False(t, called)
	})

	t.Run("WebhookError", func(t *testing.T) {
		results, err := run(newWorker("k3y"), func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "down", http.StatusBadGateway)
		}, time.Minute)
		require.ErrorContains(t, err, "answered 502")
		require.Len(t, results, 1)
		require.Equal(t, "integration", results[0].Name)
		require.False(t, results[0].Passed)
	})

	t.Run("NoSecret", func(t *testing.T) {
		called := false
		_, err := run(newWorker(""), func(w http.ResponseWriter, r *http.Request) { called = true }, time.Minute)
		require.ErrorContains(t, err, "SLIPWAY_INTEGRATION_SECRET")
		require.False(t, called, "an unsigned call is never made")
	})

	t.Run("Timeout", func(t *testing.T) {
		_, err := run(newWorker("k3y"), func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }, 300*time.Millisecond)
		require.ErrorContains(t, err, "no result")
		require.ErrorContains(t, err, "300ms")
	})
}

// loopbackPolicy allows the tests' servers on 127.0.0.1.
func loopbackPolicy(t *testing.T) *slipway.OutboundPolicy {
	t.Helper()
	p, err := slipway.ParseOutboundPolicy("127.0.0.1")
	require.NoError(t, err)
	return p
}
