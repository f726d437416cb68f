package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
)

// browser is an HTTP client with a cookie jar that does not follow redirects.
type browser struct {
	t      *testing.T
	base   string
	c      *http.Client
	header http.Header // sent with every request, as a browser would
}

func newBrowser(t *testing.T, base string) *browser {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(method, path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	require.NoError(b.t, err)
	req.Header.Set("Accept", "text/html")
	for k, v := range b.header {
		req.Header[k] = v
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(b.t, err)
	return resp, string(data)
}

// signIn signs in with token.
func (b *browser) signIn(token string) {
	b.t.Helper()
	resp, page := b.do(http.MethodPost, "/signin", url.Values{"token": {token}, "next": {"/"}})
	require.Equal(b.t, http.StatusSeeOther, resp.StatusCode, page)
}

// queueBuild queues a build of acme/app.
func queueBuild(t *testing.T, b *testBundle) slipway.EnqueueResult {
	t.Helper()
	res, err := b.builds.EnqueueTrigger(context.Background(), slipway.Trigger{Forge: "github", DeliveryID: "d-" + t.Name(), Event: "push",
		Owner: "acme", Name: "app", CloneURL: "https://github.com/acme/app.git", Ref: "refs/heads/main",
		Commit: strings.Repeat("ab", 20)}, testRegistry+"/acme/app")
	require.NoError(t, err)
	return res
}

func createToken(t *testing.T, db *postgres.DB, name string, role slipway.Role) string {
	t.Helper()
	secret := "slw_" + name + "_secret_for_dashboard"
	_, err := postgres.NewTokenService(db).CreateToken(context.Background(), name, role, secret)
	require.NoError(t, err)
	return secret
}

func TestDashboardSignIn(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	br := newBrowser(t, b.srv.URL)

	// Signed out, pages send the browser to the sign-in form.
	resp, _ := br.do(http.MethodGet, "/builds/1", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/signin?next=%2Fbuilds%2F1", resp.Header.Get("Location"))
	resp, _ = br.do(http.MethodGet, "/builds/1/log?follow=1", nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	// A wrong token is refused with a reason, and sets no session.
	resp, page := br.do(http.MethodPost, "/signin", url.Values{"token": {"slw_wrong"}})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Contains(t, page, "unknown or deleted")

	// A form another site makes the browser send is refused before the token
	// is looked at: by Sec-Fetch-Site, or by Origin from a browser without it.
	br.header = http.Header{"Sec-Fetch-Site": {"cross-site"}}
	resp, page = br.do(http.MethodPost, "/signin", url.Values{"token": {testToken}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, page, "sent from another site")
	require.Empty(t, resp.Cookies())
	br.header = http.Header{"Origin": {"https://evil.example"}}
	resp, _ = br.do(http.MethodPost, "/signin", url.Values{"token": {testToken}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Empty(t, resp.Cookies())
	// A real browser on this site's page says same-origin.
	br.header = http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {b.srv.URL}}

	resp, _ = br.do(http.MethodPost, "/signin", url.Values{"token": {testToken}, "next": {"//evil.example/"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/", resp.Header.Get("Location"), "the redirect stays on this site")
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			session = c
		}
	}
	require.NotNil(t, session)
	require.True(t, session.HttpOnly)
	require.Equal(t, http.SameSiteLaxMode, session.SameSite)
	require.False(t, session.Secure, "plain HTTP public URL")

	resp, page = br.do(http.MethodGet, "/", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, page, "point a webhook here")
	require.Contains(t, page, testPublic+"/webhooks/github")

	// Unknown pages get the error page in the dashboard's look; the API keeps JSON.
	resp, page = br.do(http.MethodGet, "/nothing/here", nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Contains(t, page, `<link rel="stylesheet" href="/static/app.css">`)
	resp, out := getPath(t, b.srv, "/nothing/here")
	requireError(t, resp, out, http.StatusNotFound, slipway.ENOTFOUND)

	resp, _ = br.do(http.MethodPost, "/signout", url.Values{})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	resp, _ = br.do(http.MethodGet, "/", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, "signed out")
}

func TestDashboardSecureCookieBehindTLS(t *testing.T) {
	t.Parallel()
	b := setup(t, &setupOpts{config: func(c *Config) { c.PublicURL = "https://ci.example.com" }})
	br := newBrowser(t, b.srv.URL)
	resp, _ := br.do(http.MethodPost, "/signin", url.Values{"token": {testToken}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	for _, c := range resp.Cookies() {
		require.True(t, c.Secure, c.Name)
	}
}

func TestDashboardPublic(t *testing.T) {
	t.Parallel()
	b := setup(t, &setupOpts{config: func(c *Config) { c.DashboardPublic = true }})
	ctx := context.Background()
	res := queueBuild(t, b)
	id := strconv.FormatInt(res.Build.ID, 10)
	br := newBrowser(t, b.srv.URL)
	resp, page := br.do(http.MethodGet, "/builds/"+id, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, page)
	require.Contains(t, page, "acme/app")
	require.NotContains(t, page, `id="cancel"`, "an anonymous reader is offered no actions")
	resp, page = br.do(http.MethodGet, "/", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, page, "#"+id)
	require.NotContains(t, page, "point a webhook here", "the welcome is for a slipway without builds")

	// A running build shows the step each platform is at.
	_, err := b.db.Pool().Exec(ctx, `UPDATE builds SET state = 'running', started_at = now() WHERE id = $1`, res.Build.ID)
	require.NoError(t, err)
	require.NoError(t, b.builds.AppendLog(ctx, res.Build.ID, []slipway.LogLine{
		{Time: time.Now(), Step: "checkout", Text: "Checked out"},
		{Time: time.Now(), Platform: "linux/arm64", Step: "build", Text: "RUN make"},
	}))
	resp, page = br.do(http.MethodGet, "/", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, page)
	require.Contains(t, page, "<span class=\"muted\">linux/arm64</span> <strong>build</strong>")
	require.NotContains(t, page, "<strong>checkout</strong>", "once platforms run, their steps are shown")
	_, err = b.db.Pool().Exec(ctx, `UPDATE builds SET state = 'queued' WHERE id = $1`, res.Build.ID)
	require.NoError(t, err)
	resp, page = br.do(http.MethodGet, "/repos/acme/app", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, page, "main")
	// From another site, an action is refused as such before the session is
	// looked at (the browser sends no SameSite=Lax cookie there anyway).
	br.header = http.Header{"Sec-Fetch-Site": {"cross-site"}}
	resp, page = br.do(http.MethodPost, "/builds/"+id+"/cancel", url.Values{})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, page, "sent from another site")
	// Actions still need a session, even from this site's page.
	br.header = http.Header{"Sec-Fetch-Site": {"same-origin"}}
	resp, _ = br.do(http.MethodPost, "/builds/"+id+"/cancel", url.Values{})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	got, err := b.builds.FindBuildByID(ctx, res.Build.ID)
	require.NoError(t, err)
	require.Equal(t, slipway.BuildQueued, got.State)
}

func TestDashboardActions(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	res := queueBuild(t, b)
	id := strconv.FormatInt(res.Build.ID, 10)

	viewer := newBrowser(t, b.srv.URL)
	viewer.signIn(createToken(t, b.db, "watcher", slipway.RoleViewer))
	_, page := viewer.do(http.MethodGet, "/builds/"+id, nil)
	require.NotContains(t, page, `id="cancel"`, "a viewer is not offered cancel")
	resp, page := viewer.do(http.MethodPost, "/builds/"+id+"/cancel", url.Values{})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, page, "developer role")

	dev := newBrowser(t, b.srv.URL)
	dev.signIn(createToken(t, b.db, "dev", slipway.RoleDeveloper))
	_, page = dev.do(http.MethodGet, "/builds/"+id, nil)
	require.Contains(t, page, `id="cancel"`)
	// Sent by another site (even one on a sibling subdomain), the cancel is
	// refused and nothing changes.
	for _, site := range []string{"cross-site", "same-site"} {
		dev.header = http.Header{"Sec-Fetch-Site": {site}}
		resp, page := dev.do(http.MethodPost, "/builds/"+id+"/cancel", url.Values{})
		require.Equal(t, http.StatusForbidden, resp.StatusCode, site)
		require.Contains(t, page, "sent from another site")
	}
	dev.header = nil
	got, err := b.builds.FindBuildByID(ctx, res.Build.ID)
	require.NoError(t, err)
	require.Equal(t, slipway.BuildQueued, got.State)

	resp, _ = dev.do(http.MethodPost, "/builds/"+id+"/cancel", url.Values{})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	got, err = b.builds.FindBuildByID(ctx, res.Build.ID)
	require.NoError(t, err)
	require.Equal(t, slipway.BuildCanceled, got.State)

	resp, _ = dev.do(http.MethodPost, "/builds/"+id+"/retry", url.Values{})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.NotEqual(t, "/builds/"+id, resp.Header.Get("Location"))
	list, err := b.builds.FindBuilds(ctx, slipway.BuildFilter{Repo: "acme/app"})
	require.NoError(t, err)
	require.Len(t, list, 2, "the retry queued a new build")
	require.Equal(t, "token dev", list[0].Sender)
}

func TestDashboardPromote(t *testing.T) {
	t.Parallel()
	p := setupPromote(t)
	// A repository of its own: a registry kept across runs may hold the tags
	// of an earlier one.
	repo := fmt.Sprintf("%s/dash/app%d", p.main.Host, time.Now().UnixNano())
	idx := pushIndex(t, repo)
	b := p.succeededBuild(t, idx, slipway.BuildSucceeded, "")
	id := strconv.FormatInt(b.ID, 10)

	viewer := newBrowser(t, p.srv.URL)
	viewer.signIn(createToken(t, p.db, "watcher", slipway.RoleViewer))
	_, page := viewer.do(http.MethodGet, "/builds/"+id, nil)
	require.NotContains(t, page, `id="promote-preview"`, "a viewer is not offered promotion")
	resp, page := viewer.do(http.MethodPost, "/builds/"+id+"/promote", url.Values{"tags": {"stable"}, "confirm": {"yes"}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, page, "release-manager role")

	rm := newBrowser(t, p.srv.URL)
	rm.signIn(createToken(t, p.db, "releaser", slipway.RoleReleaseManager))
	_, page = rm.do(http.MethodGet, "/builds/"+id, nil)
	require.Contains(t, page, `id="promote-preview"`)
	// The confirmation shows what each tag points at now and will point at,
	// and writes nothing.
	resp, page = rm.do(http.MethodPost, "/builds/"+id+"/promote", url.Values{"tags": {"v1.0.0 stable"}})
	require.Equal(t, http.StatusOK, resp.StatusCode, page)
	require.Contains(t, page, "nothing (new tag)")
	require.Contains(t, page, idx.digest)
	require.Contains(t, page, `id="promote-confirm"`)
	_, err := remote.Head(mustRefT(t, idx.repo+":stable"))
	require.Error(t, err, "a preview writes no tag")

	resp, page = rm.do(http.MethodPost, "/builds/"+id+"/promote", url.Values{"tags": {"v1.0.0 stable"}, "confirm": {"yes"}})
	require.Equal(t, http.StatusOK, resp.StatusCode, page)
	require.Contains(t, page, "Promoted")
	d, err := remote.Head(mustRefT(t, idx.repo+":stable"))
	require.NoError(t, err)
	require.Equal(t, idx.digest, d.Digest.String())

	// Moving the version tag to another build is refused with the server's reason.
	other := p.succeededBuild(t, pushIndex(t, repo), slipway.BuildSucceeded, "")
	resp, page = rm.do(http.MethodPost, "/builds/"+strconv.FormatInt(other.ID, 10)+"/promote", url.Values{"tags": {"v1.0.0"}, "confirm": {"yes"}})
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	require.Contains(t, page, "Version tags are immutable")

	_, page = rm.do(http.MethodGet, "/promotions?tag=stable", nil)
	require.Contains(t, page, idx.repo+":stable")
	require.Contains(t, page, "releaser")
	require.NotContains(t, page, idx.repo+":v1.0.0", "the filter applies")
	_, page = rm.do(http.MethodGet, "/promotions?build="+id, nil)
	require.Contains(t, page, "watcher", "the viewer's refusal is audited")
}

func mustRefT(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s)
	require.NoError(t, err)
	return ref
}

func TestDurationChart(t *testing.T) {
	t.Parallel()
	now := time.Now()
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	list := []*slipway.Build{ // newest first, as FindBuilds answers
		{ID: 3, State: slipway.BuildRunning, CreatedAt: now, StartedAt: at(time.Second)},
		{ID: 2, State: slipway.BuildFailed, CreatedAt: now, StartedAt: at(30 * time.Second), FinishedAt: at(90 * time.Second)},
		{ID: 1, State: slipway.BuildSucceeded, CreatedAt: now, StartedAt: at(0), FinishedAt: at(3 * time.Minute)},
	}
	svg := string(durationChart(list))
	require.Equal(t, 2, strings.Count(svg, `<rect class="bar `), "only finished builds are drawn")
	require.Less(t, strings.Index(svg, "#1 succeeded"), strings.Index(svg, "#2 failed"), "oldest on the left")
	require.Contains(t, svg, "ran 1m 00s, waited 30s")
	require.Contains(t, svg, "longest 3m 00s")
	require.Empty(t, durationChart(list[:2]), "one finished build makes no chart")
}

// TestDashboardPullRequest: a pull-request build shows its number, title,
// author and a link to the forge on the build page, the Now page and the
// repository page.
func TestDashboardPullRequest(t *testing.T) {
	t.Parallel()
	b := setup(t, &setupOpts{config: func(c *Config) { c.DashboardPublic = true }})
	res, err := b.builds.EnqueueTrigger(context.Background(), slipway.Trigger{
		Forge: "github", DeliveryID: "d-pr-page", Event: "pull_request", Owner: "acme", Name: "app",
		CloneURL: "https://github.com/acme/app.git", Ref: "refs/pull/7/head", Commit: strings.Repeat("ab", 20),
		Message: "Faster", Sender: "ada",
		PullRequest: &slipway.PullRequest{Number: 7, Title: "Faster <start-up>", Author: "ada", URL: "https://github.com/acme/app/pull/7", Base: "main"},
	}, "registry.example.com/acme/app")
	require.NoError(t, err)
	br := newBrowser(t, b.srv.URL)
	for _, path := range []string{"/builds/" + strconv.FormatInt(res.Build.ID, 10), "/", "/repos/acme/app"} {
		resp, page := br.do(http.MethodGet, path, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, page)
		require.Contains(t, page, `<a href="https://github.com/acme/app/pull/7" rel="noopener noreferrer">PR #7</a> Faster &lt;start-up&gt;`, path)
		require.Contains(t, page, "by ada", path)
		require.NotContains(t, page, "refs/pull/7/head", path)
	}
}

// TestSafeNext: a sign-in redirect never leaves the site, however the target
// is spelled (browsers drop tabs and newlines, read "\" as "/", and take
// "//host" as another site).
func TestSafeNext(t *testing.T) {
	t.Parallel()
	for _, next := range []string{
		"//evil.example/", "/\t/evil.example",
		"/\n/evil.example", "/\r//evil.example", "/\\evil.example", "/ /evil.example",
		"https://evil.example/", "evil.example", "", "/\x00", "/\xff", "/\u00a0/evil.example",
	} {
		require.Equal(t, "/", safeNext(next), "next=%q", next)
	}
	for _, next := range []string{"/", "/builds/1", "/builds?state=failed&repo=acme%2Fapp", "/repos/acme/app#x"} {
		require.Equal(t, next, safeNext(next))
	}
}

// TestDashboardSessionIsNotTheToken: the session cookie is a random id the
// server keeps; it is neither the token nor worth anything on the API, and
// signing out, deleting the token or changing the admin token ends it.
func TestDashboardSessionIsNotTheToken(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	cookieOf := func(br *browser) string {
		u, _ := url.Parse(b.srv.URL)
		for _, c := range br.c.Jar.Cookies(u) {
			if c.Name == sessionCookie {
				return c.Value
			}
		}
		return ""
	}
	signedIn := func(br *browser) bool {
		resp, _ := br.do(http.MethodGet, "/", nil)
		return resp.StatusCode == http.StatusOK
	}

	secret := createToken(t, b.db, "alice", slipway.RoleDeveloper)
	br := newBrowser(t, b.srv.URL)
	br.signIn(secret)
	id := cookieOf(br)
	require.NotEmpty(t, id)
	require.NotContains(t, id, secret)
	require.NotEqual(t, secret, id)
	// The cookie's value is no API token.
	resp, out := b.get(t, "/api/v1/builds", "Bearer "+id)
	requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
	require.True(t, signedIn(br))

	// Sign-out ends the session on the server: the old cookie no longer works.
	resp, _ = br.do(http.MethodPost, "/signout", url.Values{})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	replay := newBrowser(t, b.srv.URL)
	u, _ := url.Parse(b.srv.URL)
	replay.c.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: id, Path: "/"}})
	require.False(t, signedIn(replay), "a signed-out session id is dead")

	// Deleting the token ends its sessions.
	br2 := newBrowser(t, b.srv.URL)
	br2.signIn(secret)
	require.True(t, signedIn(br2))
	_, err := b.db.Pool().Exec(context.Background(), `DELETE FROM api_tokens WHERE name = 'alice'`)
	require.NoError(t, err)
	require.False(t, signedIn(br2), "the token's deletion ends its session")
	require.Zero(t, b.count(t, "dashboard_sessions"), "its sessions went with it")

	// An admin session ends when the admin token changes: a server with
	// another SLIPWAY_ADMIN_TOKEN on the same database refuses it.
	admin := newBrowser(t, b.srv.URL)
	admin.signIn(testToken)
	require.True(t, signedIn(admin))
	other := httptest.NewServer(New(zerolog.Nop(), Config{AdminToken: "another-admin-token", AutoRegister: true}, b.builds, nil,
		Services{Repos: b.repos, Tokens: postgres.NewTokenService(b.db), Sessions: postgres.NewSessionService(b.db)}))
	t.Cleanup(other.Close)
	moved := newBrowser(t, other.URL)
	ou, _ := url.Parse(other.URL)
	moved.c.Jar.SetCookies(ou, []*http.Cookie{{Name: sessionCookie, Value: cookieOf(admin), Path: "/"}})
	require.False(t, signedIn(moved), "a changed admin token ends the admin's sessions")
}
