package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// TestDashboardInBrowser drives the dashboard in headless chromium against a
// real server, worker and two-platform build: sign in, watch the log of a
// running build arrive without a reload until it succeeds, see both
// platforms' digests, promote as a release manager and find the audit entry;
// a viewer is offered no promotion and is refused when posting the form; a
// form sent from another site's page is refused.
func TestDashboardInBrowser(t *testing.T) {
	chromiumPath(t)
	base := pushBase(t)
	s := newStack(t)
	s.start("worker", "SLIPWAY_WORKER_CONCURRENCY=2", "SLIPWAY_WORKER_ID=e2e-dashboard")
	shots := t.TempDir()

	rmToken := s.token("releaser", "release-manager")
	viewerToken := s.token("watcher", "viewer")

	// The build prints a line a second for a while, with ANSI colours, so the
	// browser opens it while it runs.
	r := newRepos(t)
	url, commit := r.add("app", map[string]string{
		"Dockerfile": dockerfile(base, "RUN for i in $(seq 1 12); do echo tick-$i; sleep 1; done; printf '\\033[1;32mall green\\033[0m\\n'\n"),
	})
	id := s.send("dash-1", "acme", "app", url, "refs/heads/main", commit)
	s.waitFor(id, 5*time.Minute, "running", func(b *slipway.Build) bool { return b.State != slipway.BuildQueued })

	ctx := newBrowser(t)
	signIn(t, ctx, s.url, rmToken)
	// The Now page shows the running build with the step each platform is at.
	wait(t, ctx, time.Minute, fmt.Sprintf(`(() => { const c = document.querySelector('#now a[href="/builds/%d"] .steps'); return c !== null && c.textContent.includes("linux/amd64"); })()`, id))
	screenshot(t, ctx, shots, "now-running")
	buildURL := fmt.Sprintf("%s/builds/%d", s.url, id)
	do(t, ctx, time.Minute, chromedp.Navigate(buildURL), chromedp.WaitVisible(chromedp.ID("log")))
	get(t, ctx, chromedp.Evaluate[string](`window.slipwayMarker = "same page"`))
	wait(t, ctx, time.Minute, `Number(document.getElementById("log").dataset.lines || 0) > 0`)
	first := get(t, ctx, chromedp.Evaluate[int](`Number(document.getElementById("log").dataset.lines)`))
	state := get(t, ctx, chromedp.Evaluate[string](`document.getElementById("log").dataset.state || ""`))
	require.Empty(t, state, "the build is still running when the page shows its first lines")
	wait(t, ctx, time.Minute, fmt.Sprintf(`Number(document.getElementById("log").dataset.lines) > %d`, first))
	screenshot(t, ctx, shots, "build-running")

	wait(t, ctx, 15*time.Minute, `document.getElementById("log").dataset.state === "succeeded"`)
	wait(t, ctx, time.Minute, `document.querySelectorAll(".platform-digest").length === 2`)
	b := s.build(id)
	require.Equal(t, slipway.BuildSucceeded, b.State, b.Error)
	marker := get(t, ctx, chromedp.Evaluate[string](`window.slipwayMarker`))
	digests := get(t, ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll(".platform-digest")).map(e => e.textContent)`))
	green := get(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#log span.fg32.ansi-b").length`))
	logText := get(t, ctx, chromedp.TextContent(chromedp.ID("log")))
	require.Equal(t, "same page", marker, "the log arrived without a reload")
	require.Contains(t, logText, "tick-12")
	require.Positive(t, green, "ANSI colours are rendered")
	require.Len(t, b.Platforms, 2)
	require.ElementsMatch(t, []string{b.Platforms[0].Digest, b.Platforms[1].Digest}, digests)
	screenshot(t, ctx, shots, "build-succeeded")
	// The same page in dark mode, for a look at both themes.
	_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
	require.NoError(t, err)
	screenshot(t, ctx, shots, "build-dark")
	_, err = chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{})
	require.NoError(t, err)

	// A form another site's page sends to slipway is refused, and queues
	// nothing: the page comes from another origin (127.0.0.1 on another port,
	// a sibling site), and chromium's own Sec-Fetch-Site header gives it away.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form method="post" action="%s/builds/%d/retry"><button id="go">Win a prize</button></form>`, s.url, id)
	}))
	defer other.Close()
	do(t, ctx, time.Minute, chromedp.Navigate(other.URL), chromedp.WaitVisible(chromedp.ID("go")))
	do(t, ctx, time.Minute, chromedp.Click(chromedp.ID("go")))
	refused := false
	for deadline := time.Now().Add(time.Minute); !refused && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		// The page is navigating: an evaluation may fail until it has.
		text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.textContent : ""`))
		refused = err == nil && strings.Contains(text, "sent from another site")
	}
	require.True(t, refused, "the cross-site form was answered with the refusal page")
	screenshot(t, ctx, shots, "cross-site-refused")
	require.Equal(t, 1, s.buildCount("acme/app"))
	do(t, ctx, time.Minute, chromedp.Navigate(buildURL), chromedp.WaitVisible(chromedp.ID("log")))

	// Promote as a release manager: confirm, then see the result and the audit entry.
	do(t, ctx, time.Minute,
		chromedp.SendKeys(chromedp.ID("tags"), "v1.0.0 stable"),
		chromedp.Click(chromedp.ID("promote-preview")),
		chromedp.WaitVisible(chromedp.ID("promote-confirm")),
	)
	confirm := get(t, ctx, chromedp.Text(chromedp.ID("changes")))
	require.Contains(t, confirm, "nothing (new tag)")
	require.Contains(t, confirm, b.IndexDigest)
	screenshot(t, ctx, shots, "promote-confirm")
	do(t, ctx, time.Minute, chromedp.Click(chromedp.ID("promote-confirm")), chromedp.WaitVisible(chromedp.ID("result")))
	result := get(t, ctx, chromedp.Text(chromedp.ID("result")))
	require.Contains(t, result, b.Image+":stable")
	screenshot(t, ctx, shots, "promote-result")
	do(t, ctx, time.Minute, chromedp.Navigate(fmt.Sprintf("%s/promotions?build=%d", s.url, id)), chromedp.WaitVisible(chromedp.CSS("table.promotions")))
	audit := get(t, ctx, chromedp.Text(chromedp.CSS("table.promotions")))
	require.Contains(t, audit, b.Image+":v1.0.0")
	require.Contains(t, audit, "releaser")
	require.Contains(t, audit, "promoted")
	screenshot(t, ctx, shots, "promotions")
	do(t, ctx, time.Minute, chromedp.Navigate(s.url+"/"), chromedp.WaitVisible(chromedp.ID("now")))
	screenshot(t, ctx, shots, "now")
	do(t, ctx, time.Minute, chromedp.Navigate(s.url+"/repos/acme/app"), chromedp.WaitVisible(chromedp.CSS("table")))
	screenshot(t, ctx, shots, "repo")

	// A viewer sees no promote button, and posting the form anyway is refused.
	do(t, ctx, time.Minute, chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("token")))
	signIn(t, ctx, s.url, viewerToken)
	do(t, ctx, time.Minute, chromedp.Navigate(buildURL), chromedp.WaitVisible(chromedp.ID("log")))
	wait(t, ctx, time.Minute, `document.getElementById("log").dataset.state === "succeeded"`)
	require.Zero(t, get(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#promote-preview").length`)))
	require.Zero(t, get(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#retry, #cancel").length`)))
	screenshot(t, ctx, shots, "build-viewer")
	require.Equal(t, http.StatusForbidden, postStatus(t, ctx, fmt.Sprintf("/builds/%d/promote", id),
		map[string]string{"tags": "v2.0.0", "confirm": "yes"}))
	var rows int
	require.NoError(t, s.db.Pool().QueryRow(t.Context(),
		`SELECT count(*) FROM promotions WHERE build_id = $1 AND actor = 'watcher' AND outcome = 'refused'`, id).Scan(&rows))
	require.Equal(t, 1, rows, "the viewer's attempt is audited as refused")
}

// token makes an API token with the CLI and returns its secret.
func (s *stack) token(name, role string) string {
	s.t.Helper()
	stdout, stderr, exit := s.cli(nil, "token", "create", "--name", name, "--role", role)
	require.Equal(s.t, 0, exit, stderr)
	return strings.TrimSpace(stdout)
}

// buildCount is how many builds owner/name has.
func (s *stack) buildCount(repo string) int {
	s.t.Helper()
	var out struct{ Builds []slipway.Build }
	code, body := s.api("/builds?repo="+repo, &out)
	require.Equal(s.t, http.StatusOK, code, string(body))
	return len(out.Builds)
}
