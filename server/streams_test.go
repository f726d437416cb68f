package server

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLogFollowersCap(t *testing.T) {
	t.Parallel()
	b := setup(t, &setupOpts{config: func(c *Config) { c.MaxLogFollowers = 2; c.DashboardPublic = true }})
	resp, out := b.post(t, delivery{event: "push", id: "d-1", body: readFixture(t, "push-branch.json")})
	require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
	id := buildIDOf(t, out)
	logs := fmt.Sprintf("%s/api/v1/builds/%d/logs", b.srv.URL, id)

	follow := func(t *testing.T, url string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := b.srv.Client().Do(req)
		require.NoError(t, err)
		return resp
	}
	// Two followers of a queued build: their streams stay open.
	first, second := follow(t, logs+"?follow=1"), follow(t, logs+"?follow=1")
	defer second.Body.Close()
	for _, r := range []*http.Response{first, second} {
		require.Equal(t, http.StatusOK, r.StatusCode)
		require.Equal(t, "text/event-stream", r.Header.Get("Content-Type"))
	}

	t.Run("ThirdFollowerGets503", func(t *testing.T) {
		resp := follow(t, logs+"?follow=1")
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(raw))
		require.Equal(t, "10", resp.Header.Get("Retry-After"))
		require.Contains(t, string(raw), "SLIPWAY_MAX_LOG_FOLLOWERS")
		require.Contains(t, string(raw), "without follow=1")
	})
	t.Run("NowPageStreamCountsToo", func(t *testing.T) {
		resp := follow(t, b.srv.URL+"/events/now")
		resp.Body.Close()
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	})
	t.Run("PlainLogIsServed", func(t *testing.T) {
		resp := follow(t, logs)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	})
	t.Run("ClosedFollowerFreesItsPlace", func(t *testing.T) {
		first.Body.Close()
		var last int
		require.Eventually(t, func() bool {
			resp := follow(t, logs+"?follow=1")
			resp.Body.Close()
			last = resp.StatusCode
			return last == http.StatusOK
		}, 10*time.Second, 50*time.Millisecond, "last status %d", last)
	})
}
