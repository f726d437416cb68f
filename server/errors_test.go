package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/rs/zerolog/hlog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

func TestWriteError(t *testing.T) {
	t.Parallel()

	tests := []struct {
		err     error
		status  int
		code    string
		message string
		logged  bool
	}{
		{slipway.Errorf(slipway.ENOTFOUND, "Build 7 not found."), 404, "not_found", "Build 7 not found.", false},
		{slipway.Errorf(slipway.EINVALID, "bad"), 400, "invalid", "bad", false},
		{slipway.Errorf(slipway.ECONFLICT, "dup"), 409, "conflict", "dup", false},
		{slipway.Errorf(slipway.EUNAUTHORIZED, "who"), 401, "unauthorized", "who", false},
		{slipway.Errorf(slipway.EFORBIDDEN, "no"), 403, "forbidden", "no", false},
		{slipway.Errorf(slipway.ETOOLARGE, "big"), 413, "too_large", "big", false},
		{slipway.Errorf(slipway.EUNAVAILABLE, "down"), 503, "unavailable", "down", false},
		{fmt.Errorf("finding build 7: %w", slipway.Errorf(slipway.ENOTFOUND, "Build 7 not found.")), 404, "not_found", "Build 7 not found.", false},
		{errors.New("pq: password authentication failed for user slipway"), 500, "internal", "Internal error.", true},
		{slipway.Errorf("teapot", "odd code"), 500, "teapot", "odd code", false},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, "/x", nil)
			hlog.NewHandler(zerolog.New(&logs))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				writeError(w, r, tt.err)
			})).ServeHTTP(w, r)

			require.Equal(t, tt.status, w.Code)
			require.Equal(t, "application/json; charset=utf-8", w.Header().Get("Content-Type"))
			var body errorResponse
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &body))
			require.Equal(t, errorBody{Code: tt.code, Message: tt.message}, body.Error)
			if tt.logged {
				require.Contains(t, logs.String(), `"level":"error"`)
				require.Contains(t, logs.String(), tt.err.Error())
			} else {
				require.Empty(t, logs.String())
			}
		})
	}

	t.Run("ContextEnded", func(t *testing.T) {
		t.Parallel()
		var logs bytes.Buffer
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/x", nil).WithContext(ctx)
		hlog.NewHandler(zerolog.New(&logs).Level(zerolog.InfoLevel))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, r, fmt.Errorf("finding builds: %w", context.Canceled))
		})).ServeHTTP(w, r)
		require.Equal(t, http.StatusServiceUnavailable, w.Code)
		require.Empty(t, logs.String(), "a canceled request is no error")
	})
}

func TestRecoverer(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	h := hlog.NewHandler(zerolog.New(&logs))(recoverer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	})))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	require.Equal(t, http.StatusInternalServerError, w.Code)
	require.JSONEq(t, `{"error":{"code":"internal","message":"Internal error."}}`, w.Body.String())
	require.Contains(t, logs.String(), `"panic":"boom"`)

	// http.ErrAbortHandler is how a handler cuts a response short; it must
	// reach net/http.
	abort := recoverer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
	require.PanicsWithValue(t, http.ErrAbortHandler, func() {
		abort.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	})
}

// TestOneErrorWriterPicksByAccept: writeError answers the dashboard's routes
// with the error page unless the client asks for JSON only, and the API's
// routes with JSON whatever the client accepts.
func TestOneErrorWriterPicksByAccept(t *testing.T) {
	t.Parallel()
	b := setup(t, &setupOpts{config: func(c *Config) { c.DashboardPublic = true }})
	get := func(path, accept string) (int, string, string) {
		req, err := http.NewRequest(http.MethodGet, b.srv.URL+path, nil)
		require.NoError(t, err)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		if strings.HasPrefix(path, "/api/") {
			req.Header.Set("Authorization", "Bearer "+testToken)
		}
		resp, err := b.srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), buf.String()
	}
	browser := "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	for _, tc := range []struct {
		path, accept, wantType string
	}{
		{"/builds/424242", browser, "text/html"},
		{"/builds/424242", "", "text/html"},
		{"/builds/424242", "*/*", "text/html"},
		{"/builds/424242", "application/json", "application/json"},
		{"/api/v1/builds/424242", browser, "application/json"},
		{"/api/v1/builds/424242", "", "application/json"},
	} {
		status, ctype, body := get(tc.path, tc.accept)
		require.Equal(t, http.StatusNotFound, status, "%s Accept %q: %s", tc.path, tc.accept, body)
		require.Contains(t, ctype, tc.wantType, "%s Accept %q", tc.path, tc.accept)
		require.Contains(t, body, "Build 424242 not found", "%s Accept %q: the same message either way", tc.path, tc.accept)
		if tc.wantType == "application/json" {
			var out errorResponse
			require.NoError(t, json.Unmarshal([]byte(body), &out), body)
			require.Equal(t, slipway.ENOTFOUND, out.Error.Code)
		}
	}
}
