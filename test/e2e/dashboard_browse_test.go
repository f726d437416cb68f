package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/test/testenv"
)

// TestDashboardBrowseInBrowser browses the dashboard in headless chromium at
// 1366 px: the build list filtered through its form and paged, the
// repositories page, "Build this ref", the tokens page (a token made there
// signs in), the 404 page of a signed-in reader, absolute times in the
// reader's zone, and no table wider than its card on any page.
func TestDashboardBrowseInBrowser(t *testing.T) {
	chromiumPath(t)
	s := newStack(t)
	long := "refs/heads/feature/" + strings.Repeat("a-rather-long-branch-name-", 4) + "end"
	var ids []int64
	for i := 0; i < 3; i++ {
		body := push(t, testenv.PushParams{Owner: "acme", Name: "app", CloneURL: "https://example.invalid/acme/app.git",
			Ref: long, After: strings.Repeat(fmt.Sprintf("%x", i+1), 40),
			Message: "A commit message that keeps going " + strings.Repeat("and going ", 20)})
		code, resp := s.webhook("push", fmt.Sprintf("browse-%d", i), body, testenv.Sign(webhookSecret, body))
		require.Equal(t, 202, code, "%v", resp)
		ids = append(ids, int64(resp["build_id"].(float64)))
	}
	otherID := s.send("browse-other", "acme", "other", "https://example.invalid/acme/other.git", "refs/heads/main", strings.Repeat("e", 40))

	ctx := newBrowser(t)
	do(t, ctx, 10*time.Second, chromedp.EmulateViewport(1366, 768))
	signIn(t, ctx, s.url, adminToken)
	shots := t.TempDir()

	// No table may stick out of its card, and the page may not scroll sideways.
	fits := func(path string) {
		t.Helper()
		do(t, ctx, time.Minute, chromedp.Navigate(s.url+path), chromedp.WaitReady("main"))
		over := get(t, ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("table")).filter(tb => {
			const card = tb.closest(".card, section") || document.querySelector("main");
			return tb.getBoundingClientRect().right > card.getBoundingClientRect().right + 1 || tb.scrollWidth > card.clientWidth + 1;
		}).map(tb => tb.id || tb.className || "table")`))
		require.Empty(t, over, "tables wider than their card on %s", path)
		require.LessOrEqual(t, get(t, ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)), 1366, "no sideways scroll on %s", path)
	}

	// The build list, filtered with its form.
	fits("/builds")
	screenshot(t, ctx, shots, "builds")
	rows := func() []string {
		return get(t, ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#builds tbody tr")).map(r => r.dataset.id)`))
	}
	require.Len(t, rows(), 4)
	do(t, ctx, time.Minute,
		chromedp.SetValue(chromedp.ID("f-repo"), "acme/other"),
		chromedp.Click(chromedp.ID("filter")),
	)
	// The filtered page has loaded once its URL carries the filter (the old
	// page's table is visible until then).
	deadline := time.Now().Add(30 * time.Second)
	for {
		// An evaluation during the navigation fails; the next one sees the new page.
		loaded, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`location.search.includes("repo=") && document.readyState === "complete" && !!document.getElementById("builds")`))
		if err == nil && loaded {
			break
		}
		require.True(t, time.Now().Before(deadline), "the filtered build list did not load: %v", err)
		time.Sleep(100 * time.Millisecond) // bounded poll of the browser
	}
	require.Equal(t, []string{fmt.Sprint(otherID)}, rows())
	require.Contains(t, get(t, ctx, chromedp.Evaluate[string](`location.search`)), "repo=acme%2Fother")
	branch := strings.TrimPrefix(long, "refs/heads/")
	do(t, ctx, time.Minute, chromedp.Navigate(s.url+"/builds?state=queued&ref="+branch), chromedp.WaitVisible(chromedp.ID("builds")))
	require.Equal(t, []string{fmt.Sprint(ids[2])}, rows(), "the newer pushes superseded the older queued builds")
	do(t, ctx, time.Minute, chromedp.Navigate(s.url+"/builds?ref="+branch), chromedp.WaitVisible(chromedp.ID("builds")))
	require.Len(t, rows(), 3)
	// Absolute times: every relative time carries one, in the reader's zone.
	titles := get(t, ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#builds time[datetime]")).map(e => e.title)`))
	require.Len(t, titles, 3)
	for _, ti := range titles {
		require.Regexp(t, `\d\d:\d\d:\d\d`, ti)
		require.Regexp(t, `(UTC|GMT|[A-Z]{3,4}|[+-]\d)`, ti, "the title names the zone")
	}

	fits("/repos")
	repos := get(t, ctx, chromedp.Text(chromedp.ID("repos")))
	require.Contains(t, repos, "acme/app")
	require.Contains(t, repos, "acme/other")
	fits("/repos/acme/app")
	screenshot(t, ctx, shots, "repo")
	// Build this ref: a commit given, so nothing asks the (made-up) forge.
	do(t, ctx, time.Minute,
		chromedp.SetValue(chromedp.ID("build-ref-name"), "release/1"),
		chromedp.SetValue(chromedp.ID("build-ref-commit"), strings.Repeat("9", 40)),
		chromedp.Click(chromedp.ID("build-ref-submit")),
		chromedp.WaitVisible(chromedp.ID("log")),
	)
	path := get(t, ctx, chromedp.Evaluate[string](`location.pathname`))
	require.Regexp(t, `^/builds/\d+$`, path)
	var nb struct {
		Ref, Commit, Sender string
	}
	code, body := s.api("/builds/"+strings.TrimPrefix(path, "/builds/"), &nb)
	require.Equal(t, 200, code, string(body))
	require.Equal(t, "refs/heads/release/1", nb.Ref)
	require.Equal(t, strings.Repeat("9", 40), nb.Commit)
	fits(path)

	fits("/")
	fits("/promotions")

	// Tokens: make one, and sign in with what the page showed once.
	fits("/tokens")
	do(t, ctx, time.Minute,
		chromedp.SendKeys(chromedp.ID("token-name"), "browser-bot"),
		chromedp.SetValue(chromedp.ID("token-role"), "viewer"),
		chromedp.Click(chromedp.ID("token-create")),
		chromedp.WaitVisible(chromedp.ID("new-token")),
	)
	secret := get(t, ctx, chromedp.Text(chromedp.ID("new-token")))
	require.NotEmpty(t, secret)
	screenshot(t, ctx, shots, "tokens")
	do(t, ctx, time.Minute, chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("token")))
	signIn(t, ctx, s.url, secret)
	who := get(t, ctx, chromedp.Text(chromedp.CSS(".who")))
	require.Contains(t, who, "browser-bot")
	require.Zero(t, get(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll('nav a[href="/tokens"]').length`)), "a viewer has no tokens page")

	// The 404 page knows who is signed in.
	do(t, ctx, time.Minute, chromedp.Navigate(s.url+"/no/such/page"), chromedp.WaitVisible(chromedp.CSS(".error-page")))
	who = get(t, ctx, chromedp.Text(chromedp.CSS(".who")))
	require.Contains(t, who, "browser-bot")
	require.NotContains(t, who, "Sign in")
}
