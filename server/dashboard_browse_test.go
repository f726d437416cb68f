package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// enqueue stores a queued build of owner/name on ref (a PR build with pr > 0).
func enqueue(t *testing.T, b *testBundle, repo, ref string, pr int) *slipway.Build {
	t.Helper()
	owner, name, _ := strings.Cut(repo, "/")
	tr := slipway.Trigger{Forge: "github", DeliveryID: fmt.Sprintf("d-%d", time.Now().UnixNano()), Event: "push",
		Owner: owner, Name: name, CloneURL: "https://github.com/" + repo + ".git", Ref: ref,
		Commit: strings.Repeat("ab", 20), Message: "change " + ref, Sender: "ada"}
	if pr > 0 {
		tr.Event = "pull_request"
		tr.PullRequest = &slipway.PullRequest{Number: pr, Title: "PR title", Author: "ada", Base: "main"}
	}
	res, err := b.builds.EnqueueTrigger(context.Background(), tr, testRegistry+"/"+repo)
	require.NoError(t, err)
	return res.Build
}

// setTimes moves a build to state with the given start and finish (zero: NULL).
func setTimes(t *testing.T, b *testBundle, id int64, state slipway.BuildState, started, finished time.Time) {
	t.Helper()
	null := func(tm time.Time) any {
		if tm.IsZero() {
			return nil
		}
		return tm
	}
	_, err := b.db.Pool().Exec(context.Background(), `UPDATE builds SET state = $2, started_at = $3, finished_at = $4 WHERE id = $1`,
		id, string(state), null(started), null(finished))
	require.NoError(t, err)
}

// TestDashboardBuildList: the build list filters by repository, branch,
// state and pull request, pages with "Older builds", and shows absolute times.
func TestDashboardBuildList(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	var ids []int64
	for i := 0; i < dashboardPageSize+5; i++ {
		ids = append(ids, enqueue(t, b, "acme/app", "refs/heads/main", 0).ID)
	}
	feature := enqueue(t, b, "acme/app", "refs/heads/feature", 0)
	other := enqueue(t, b, "acme/other", "refs/heads/main", 0)
	pr := enqueue(t, b, "acme/app", "refs/pull/9/head", 9)
	setTimes(t, b, feature.ID, slipway.BuildFailed, time.Now().Add(-time.Minute), time.Now())

	br := newBrowser(t, b.srv.URL)
	br.signIn(testToken)
	rowRE := regexp.MustCompile(`<tr data-id="(\d+)">`)
	rows := func(page string) []int64 {
		var out []int64
		for _, m := range rowRE.FindAllStringSubmatch(page, -1) {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			out = append(out, n)
		}
		return out
	}
	get := func(path string) string {
		t.Helper()
		resp, page := br.do(http.MethodGet, path, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, page)
		return page
	}

	page := get("/builds")
	require.Len(t, rows(page), dashboardPageSize)
	require.Equal(t, pr.ID, rows(page)[0], "newest first")
	require.Regexp(t, `<time datetime="\d{4}-\d\d-\d\dT[0-9:]+Z" title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC">`, page)
	m := regexp.MustCompile(`href="/builds(\?[^"]+)" id="older"`).FindStringSubmatch(page)
	require.NotNil(t, m, "a full page links to older builds")
	page = get("/builds" + strings.ReplaceAll(m[1], "&amp;", "&"))
	var rest []int64 // the 8 oldest, newest first
	for i := len(ids) + 3 - dashboardPageSize - 1; i >= 0; i-- {
		rest = append(rest, ids[i])
	}
	require.Equal(t, rest, rows(page))
	require.NotContains(t, page, `id="older"`, "the last page")
	require.Contains(t, page, `id="newest"`)

	require.Equal(t, []int64{feature.ID}, rows(get("/builds?ref=feature")))
	require.Equal(t, []int64{feature.ID}, rows(get("/builds?state=failed")))
	require.Equal(t, []int64{other.ID}, rows(get("/builds?repo=acme/other")))
	require.Equal(t, []int64{pr.ID}, rows(get("/builds?pull_request=9")))
	require.Contains(t, get("/builds?repo=nobody/here"), "No builds match these filters.")
	resp, page := br.do(http.MethodGet, "/builds?state=bogus", nil)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, page, "Unknown state")

	page = get("/repos")
	require.Contains(t, page, `<a href="/repos/acme/app">acme/app</a>`)
	require.Contains(t, page, `<a href="/repos/acme/other">acme/other</a>`)
	require.Contains(t, page, fmt.Sprintf(`<a href="/builds/%d">#%d</a>`, pr.ID, pr.ID), "the latest build of acme/app")
}

// TestDashboardBuildThisRef: a developer queues a ref from the repository
// page; a viewer is not offered the form and is refused.
func TestDashboardBuildThisRef(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	enqueue(t, b, "acme/app", "refs/heads/main", 0)
	dev := newBrowser(t, b.srv.URL)
	dev.signIn(createToken(t, b.db, "dev", slipway.RoleDeveloper))
	_, page := dev.do(http.MethodGet, "/repos/acme/app", nil)
	require.Contains(t, page, `id="build-ref-submit"`)
	require.Contains(t, page, `value="main"`, "the form starts with the repository's branch")

	commit := strings.Repeat("12", 20)
	resp, page := dev.do(http.MethodPost, "/repos/acme/app/builds", url.Values{"ref": {"feature/x"}, "commit": {commit}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, page)
	id, err := strconv.ParseInt(strings.TrimPrefix(resp.Header.Get("Location"), "/builds/"), 10, 64)
	require.NoError(t, err)
	nb, err := b.builds.FindBuildByID(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, "refs/heads/feature/x", nb.Ref)
	require.Equal(t, commit, nb.Commit)
	require.Equal(t, "token dev", nb.Sender)
	require.Empty(t, nb.Message, "the worker records the commit's subject")
	require.True(t, nb.VerifyRef, "the worker checks the commit is on feature/x")
	require.Equal(t, slipway.BuildQueued, nb.State)

	// Without a commit the build waits for the worker to resolve it; the
	// pages say so instead of showing a commit.
	resp, page = dev.do(http.MethodPost, "/repos/acme/app/builds", url.Values{"ref": {"main"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, page)
	_, page = dev.do(http.MethodGet, resp.Header.Get("Location"), nil)
	require.Contains(t, page, "resolving…")
	_, page = dev.do(http.MethodGet, "/repos/acme/app", nil)
	require.Contains(t, page, "resolving…")

	resp, page = dev.do(http.MethodPost, "/repos/acme/app/builds", url.Values{"ref": {"bad..ref"}, "commit": {commit}})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, page, "is not a valid git ref")
	resp, page = dev.do(http.MethodPost, "/repos/nobody/here/builds", url.Values{"ref": {"main"}, "commit": {commit}})
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Contains(t, page, "is not registered")

	viewer := newBrowser(t, b.srv.URL)
	viewer.signIn(createToken(t, b.db, "watcher", slipway.RoleViewer))
	_, page = viewer.do(http.MethodGet, "/repos/acme/app", nil)
	require.NotContains(t, page, `id="build-ref-submit"`)
	resp, _ = viewer.do(http.MethodPost, "/repos/acme/app/builds", url.Values{"ref": {"main"}, "commit": {commit}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
}

// TestDashboardTokens: admins list, create (the secret shown once) and
// delete tokens; others get no menu entry and a 403.
func TestDashboardTokens(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	admin := newBrowser(t, b.srv.URL)
	admin.signIn(testToken)
	resp, page := admin.do(http.MethodGet, "/tokens", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, page)
	require.Contains(t, page, `<a href="/tokens" aria-current="page">Tokens</a>`)

	resp, page = admin.do(http.MethodPost, "/tokens", url.Values{"name": {"ci-bot"}, "role": {"developer"}})
	require.Equal(t, http.StatusCreated, resp.StatusCode, page)
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	m := regexp.MustCompile(`<code id="new-token">([^<]+)</code>`).FindStringSubmatch(page)
	require.NotNil(t, m, page)
	// The secret shown works: it signs in as ci-bot.
	bot := newBrowser(t, b.srv.URL)
	bot.signIn(m[1])
	_, botPage := bot.do(http.MethodGet, "/", nil)
	require.Contains(t, botPage, "ci-bot · ")
	require.NotContains(t, b.logs.String(), m[1], "the secret reaches no log")
	require.Contains(t, page, `<tr data-name="ci-bot">`)

	resp, page = admin.do(http.MethodPost, "/tokens", url.Values{"name": {"ci-bot"}, "role": {"viewer"}})
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	require.Contains(t, page, `id="refusal"`)
	resp, page = admin.do(http.MethodPost, "/tokens", url.Values{"name": {"bad name!"}, "role": {"viewer"}})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, page)

	id := regexp.MustCompile(`action="/tokens/(\d+)/delete"`).FindStringSubmatch(page)
	require.NotNil(t, id)
	resp, _ = admin.do(http.MethodPost, "/tokens/"+id[1]+"/delete", url.Values{})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, page = admin.do(http.MethodGet, "/tokens", nil)
	require.NotContains(t, page, `<tr data-name="ci-bot">`)

	dev := newBrowser(t, b.srv.URL)
	dev.signIn(createToken(t, b.db, "dev", slipway.RoleDeveloper))
	_, page = dev.do(http.MethodGet, "/", nil)
	require.NotContains(t, page, `href="/tokens"`)
	resp, _ = dev.do(http.MethodGet, "/tokens", nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
}

// TestDashboardNotFoundSignedIn: the 404 page names the signed-in reader.
func TestDashboardNotFoundSignedIn(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	br := newBrowser(t, b.srv.URL)
	br.signIn(createToken(t, b.db, "ada", slipway.RoleViewer))
	resp, page := br.do(http.MethodGet, "/no/such/page", nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Contains(t, page, "ada · ")
	require.Contains(t, page, `id="signout"`)
	require.NotContains(t, page, `href="/signin"`)
}

// TestEstimateQueue: queued builds start when the running ones have run as
// long as their repository's builds usually take.
func TestEstimateQueue(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	started := func(ago time.Duration) *time.Time { s := now.Add(-ago); return &s }
	expect := map[string]time.Duration{"a/slow": 60 * time.Second, "a/fast": 10 * time.Second}
	expected := func(repo string) time.Duration { return expect[repo] }
	running := []runningBuild{{Build: &slipway.Build{ID: 1, Repo: "a/slow", StartedAt: started(10 * time.Second)}}}
	// The store lists newest first.
	queued := []*slipway.Build{{ID: 4, Repo: "a/slow"}, {ID: 3, Repo: "a/fast"}, {ID: 2, Repo: "a/fast"}}
	got := estimateQueue(now, running, queued, expected)
	require.Equal(t, []int64{2, 3, 4}, []int64{got[0].ID, got[1].ID, got[2].ID}, "oldest first")
	require.Equal(t, []time.Duration{50 * time.Second, 60 * time.Second, 70 * time.Second},
		[]time.Duration{got[0].StartsIn, got[1].StartsIn, got[2].StartsIn})

	// Two lanes: the second queued build takes the lane that frees first.
	running = append(running, runningBuild{Build: &slipway.Build{ID: 5, Repo: "a/fast", StartedAt: started(4 * time.Second)}})
	got = estimateQueue(now, running, queued, expected)
	require.Equal(t, []time.Duration{6 * time.Second, 16 * time.Second, 26 * time.Second},
		[]time.Duration{got[0].StartsIn, got[1].StartsIn, got[2].StartsIn})

	// Past its usual time, a running build ends any moment.
	got = estimateQueue(now, []runningBuild{{Build: &slipway.Build{Repo: "a/fast", StartedAt: started(time.Minute)}}}, queued[2:], expected)
	require.Equal(t, time.Duration(0), got[0].StartsIn)
	// No history at all: unknown.
	got = estimateQueue(now, running, []*slipway.Build{{ID: 9, Repo: "b/new"}}, func(string) time.Duration { return 0 })
	require.Less(t, got[0].StartsIn, time.Duration(0))
}

// TestDashboardQueueEstimate: with a 60 s history and a build that started
// 15 s ago, the Now page says the next queued build starts in about 45 s.
func TestDashboardQueueEstimate(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	done := enqueue(t, b, "acme/app", "refs/heads/main", 0)
	end := time.Now().Add(-time.Hour)
	setTimes(t, b, done.ID, slipway.BuildSucceeded, end.Add(-60*time.Second), end)
	// Other branches: a newer build of the same branch would supersede it.
	run := enqueue(t, b, "acme/app", "refs/heads/one", 0)
	setTimes(t, b, run.ID, slipway.BuildRunning, time.Now().Add(-15*time.Second), time.Time{})
	enqueue(t, b, "acme/app", "refs/heads/two", 0)

	br := newBrowser(t, b.srv.URL)
	br.signIn(testToken)
	_, page := br.do(http.MethodGet, "/", nil)
	require.Regexp(t, `<td class="starts-in">4[3-5]s</td>`, page)
	require.Regexp(t, `<time datetime="[^"]+" title="[^"]+ UTC">`, page, "finished builds carry their absolute time")
}

// TestDashboardPromoteWarnings: the confirmation says, before anything
// happens, that moving a released version tag will be refused, and warns an
// admin that Force overwrites it.
func TestDashboardPromoteWarnings(t *testing.T) {
	t.Parallel()
	p := setupPromote(t)
	repo := fmt.Sprintf("%s/warn/app%d", p.main.Host, time.Now().UnixNano())
	first := p.succeededBuild(t, pushIndex(t, repo), slipway.BuildSucceeded, "")
	second := p.succeededBuild(t, pushIndex(t, repo), slipway.BuildSucceeded, "")

	rm := newBrowser(t, p.srv.URL)
	rm.signIn(createToken(t, p.db, "releaser", slipway.RoleReleaseManager))
	promote := func(br *browser, id int64, form url.Values) (int, string) {
		t.Helper()
		resp, page := br.do(http.MethodPost, fmt.Sprintf("/builds/%d/promote", id), form)
		return resp.StatusCode, page
	}
	// A new version tag: a note that it is fixed once set.
	code, page := promote(rm, first.ID, url.Values{"tags": {"v1.0.0"}})
	require.Equal(t, http.StatusOK, code, page)
	require.Contains(t, page, "version tag: fixed once set")
	code, page = promote(rm, first.ID, url.Values{"tags": {"v1.0.0"}, "confirm": {"yes"}})
	require.Equal(t, http.StatusOK, code, page)

	// Moving it: the preview says it will be refused and offers no button.
	code, page = promote(rm, second.ID, url.Values{"tags": {"v1.0.0 latest"}})
	require.Equal(t, http.StatusOK, code, page)
	require.Contains(t, page, `id="will-refuse"`)
	require.Contains(t, page, "will be refused")
	require.Contains(t, page, "only an admin can move a version tag")
	require.NotContains(t, page, `id="promote-confirm"`)

	// An admin with Force is warned that a released version is overwritten.
	admin := newBrowser(t, p.srv.URL)
	admin.signIn(testToken)
	code, page = promote(admin, second.ID, url.Values{"tags": {"v1.0.0"}, "force": {"on"}})
	require.Equal(t, http.StatusOK, code, page)
	require.Contains(t, page, `id="will-overwrite"`)
	require.Contains(t, page, "Force overwrites released version <code>v1.0.0</code>")
	require.Contains(t, page, "Overwrite and promote")
	// Without Force, an admin is told how to go on.
	_, page = promote(admin, second.ID, url.Values{"tags": {"v1.0.0"}})
	require.Contains(t, page, "tick Force")

	// The audit trail shows absolute times.
	_, page = rm.do(http.MethodGet, fmt.Sprintf("/promotions?build=%d", first.ID), nil)
	require.Regexp(t, `<time class="when-abs" datetime="[^"]+" data-ago="[^"]+">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>`, page)
}

// TestDashboardBuildListCases: the build list and the repository page's
// history show each build's JUnit test-case counts, summed over its tests
// and platforms as the build page's summary is, and a dash for a build
// without reports.
func TestDashboardBuildListCases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, nil)
	reported := enqueue(t, b, "acme/cases", "refs/heads/main", 0)
	plain := enqueue(t, b, "acme/cases", "refs/heads/dev", 0)
	green := enqueue(t, b, "acme/cases", "refs/heads/green", 0)
	setTests := func(id int64, tests []slipway.TestResult) {
		t.Helper()
		tj, err := json.Marshal(tests)
		require.NoError(t, err)
		_, err = b.db.Pool().Exec(ctx, `UPDATE builds SET tests = $2::jsonb WHERE id = $1`, id, tj)
		require.NoError(t, err)
	}
	setTests(reported.ID, []slipway.TestResult{
		{Name: "pytest", Platform: "linux/amd64", ExitCode: 1, Cases: &slipway.TestCaseCounts{Passed: 4, Failed: 1, Skipped: 2}},
		{Name: "pytest", Platform: "linux/arm64", ExitCode: 1, Cases: &slipway.TestCaseCounts{Passed: 3, Errors: 1, Skipped: 2}},
		{Name: "smoke", Platform: "linux/arm64", Passed: true},
	})
	setTests(plain.ID, []slipway.TestResult{{Name: "smoke", Platform: "linux/amd64", Passed: true}})
	setTests(green.ID, []slipway.TestResult{{Name: "go", Platform: "linux/amd64", Passed: true, Cases: &slipway.TestCaseCounts{Passed: 12}}})

	br := newBrowser(t, b.srv.URL)
	br.signIn(testToken)
	row := func(page string, id int64) string {
		t.Helper()
		start := strings.Index(page, fmt.Sprintf(`<tr data-id="%d">`, id))
		require.GreaterOrEqual(t, start, 0, "no row of build %d", id)
		end := strings.Index(page[start:], "</tr>")
		require.Greater(t, end, 0)
		return page[start : start+end]
	}
	for _, path := range []string{"/builds?repo=acme/cases", "/repos/acme/cases"} {
		resp, page := br.do(http.MethodGet, path, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, page)
		require.Contains(t, page, "<th>Test cases</th>", path)
		r := row(page, reported.ID)
		require.Contains(t, r, `<span class="cases bad" title="JUnit test cases: 7 passed, 1 failed, 1 errors, 4 skipped">7 passed, 1 failed, 1 errors, 4 skipped</span>`, path)
		require.Contains(t, row(page, green.ID), `<span class="cases" title="JUnit test cases: 12 passed, 0 failed, 0 errors, 0 skipped">12 passed, 0 failed, 0 skipped</span>`, path)
		r = row(page, plain.ID)
		require.NotContains(t, r, "passed", "%s: a build without reports shows no counts", path)
		require.Contains(t, r, `<span class="muted">—</span>`, path)
	}
}
