package forge

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/slipway-ci/slipway"
)

// Credential is what git sends as HTTP basic auth when it clones a private
// repository: the forges take an access token as the password.
type Credential struct {
	Username string
	Password string
}

// CloneAuth gives the credential a worker clones one repository with.
type CloneAuth interface {
	// ForClone returns the credential for cloneURL, the clone URL of the
	// repository owner/name on forge (slipway.ForgeGitHub, …). ok is false
	// when none applies: the clone is anonymous. An error means a credential
	// applies but could not be had (the GitHub API refused a token).
	ForClone(ctx context.Context, forge, owner, name, cloneURL string) (c Credential, ok bool, err error)
}

// CloneToken is one forge's access token for clones, sent only to the forge's
// own origin.
type CloneToken struct {
	Forge string // slipway.ForgeGitHub, …
	// Origin is scheme://host[:port] the token may be sent to, e.g.
	// https://github.com or https://gitlab.example.com.
	Origin string
	// Username goes with the token: x-access-token (GitHub), oauth2
	// (GitLab); Gitea and Forgejo take any.
	Username string
	Token    string
}

// DefaultCloneUsername is the username a forge's access token is sent
// under when nobody named one: x-access-token (GitHub), oauth2 (GitLab),
// slipway (Gitea and Forgejo take any).
func DefaultCloneUsername(forge string) string {
	switch forge {
	case slipway.ForgeGitHub:
		return "x-access-token"
	case slipway.ForgeGitLab:
		return "oauth2"
	}
	return "slipway"
}

// CloneTokens is a CloneAuth of fixed tokens, one per forge: a token is given
// for a clone URL only when the forge matches and the URL's scheme, host and
// port are the token's origin, so a payload naming another host never gets it.
type CloneTokens []CloneToken

// ForClone implements CloneAuth.
func (ts CloneTokens) ForClone(_ context.Context, forge, _, _, cloneURL string) (Credential, bool, error) {
	for _, t := range ts {
		if t.Forge == forge && t.Token != "" && SameOrigin(t.Origin, cloneURL) {
			return Credential{Username: t.Username, Password: t.Token}, true, nil
		}
	}
	return Credential{}, false, nil
}

// SameOrigin reports whether rawURL has the scheme, host and port of origin
// (scheme://host[:port]), compared case-insensitively, a missing port being
// the scheme's default.
func SameOrigin(origin, rawURL string) bool {
	o, err1 := url.Parse(origin)
	u, err2 := url.Parse(rawURL)
	if err1 != nil || err2 != nil || o.Host == "" || u.Host == "" || u.User != nil {
		return false
	}
	return strings.EqualFold(o.Scheme, u.Scheme) && strings.EqualFold(o.Hostname(), u.Hostname()) &&
		portOf(o) == portOf(u)
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return "443"
	case "http":
		return "80"
	}
	return ""
}

// OriginOf returns scheme://host[:port] of an API or web URL, "" when it has
// none: https://gitlab.example.com for https://gitlab.example.com/api/v4.
func OriginOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return ""
	}
	return strings.ToLower(u.Scheme) + "://" + u.Host
}

// GitHubApp gets installation access tokens of a GitHub App
// (https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-an-installation-access-token-for-a-github-app):
// a JWT signed RS256 with the app's private key authenticates
// GET /repos/{owner}/{repo}/installation and
// POST /app/installations/{id}/access_tokens, the token being scoped to that
// one repository (contents: read, statuses: write). Tokens are cached per
// repository until five minutes before they expire. Safe for concurrent use.
type GitHubApp struct {
	AppID   int64
	Key     *rsa.PrivateKey
	BaseURL string // https://api.github.com, or https://HOST/api/v3
	// Origin is where clones may send the token: https://github.com, or the
	// GitHub Enterprise Server's https://HOST.
	Origin string
	HTTP   *http.Client // nil: a default with a 30 s timeout
	// Now is the clock; nil: time.Now.
	Now func() time.Time

	mu    sync.Mutex
	cache map[string]appToken // owner/name, lower case
}

type appToken struct {
	token   string
	expires time.Time
}

// ForClone implements CloneAuth for github builds whose clone URL is on Origin.
func (a *GitHubApp) ForClone(ctx context.Context, forge, owner, name, cloneURL string) (Credential, bool, error) {
	if forge != slipway.ForgeGitHub || !SameOrigin(a.Origin, cloneURL) {
		return Credential{}, false, nil
	}
	tok, err := a.Token(ctx, owner, name)
	if err != nil {
		return Credential{}, false, err
	}
	return Credential{Username: "x-access-token", Password: tok}, true, nil
}

// Token returns an installation access token for owner/name. The error names
// the step and GitHub's answer (an *APIError inside for an HTTP error).
func (a *GitHubApp) Token(ctx context.Context, owner, name string) (string, error) {
	now := a.now()
	key := strings.ToLower(owner + "/" + name)
	a.mu.Lock()
	if t, ok := a.cache[key]; ok && now.Before(t.expires.Add(-5*time.Minute)) {
		a.mu.Unlock()
		return t.token, nil
	}
	a.mu.Unlock()

	appJWT, err := a.jwt(now)
	if err != nil {
		return "", err
	}
	base := strings.TrimRight(a.BaseURL, "/")
	var inst struct {
		ID int64 `json:"id"`
	}
	if err := a.call(ctx, http.MethodGet, base+"/repos/"+url.PathEscape(owner)+"/"+url.PathEscape(name)+"/installation", appJWT, nil, &inst); err != nil {
		return "", fmt.Errorf("finding the GitHub App installation of %s/%s: %w", owner, name, err)
	}
	var tok struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	body := map[string]any{
		"repositories": []string{name},
		"permissions":  map[string]string{"contents": "read", "statuses": "write"},
	}
	if err := a.call(ctx, http.MethodPost, base+"/app/installations/"+strconv.FormatInt(inst.ID, 10)+"/access_tokens", appJWT, body, &tok); err != nil {
		return "", fmt.Errorf("creating an installation token for %s/%s: %w", owner, name, err)
	}
	if tok.Token == "" {
		return "", fmt.Errorf("creating an installation token for %s/%s: GitHub answered no token", owner, name)
	}
	a.mu.Lock()
	if a.cache == nil {
		a.cache = map[string]appToken{}
	}
	a.cache[key] = appToken{token: tok.Token, expires: tok.ExpiresAt}
	a.mu.Unlock()
	return tok.Token, nil
}

func (a *GitHubApp) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// jwt is the app's JSON Web Token: iss the app id, issued 60 s in the past
// against clock drift, valid for 9 minutes (GitHub allows at most 10).
func (a *GitHubApp) jwt(now time.Time) (string, error) {
	claims := jwt.RegisteredClaims{
		Issuer:    strconv.FormatInt(a.AppID, 10),
		IssuedAt:  jwt.NewNumericDate(now.Add(-60 * time.Second)),
		ExpiresAt: jwt.NewNumericDate(now.Add(9 * time.Minute)),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(a.Key)
	if err != nil {
		return "", fmt.Errorf("signing the GitHub App JWT: %w", err)
	}
	return s, nil
}

func (a *GitHubApp) call(ctx context.Context, method, u, bearer string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	req.Header.Set("User-Agent", "slipway")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := a.HTTP
	if hc == nil {
		hc = httpClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return &APIError{Forge: "GitHub", StatusCode: resp.StatusCode, Message: slipway.Truncate(slipway.OneLine(string(data)), 200)}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding GitHub's answer: %w", err)
	}
	return nil
}

// CloneAuths tries each CloneAuth in turn; the first that applies wins.
type CloneAuths []CloneAuth

// ForClone implements CloneAuth.
func (as CloneAuths) ForClone(ctx context.Context, forge, owner, name, cloneURL string) (Credential, bool, error) {
	for _, a := range as {
		c, ok, err := a.ForClone(ctx, forge, owner, name, cloneURL)
		if err != nil || ok {
			return c, ok, err
		}
	}
	return Credential{}, false, nil
}
