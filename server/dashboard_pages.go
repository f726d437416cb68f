package server

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/promote"
)

// dashboardFuncs are the template helpers.
var dashboardFuncs = template.FuncMap{
	"refName":  slipway.RefName,
	"short":    shortCommit,
	"commitOf": buildCommit,
	"dur":      humanDuration,
	"ago":      agoTime,
	"abs":      absTime,
	"at":       atTime,
	"unix":     func(t time.Time) int64 { return t.UnixMilli() },
	"shortDig": shortDigest,
	"stateIcon": func(s slipway.BuildState) string {
		switch s {
		case slipway.BuildSucceeded:
			return "✓"
		case slipway.BuildFailed:
			return "✕"
		case slipway.BuildCanceled:
			return "⊘"
		case slipway.BuildQueued:
			return "…"
		}
		return "●"
	},
	"buildDur": func(b *slipway.Build) string {
		if b.StartedAt == nil {
			return ""
		}
		end := time.Now()
		if b.FinishedAt != nil {
			end = *b.FinishedAt
		}
		return humanDuration(end.Sub(*b.StartedAt))
	},
}

func shortCommit(c string) string {
	if len(c) > 8 {
		return c[:8]
	}
	return c
}

// buildCommit is the short commit a page shows for b: "resolving…" while the
// worker has not resolved the ref of a build queued without a commit, "—"
// for one that ended before it was resolved.
func buildCommit(b *slipway.Build) string {
	switch {
	case b.Commit != "":
		return shortCommit(b.Commit)
	case b.State.Done():
		return "—"
	}
	return "resolving…"
}

func shortDigest(d string) string {
	if h, ok := strings.CutPrefix(d, "sha256:"); ok && len(h) > 12 {
		return "sha256:" + h[:12]
	}
	return d
}

// humanDuration writes d as "4s", "3m 20s", "2h 5m".
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh %02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// nowData is what the Now page shows.
type nowData struct {
	Running []runningBuild
	Queued  []queuedBuild
	Recent  []*slipway.Build
	Typical time.Duration // mean duration of recent finished builds
}

type runningBuild struct {
	*slipway.Build
	Steps []slipway.PlatformStep // current step per platform
}

type queuedBuild struct {
	*slipway.Build
	Waited   time.Duration
	StartsIn time.Duration // from now; 0: any moment; below 0: unknown
}

// loadNow reads the builds of the Now page: running and testing ones with
// each platform's current step, queued ones oldest first with an estimated
// start, and the last finished ones. Five queries, whatever the number of
// running builds.
func (d *dashboard) loadNow(ctx context.Context) (*nowData, error) {
	var n nowData
	var ids []int64
	for _, st := range []slipway.BuildState{slipway.BuildRunning, slipway.BuildTesting} {
		list, err := d.builds.FindBuilds(ctx, slipway.BuildFilter{State: st, Limit: 100})
		if err != nil {
			return nil, err
		}
		for _, b := range list {
			ids = append(ids, b.ID)
			n.Running = append(n.Running, runningBuild{Build: b})
		}
	}
	steps, err := d.builds.FindBuildSteps(ctx, ids)
	if err != nil {
		return nil, err
	}
	for i := range n.Running {
		n.Running[i].Steps = nowSteps(steps[n.Running[i].ID])
	}
	sort.Slice(n.Running, func(i, j int) bool { return n.Running[i].ID < n.Running[j].ID })
	queued, err := d.builds.FindBuilds(ctx, slipway.BuildFilter{State: slipway.BuildQueued, Limit: 100})
	if err != nil {
		return nil, err
	}
	recent, err := d.builds.FindBuilds(ctx, slipway.BuildFilter{Limit: 60})
	if err != nil {
		return nil, err
	}
	// Typical durations: of each repository's recent succeeded builds, and of
	// all of them.
	type acc struct {
		total time.Duration
		count int
	}
	perRepo := map[string]*acc{}
	var all acc
	for _, b := range recent {
		if !b.State.Done() || b.StartedAt == nil || b.FinishedAt == nil {
			continue
		}
		if len(n.Recent) < 15 {
			n.Recent = append(n.Recent, b)
		}
		if b.State == slipway.BuildSucceeded {
			took := b.FinishedAt.Sub(*b.StartedAt)
			all.total += took
			all.count++
			a := perRepo[b.Repo]
			if a == nil {
				a = &acc{}
				perRepo[b.Repo] = a
			}
			a.total += took
			a.count++
		}
	}
	if all.count > 0 {
		n.Typical = all.total / time.Duration(all.count)
	}
	expected := func(repo string) time.Duration {
		if a := perRepo[repo]; a != nil {
			return a.total / time.Duration(a.count)
		}
		return n.Typical
	}
	n.Queued = estimateQueue(time.Now(), n.Running, queued, expected)
	return &n, nil
}

// nowSteps is what a running build's card lists: the step of each platform,
// and the step of no platform (checkout, push) only until a platform has one.
func nowSteps(steps []slipway.PlatformStep) []slipway.PlatformStep {
	if len(steps) > 1 && steps[0].Platform == "" {
		return steps[1:]
	}
	return steps
}

// estimateQueue returns the queued builds (given newest first, as the store
// lists them) oldest first, each with when it should start: the builds
// running now free their lanes once they have run as long as their
// repository's builds usually take (expected), and each queued build, in
// order, takes the lane that frees first and holds it for its own expected
// time. As many lanes as builds run now (at least one). A running build past
// its usual time frees its lane "any moment" (a start in 0: shown as such);
// without any history StartsIn stays unknown (-1).
func estimateQueue(now time.Time, running []runningBuild, queued []*slipway.Build, expected func(repo string) time.Duration) []queuedBuild {
	var lanes []time.Duration // when each lane frees, from now
	known := true
	for _, b := range running {
		e := expected(b.Repo)
		if e <= 0 {
			known = false
			continue
		}
		left := e
		if b.StartedAt != nil {
			left = max(e-now.Sub(*b.StartedAt), 0)
		}
		lanes = append(lanes, left)
	}
	if len(lanes) == 0 && known {
		lanes = append(lanes, 0)
	}
	out := make([]queuedBuild, 0, len(queued))
	for i := len(queued) - 1; i >= 0; i-- { // oldest first
		b := queued[i]
		q := queuedBuild{Build: b, Waited: now.Sub(b.CreatedAt), StartsIn: -1}
		e := expected(b.Repo)
		if known && len(lanes) > 0 {
			first := 0
			for j := range lanes {
				if lanes[j] < lanes[first] {
					first = j
				}
			}
			q.StartsIn = lanes[first]
			if e > 0 {
				lanes[first] += e
			} else {
				known = false // nothing tells how long this one holds its lane
			}
		}
		out = append(out, q)
	}
	return out
}

// handleNow answers GET / with the Now page.
func (d *dashboard) handleNow(w http.ResponseWriter, r *http.Request) {
	n, err := d.loadNow(r.Context())
	if err != nil {
		writeError(w, r, err)
		return
	}
	d.render(w, r, http.StatusOK, "now.html", "Now", "now", n)
}

// renderNowBody loads and renders the body of the Now page, as its live
// viewers get it. It depends on no viewer (the template "now-body" uses no
// page.Who), so one render serves them all (see nowHub).
func (d *dashboard) renderNowBody(ctx context.Context) ([]byte, error) {
	n, err := d.loadNow(ctx)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := d.tmpl.ExecuteTemplate(&buf, "now-body", page{PublicURL: d.cfg.PublicURL, Data: n}); err != nil {
		return nil, fmt.Errorf("rendering the Now page: %w", err)
	}
	return buf.Bytes(), nil
}

// handleNowEvents answers GET /events/now with Server-Sent Events: a "now"
// event with the page's body at once and whenever it changes. The body comes
// from d.now, rendered once per change for every viewer.
func (d *dashboard) handleNowEvents(w http.ResponseWriter, r *http.Request) {
	flusher := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = flusher.Flush()
	bodies, leave := d.now.subscribe()
	defer leave()
	for {
		select {
		case <-r.Context().Done():
			return
		case body := <-bodies:
			var out bytes.Buffer
			out.WriteString("event: now\n")
			for _, line := range bytes.Split(body, []byte("\n")) {
				out.WriteString("data: ")
				out.Write(line)
				out.WriteString("\n")
			}
			out.WriteString("\n")
			if _, err := w.Write(out.Bytes()); err != nil {
				return
			}
			_ = flusher.Flush()
		}
	}
}

// buildData is what the build page shows.
type buildData struct {
	*slipway.Build
	QueuedFor     time.Duration
	PlatformNames []string
	TestsBy       map[string][]slipway.TestResult
	Promotions    []*slipway.Promotion
	// Releases are the versions released from this build (tested or tag).
	Releases []*slipway.Release
	// Cases are the counts of the tests' JUnit report cases, in all and per
	// platform (CasesBy), nil without reports; CaseList the cases, failed
	// first, at most maxPageCases of them (CasesCut tells the rest).
	Cases    *slipway.TestCaseCounts
	CasesBy  map[string]*slipway.TestCaseCounts
	CaseList []slipway.TestCase
	CasesCut int
}

// maxPageCases bounds the test cases the build page lists; the API has all.
const maxPageCases = 500

// handleBuild answers GET /builds/{id} with the build page.
func (d *dashboard) handleBuild(w http.ResponseWriter, r *http.Request) {
	b, err := requestBuild(r, d.builds)
	if err != nil {
		writeError(w, r, err)
		return
	}
	bd := buildData{Build: b, TestsBy: map[string][]slipway.TestResult{}}
	if b.StartedAt != nil {
		bd.QueuedFor = b.StartedAt.Sub(b.CreatedAt)
	}
	seen := map[string]bool{}
	add := func(p string) {
		if p != "" && !seen[p] {
			seen[p] = true
			bd.PlatformNames = append(bd.PlatformNames, p)
		}
	}
	for _, p := range b.Platforms {
		add(p.Platform)
	}
	for _, p := range b.TargetPlatforms {
		add(p)
	}
	for _, t := range b.Tests {
		add(t.Platform)
		bd.TestsBy[t.Platform] = append(bd.TestsBy[t.Platform], t)
		if c := t.Cases; c != nil {
			if bd.Cases == nil {
				bd.Cases, bd.CasesBy = &slipway.TestCaseCounts{}, map[string]*slipway.TestCaseCounts{}
			}
			by := bd.CasesBy[t.Platform]
			if by == nil {
				by = &slipway.TestCaseCounts{}
				bd.CasesBy[t.Platform] = by
			}
			for _, sum := range []*slipway.TestCaseCounts{bd.Cases, by} {
				sum.Passed, sum.Failed, sum.Errors, sum.Skipped = sum.Passed+c.Passed, sum.Failed+c.Failed, sum.Errors+c.Errors, sum.Skipped+c.Skipped
			}
		}
	}
	if bd.Cases != nil && d.svc.TestCases != nil {
		list, err := d.svc.TestCases.FindTestCases(r.Context(), b.ID)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if len(list) > maxPageCases {
			bd.CasesCut = len(list) - maxPageCases
			list = list[:maxPageCases]
		}
		bd.CaseList = list
	}
	if d.svc.Promotions != nil {
		bd.Promotions, err = d.svc.Promotions.FindPromotions(r.Context(), slipway.PromotionFilter{BuildID: b.ID, Limit: 20})
		if err != nil {
			writeError(w, r, err)
			return
		}
	}
	if d.svc.Releases != nil && b.State == slipway.BuildSucceeded {
		bd.Releases, err = d.svc.Releases.FindReleases(r.Context(), slipway.ReleaseFilter{BuildID: b.ID, Limit: 20})
		if err != nil {
			writeError(w, r, err)
			return
		}
	}
	d.render(w, r, http.StatusOK, "build.html", fmt.Sprintf("Build %d · %s", b.ID, b.Repo), "", bd)
}

// repoData is what the repository page shows.
type repoData struct {
	Repo   string
	Image  string
	Refs   []*slipway.Build // latest build of each branch and tag
	Builds []*slipway.Build
	Chart  template.HTML
	// Cases are the builds' test-case counts (caseCounts), by build id.
	Cases map[int64]*slipway.TestCaseCounts
	// DefaultRef fills the "Build this ref" form: the default branch, else
	// the branch of the latest build.
	DefaultRef string
}

// handleRepo answers GET /repos/{owner}/{name}; the owner of a GitLab
// project in a subgroup holds slashes (/repos/group/sub/project).
func (d *dashboard) handleRepo(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "*")
	owner, repo := slipway.SplitRepo(name)
	if owner == "" || repo == "" {
		writeError(w, r, slipway.Errorf(slipway.ENOTFOUND, "No repository %s.", shortQuote(name)))
		return
	}
	list, err := d.builds.FindBuilds(r.Context(), slipway.BuildFilter{Repo: name, Limit: 100})
	if err != nil {
		writeError(w, r, err)
		return
	}
	if len(list) == 0 && d.svc.Repos != nil {
		if _, err := d.svc.Repos.FindRepo(r.Context(), slipway.RepoKey{Forge: "github", Owner: owner, Name: repo}); err != nil &&
			slipway.ErrorCode(err) == slipway.ENOTFOUND {
			found := false
			if all, err := d.svc.Repos.FindRepos(r.Context()); err == nil {
				for _, rp := range all {
					if strings.EqualFold(rp.Owner+"/"+rp.Name, name) {
						found = true
					}
				}
			}
			if !found {
				writeError(w, r, slipway.Errorf(slipway.ENOTFOUND, "No repository %s: push to it once the webhook points here, or add it with POST /api/v1/repos.", name))
				return
			}
		}
	}
	rd := repoData{Repo: name, Builds: list, Cases: caseCounts(list)}
	seen := map[string]bool{}
	for _, b := range list {
		rd.Image = b.Image
		if !seen[b.Ref] {
			seen[b.Ref] = true
			rd.Refs = append(rd.Refs, b)
		}
	}
	rd.Chart = durationChart(list)
	for _, b := range list {
		if strings.HasPrefix(b.Ref, "refs/heads/") {
			rd.DefaultRef = slipway.RefName(b.Ref)
			break
		}
	}
	if d.svc.Repos != nil && len(list) > 0 {
		owner, repo, _ := strings.Cut(list[0].Repo, "/")
		if rp, err := d.svc.Repos.FindRepo(r.Context(), slipway.RepoKey{Forge: list[0].Forge, Owner: owner, Name: repo}); err == nil && rp.DefaultBranch != "" {
			rd.DefaultRef = rp.DefaultBranch
		}
	}
	d.render(w, r, http.StatusOK, "repo.html", name, "", rd)
}

// durationChart draws the build duration (bars) and queue wait (stacked below
// the bar's start) of the last 30 finished builds, oldest on the left, as SVG.
func durationChart(list []*slipway.Build) template.HTML {
	var pts []*slipway.Build
	for _, b := range list {
		if b.StartedAt != nil && b.FinishedAt != nil {
			pts = append(pts, b)
		}
		if len(pts) == 30 {
			break
		}
	}
	if len(pts) < 2 {
		return ""
	}
	var top float64 = 1
	for _, b := range pts {
		top = math.Max(top, b.FinishedAt.Sub(b.CreatedAt).Seconds())
	}
	const w, h, bw = 600.0, 120.0, 16.0
	gap := (w - bw*30) / 30
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="Duration and queue wait of the last %d builds">`, w, h+18, len(pts))
	for i := range pts {
		b := pts[len(pts)-1-i]
		run := b.FinishedAt.Sub(*b.StartedAt).Seconds()
		wait := b.StartedAt.Sub(b.CreatedAt).Seconds()
		x := float64(i)*(bw+gap) + gap/2
		rh, wh := run/top*h, wait/top*h
		fmt.Fprintf(&sb, `<a href="/builds/%d"><title>#%d %s: ran %s, waited %s</title>`, b.ID, b.ID, b.State,
			humanDuration(time.Duration(run*float64(time.Second))), humanDuration(time.Duration(wait*float64(time.Second))))
		fmt.Fprintf(&sb, `<rect class="bar %s" x="%.1f" y="%.1f" width="%.0f" height="%.1f" rx="2"/>`, b.State, x, h-rh-wh, bw, math.Max(rh, 1))
		fmt.Fprintf(&sb, `<rect class="wait" x="%.1f" y="%.1f" width="%.0f" height="%.1f"/></a>`, x, h-wh, bw, wh)
	}
	fmt.Fprintf(&sb, `<text x="0" y="%.0f" class="axis">longest %s · bar: run, light: queue wait</text></svg>`, h+15, humanDuration(time.Duration(top*float64(time.Second))))
	return template.HTML(sb.String())
}

// handlePromotions answers GET /promotions: the audit trail with filters.
func (d *dashboard) handlePromotions(w http.ResponseWriter, r *http.Request) {
	if d.svc.Promotions == nil {
		writeError(w, r, unavailable("The promotion audit trail"))
		return
	}
	q := r.URL.Query()
	f := slipway.PromotionFilter{Repo: strings.TrimSpace(q.Get("repo")), Tag: strings.TrimSpace(q.Get("tag")), Limit: 200}
	if s := strings.TrimSpace(q.Get("build")); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			writeError(w, r, slipway.Errorf(slipway.EINVALID, "build must be a build id, got %q.", s))
			return
		}
		f.BuildID = n
	}
	list, err := d.svc.Promotions.FindPromotions(r.Context(), f)
	if err != nil {
		writeError(w, r, err)
		return
	}
	d.render(w, r, http.StatusOK, "promotions.html", "Promotions", "promotions", struct {
		Filter slipway.PromotionFilter
		List   []*slipway.Promotion
	}{f, list})
}

// promoteData is what the promotion confirmation and result show.
type promoteData struct {
	Build      *slipway.Build
	Repository string
	Tags       []string
	TagsText   string
	Force      bool
	Changes    []promoteChange
	Result     *promote.Result
	Refusal    string
}

type promoteChange struct {
	Tag, Now, Will string
	// Version: the tag looks like a version, so it is immutable once set.
	Version bool
	// Refused: a version tag that points elsewhere, without an admin's
	// Force: the promotion would be refused as a whole.
	Refused bool
	// Overwrite: Force will move a released version tag.
	Overwrite bool
}

// Refused tells whether any change of the preview would be refused.
func (pd promoteData) Refused() bool {
	for _, c := range pd.Changes {
		if c.Refused {
			return true
		}
	}
	return false
}

// Overwrites tells whether Force will move a released version tag.
func (pd promoteData) Overwrites() bool {
	for _, c := range pd.Changes {
		if c.Overwrite {
			return true
		}
	}
	return false
}

// handlePromote answers the promote form: without confirm=yes it shows what
// each tag points at now and will point at; with it, it promotes through
// promoteBuild, as the API does, and shows the result or the refusal.
func (d *dashboard) handlePromote(w http.ResponseWriter, r *http.Request) {
	b, err := requestBuild(r, d.builds)
	if err != nil {
		writeError(w, r, err)
		return
	}
	req := promoteRequest{Tags: strings.FieldsFunc(r.PostFormValue("tags"), func(c rune) bool { return c == ',' || c == ' ' || c == '\n' }),
		Repository: strings.TrimSpace(r.PostFormValue("repository")), Force: r.PostFormValue("force") == "on"}
	pd := promoteData{Build: b, Repository: req.Repository, Tags: req.Tags, TagsText: strings.Join(req.Tags, " "), Force: req.Force}
	if pd.Repository == "" {
		pd.Repository = b.Image
	}
	status := http.StatusOK
	if r.PostFormValue("confirm") == "yes" {
		pd.Result, err = promoteBuild(r, b, req, d.cfg, d.svc)
	} else {
		// A preview runs the same rules first, so a refusal shows before the
		// confirmation, without writing an audit row.
		err = (&promote.Request{Build: b, Tags: req.Tags, Target: req.Repository}).Validate()
		if err == nil && !principalFrom(r.Context()).Role.Allows(slipway.RoleReleaseManager) {
			_, err = promoteBuild(r, b, req, d.cfg, d.svc)
		}
		if err == nil && b.State != slipway.BuildSucceeded {
			err = slipway.Errorf(slipway.ECONFLICT, "Build %d is %s. Only a succeeded build (every test passed on every platform) can be promoted.", b.ID, b.State)
		}
		var prev []string
		if err == nil {
			prev, err = previewPromotion(r.Context(), b, req, d.cfg, d.svc)
		}
		force := req.Force && principalFrom(r.Context()).Role.Allows(slipway.RoleAdmin)
		for i, t := range req.Tags {
			c := promoteChange{Tag: t, Will: b.IndexDigest, Version: slipway.IsVersionTag(t)}
			if i < len(prev) {
				c.Now = prev[i]
			}
			if c.Version && c.Now != "" && c.Now != c.Will {
				c.Refused, c.Overwrite = !force, force
			}
			pd.Changes = append(pd.Changes, c)
		}
	}
	if err != nil {
		code := slipway.ErrorCode(err)
		if code == slipway.EINTERNAL || code == slipway.EUNAVAILABLE {
			writeError(w, r, err)
			return
		}
		status = errorStatus[code]
		pd.Refusal = slipway.ErrorMessage(err)
	}
	d.render(w, r, status, "promote.html", fmt.Sprintf("Promote build %d", b.ID), "", pd)
}
