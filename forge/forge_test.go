package forge

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/slipway-ci/slipway"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorded is one request a fake forge received.
type recorded struct {
	Method, Path, RawPath string
	Header                http.Header
	Body                  map[string]any
}

// fakeForge is a local HTTP server standing in for a forge's REST API. It
// records every request and answers with status (201 when zero).
type fakeForge struct {
	*httptest.Server
	mu       sync.Mutex
	requests []recorded
	status   int
}

func newFakeForge(t *testing.T) *fakeForge {
	f := &fakeForge{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		f.mu.Lock()
		f.requests = append(f.requests, recorded{Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), Header: r.Header.Clone(), Body: body})
		status := f.status
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if status == 0 {
			status = http.StatusCreated
		}
		w.WriteHeader(status)
		if status >= 400 {
			_, _ = io.WriteString(w, `{"message": "Bad credentials"}`)
			return
		}
		_, _ = io.WriteString(w, `{"id": 1}`)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeForge) setStatus(s int) {
	f.mu.Lock()
	f.status = s
	f.mu.Unlock()
}

func (f *fakeForge) recorded() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.requests...)
}

const (
	testToken  = "forge-token-for-tests"
	testCommit = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
)

// TestClients checks each client against the documented request: method,
// path, auth header and JSON body, for every state slipway reports.
func TestClients(t *testing.T) {
	t.Parallel()
	type want struct {
		path, rawPath string
		header        map[string]string
		body          map[string]any
	}
	tests := []struct {
		name   string
		client func(base string) Client
		states map[slipway.BuildState]string
		want   func(state string) want
	}{
		{
			name:   "GitHub",
			client: func(base string) Client { return &GitHub{BaseURL: base + "/", Token: testToken} },
			states: map[slipway.BuildState]string{slipway.BuildQueued: "pending", slipway.BuildRunning: "pending",
				slipway.BuildSucceeded: "success", slipway.BuildFailed: "failure", slipway.BuildCanceled: "error"},
			want: func(state string) want {
				return want{path: "/repos/Codertocat/Hello-World/statuses/" + testCommit,
					header: map[string]string{"Authorization": "Bearer " + testToken, "Accept": "application/vnd.github+json",
						"X-Github-Api-Version": "2022-11-28", "Content-Type": "application/json"},
					body: map[string]any{"state": state, "target_url": "http://slipway.test/builds/7",
						"description": "Build 7", "context": "slipway/build"}}
			},
		},
		{
			name:   "GitLab",
			client: func(base string) Client { return &GitLab{BaseURL: base + "/api/v4", Token: testToken} },
			states: map[slipway.BuildState]string{slipway.BuildQueued: "pending", slipway.BuildRunning: "running",
				slipway.BuildSucceeded: "success", slipway.BuildFailed: "failed", slipway.BuildCanceled: "canceled"},
			want: func(state string) want {
				// :id is the URL-encoded path of the project.
				return want{path: "/api/v4/projects/Codertocat/Hello-World/statuses/" + testCommit,
					rawPath: "/api/v4/projects/Codertocat%2FHello-World/statuses/" + testCommit,
					header:  map[string]string{"Private-Token": testToken, "Content-Type": "application/json"},
					body: map[string]any{"state": state, "ref": "main", "name": "slipway/build",
						"target_url": "http://slipway.test/builds/7", "description": "Build 7"}}
			},
		},
		{
			name:   "Gitea",
			client: func(base string) Client { return &Gitea{BaseURL: base + "/api/v1", Token: testToken} },
			states: map[slipway.BuildState]string{slipway.BuildQueued: "pending", slipway.BuildRunning: "pending",
				slipway.BuildSucceeded: "success", slipway.BuildFailed: "failure", slipway.BuildCanceled: "error"},
			want: func(state string) want {
				return want{path: "/api/v1/repos/Codertocat/Hello-World/statuses/" + testCommit,
					header: map[string]string{"Authorization": "token " + testToken, "Content-Type": "application/json"},
					body: map[string]any{"state": state, "target_url": "http://slipway.test/builds/7",
						"description": "Build 7", "context": "slipway/build"}}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeForge(t)
			c := tt.client(f.URL)
			for _, state := range slipway.BuildStates {
				forgeState, ok := tt.states[state]
				if !ok {
					continue // testing is never sent
				}
				require.NoError(t, c.SetStatus(context.Background(), Status{
					Owner: "Codertocat", Name: "Hello-World", Commit: testCommit, Ref: "refs/heads/main",
					State: state, TargetURL: "http://slipway.test/builds/7", Description: "Build 7",
				}))
				reqs := f.recorded()
				got := reqs[len(reqs)-1]
				w := tt.want(forgeState)
				require.Equal(t, http.MethodPost, got.Method)
				require.Equal(t, w.path, got.Path)
				if w.rawPath != "" {
					require.Equal(t, w.rawPath, got.RawPath)
				}
				for k, v := range w.header {
					require.Equal(t, v, got.Header.Get(k), "header %s", k)
				}
				require.Equal(t, w.body, got.Body)
			}
			require.Len(t, f.recorded(), 5)
		})
	}
}

func TestClientRefused(t *testing.T) {
	t.Parallel()
	f := newFakeForge(t)
	f.setStatus(http.StatusUnauthorized)
	err := (&GitHub{BaseURL: f.URL, Token: testToken}).SetStatus(context.Background(), Status{
		Owner: "o", Name: "n", Commit: testCommit, State: slipway.BuildQueued})
	var apiErr *APIError
	require.True(t, errors.As(err, &apiErr), "%v", err)
	require.Equal(t, http.StatusUnauthorized, apiErr.StatusCode)
	require.Equal(t, `GitHub answered 401: {"message": "Bad credentials"}`, err.Error())
	require.NotContains(t, err.Error(), testToken)

	f.Close() // a forge that is down
	err = (&Gitea{BaseURL: f.URL, Token: testToken}).SetStatus(context.Background(), Status{
		Owner: "o", Name: "n", Commit: testCommit, State: slipway.BuildQueued})
	require.Error(t, err)
	require.NotContains(t, err.Error(), testToken)
}

// TestValidRefName: git check-ref-format's rules, one level allowed.
func TestValidRefName(t *testing.T) {
	for _, ok := range []string{"main", "refs/heads/main", "refs/heads/release/1.2", "refs/tags/v1.2.3", "refs/heads/feature-x_y", "refs/heads/ünï"} {
		require.True(t, ValidRefName(ok), ok)
	}
	for _, bad := range []string{"", "@", "refs/heads/a..b", "refs/heads/a@{1}", "refs/heads/.hidden", "refs/heads/x.lock",
		"refs/heads/x.", "refs/heads//x", "refs/heads/x/", "/refs/heads/x", "refs/heads/a b", "refs/heads/a~1", "refs/heads/a^",
		"refs/heads/a:b", "refs/heads/a?", "refs/heads/a*", "refs/heads/a[", `refs/heads/a\b`, "refs/heads/a\x7f", "refs/heads/a\nb", "refs/heads/a\u0085"} {
		require.False(t, ValidRefName(bad), "%q", bad)
	}
}
