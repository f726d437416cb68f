package forge

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// fakeGitHubApps serves the two GitHub App endpoints slipway calls, after
// GitHub's documented wire format, and checks each request's JWT against the
// app's public key the way GitHub does (RS256, iss = app id, at most 10
// minutes between iat and exp).
type fakeGitHubApps struct {
	t      *testing.T
	appID  string
	pub    *rsa.PublicKey
	mu     sync.Mutex
	tokens int            // tokens issued
	scoped []string       // repositories of the last token request
	perms  map[string]any // permissions of the last token request
	expiry time.Time
	now    func() time.Time
}

func (f *fakeGitHubApps) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		http.Error(w, `{"message":"Requires authentication"}`, http.StatusUnauthorized)
		return
	}
	claims := &jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(bearer, claims, func(tok *jwt.Token) (any, error) { return f.pub, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(f.appID), jwt.WithTimeFunc(f.now))
	if err != nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > 10*time.Minute {
		http.Error(w, `{"message":"A JSON web token could not be decoded"}`, http.StatusUnauthorized)
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/repos/acme/private-app/installation":
		_, _ = w.Write([]byte(`{"id": 4242, "account": {"login": "acme"}, "app_id": 17}`))
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/installation"):
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
	case r.Method == http.MethodPost && r.URL.Path == "/app/installations/4242/access_tokens":
		var body struct {
			Repositories []string       `json:"repositories"`
			Permissions  map[string]any `json:"permissions"`
		}
		require.NoError(f.t, json.NewDecoder(r.Body).Decode(&body))
		f.mu.Lock()
		f.tokens++
		f.scoped, f.perms = body.Repositories, body.Permissions
		n := f.tokens
		f.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"token": "ghs_installation" + strings.Repeat("x", n), "expires_at": f.expiry.Format(time.RFC3339),
			"permissions": body.Permissions, "repository_selection": "selected",
		})
	default:
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
	}
}

func TestGitHubAppToken(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	clock := now
	fake := &fakeGitHubApps{t: t, appID: "17", pub: &key.PublicKey, expiry: now.Add(time.Hour), now: func() time.Time { return clock }}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	app := &GitHubApp{AppID: 17, Key: key, BaseURL: srv.URL, Origin: "https://github.com", Now: func() time.Time { return clock }}
	ctx := context.Background()

	c, ok, err := app.ForClone(ctx, slipway.ForgeGitHub, "acme", "private-app", "https://github.com/acme/private-app.git")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, Credential{Username: "x-access-token", Password: "ghs_installationx"}, c)
	require.Equal(t, []string{"private-app"}, fake.scoped, "the token is scoped to the one repository")
	require.Equal(t, map[string]any{"contents": "read", "statuses": "write"}, fake.perms)

	// Cached until five minutes before it expires.
	clock = now.Add(54 * time.Minute)
	c, _, err = app.ForClone(ctx, slipway.ForgeGitHub, "acme", "private-app", "https://github.com/acme/private-app.git")
	require.NoError(t, err)
	require.Equal(t, "ghs_installationx", c.Password)
	require.Equal(t, 1, fake.tokens)
	clock = now.Add(56 * time.Minute)
	c, _, err = app.ForClone(ctx, slipway.ForgeGitHub, "acme", "private-app", "https://github.com/acme/private-app.git")
	require.NoError(t, err)
	require.Equal(t, "ghs_installationxx", c.Password)

	// Another host, another forge: no token, no API call.
	for _, tc := range []struct{ forge, url string }{
		{slipway.ForgeGitHub, "https://evil.example/acme/private-app.git"},
		{slipway.ForgeGitHub, "http://github.com/acme/private-app.git"},
		{slipway.ForgeGitHub, "https://github.com:8443/acme/private-app.git"},
		{slipway.ForgeGitea, "https://github.com/acme/private-app.git"},
	} {
		_, ok, err := app.ForClone(ctx, tc.forge, "acme", "private-app", tc.url)
		require.NoError(t, err)
		require.False(t, ok, tc.url)
	}
	require.Equal(t, 2, fake.tokens)

	// No installation on the repository: an error naming it, with GitHub's status.
	_, _, err = app.ForClone(ctx, slipway.ForgeGitHub, "acme", "other", "https://github.com/acme/other.git")
	require.ErrorContains(t, err, "acme/other")
	require.ErrorContains(t, err, "GitHub answered 404")

	// A wrong key is refused by GitHub's check.
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	bad := &GitHubApp{AppID: 17, Key: other, BaseURL: srv.URL, Origin: "https://github.com"}
	_, err = bad.Token(ctx, "acme", "private-app")
	require.ErrorContains(t, err, "GitHub answered 401")

	// The status client takes the installation token too.
	var got string
	status := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(status.Close)
	gh := &GitHub{BaseURL: status.URL, App: app}
	require.NoError(t, gh.SetStatus(ctx, Status{Owner: "acme", Name: "private-app", Commit: strings.Repeat("a", 40), State: slipway.BuildRunning}))
	require.Equal(t, "Bearer ghs_installationxxx", got, "the cached token was past its refresh time")
}

func TestCloneTokens(t *testing.T) {
	t.Parallel()
	ts := CloneTokens{
		{Forge: slipway.ForgeGitLab, Origin: "https://gitlab.example.com", Username: "oauth2", Token: "glpat-1"},
		{Forge: slipway.ForgeGitea, Origin: "http://127.0.0.1:3000", Username: "slipway", Token: "gitea-1"},
	}
	tests := []struct {
		forge, url string
		want       string // password, "" for none
	}{
		{slipway.ForgeGitLab, "https://gitlab.example.com/group/sub/app.git", "glpat-1"},
		{slipway.ForgeGitLab, "https://GITLAB.example.com:443/group/app.git", "glpat-1"},
		{slipway.ForgeGitLab, "https://gitlab.example.com.evil/group/app.git", ""},
		{slipway.ForgeGitLab, "http://gitlab.example.com/group/app.git", ""},
		{slipway.ForgeGitLab, "ssh://git@gitlab.example.com/group/app.git", ""},
		{slipway.ForgeGitLab, "https://user:pw@gitlab.example.com/group/app.git", ""},
		{slipway.ForgeGitHub, "https://gitlab.example.com/group/app.git", ""},
		{slipway.ForgeGitea, "http://127.0.0.1:3000/acme/app.git", "gitea-1"},
		{slipway.ForgeGitea, "http://127.0.0.1:3001/acme/app.git", ""},
	}
	for _, tt := range tests {
		c, ok, err := ts.ForClone(context.Background(), tt.forge, "o", "n", tt.url)
		require.NoError(t, err)
		require.Equal(t, tt.want != "", ok, tt.url)
		require.Equal(t, tt.want, c.Password, tt.url)
	}
	require.Equal(t, "https://gitlab.example.com", OriginOf("https://gitlab.example.com/api/v4"))
	require.Equal(t, "", OriginOf("not a url"))
}
