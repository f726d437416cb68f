package server

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog/hlog"

	"github.com/slipway-ci/slipway"
)

// absTimeLayout is how the dashboard writes an absolute time (in UTC, the
// zone named; the browser's script rewrites it into the reader's zone).
const absTimeLayout = "2006-01-02 15:04:05 MST"

// absTime is t in absTimeLayout, UTC.
func absTime(t time.Time) string { return t.UTC().Format(absTimeLayout) }

// agoTime is a relative time ("4m 10s ago") in a <time> element whose title
// and datetime attribute hold the absolute time.
func agoTime(t time.Time) template.HTML {
	return template.HTML(fmt.Sprintf(`<time datetime="%s" title="%s">%s ago</time>`,
		t.UTC().Format(time.RFC3339), absTime(t), template.HTMLEscapeString(humanDuration(time.Since(t)))))
}

// atTime is an absolute time in a <time> element (the script shows it in
// the reader's zone), with the relative one in its title.
func atTime(t time.Time) template.HTML {
	return template.HTML(fmt.Sprintf(`<time class="when-abs" datetime="%s" data-ago="%s ago">%s</time>`,
		t.UTC().Format(time.RFC3339), template.HTMLEscapeString(humanDuration(time.Since(t))), absTime(t)))
}

// dashboardPageSize is how many builds a page of the build list shows.
const dashboardPageSize = 50

// reposData is what the repositories page shows.
type reposData struct {
	Repos []repoRow
}

type repoRow struct {
	Name   string // owner/name
	Forge  string
	Image  string
	Latest *slipway.Build // nil: never built
}

// handleRepos answers GET /repos: every repository with its latest build.
func (d *dashboard) handleRepos(w http.ResponseWriter, r *http.Request) {
	var rd reposData
	seen := map[string]bool{}
	if d.svc.Repos != nil {
		repos, err := d.svc.Repos.FindRepos(r.Context())
		if err != nil {
			writeError(w, r, err)
			return
		}
		for _, rp := range repos {
			if seen[rp.FullName()] {
				continue
			}
			seen[rp.FullName()] = true
			row := repoRow{Name: rp.FullName(), Forge: rp.Forge, Image: rp.Image}
			latest, err := d.builds.FindBuilds(r.Context(), slipway.BuildFilter{Repo: rp.FullName(), Limit: 1})
			if err != nil {
				writeError(w, r, err)
				return
			}
			if len(latest) > 0 {
				row.Latest = latest[0]
				if row.Image == "" {
					row.Image = latest[0].Image
				}
			}
			rd.Repos = append(rd.Repos, row)
		}
	}
	d.render(w, r, http.StatusOK, "repos.html", "Repositories", "repos", rd)
}

// buildsData is what the build list shows.
type buildsData struct {
	Filter    slipway.BuildFilter
	PR        string // the pull-request filter as typed
	States    []slipway.BuildState
	Builds    []*slipway.Build
	Older     string // query string of the next (older) page; "" on the last
	First     string // query string of the first page; "" on it
	Repos     []string
	Filtering bool
	// Cases are the builds' test-case counts (caseCounts), by build id.
	Cases map[int64]*slipway.TestCaseCounts
}

// caseCounts sums each build's JUnit test-case counts over its tests and
// platforms, as the build page's summary does; a build whose tests wrote no
// report has no entry.
func caseCounts(list []*slipway.Build) map[int64]*slipway.TestCaseCounts {
	out := map[int64]*slipway.TestCaseCounts{}
	for _, b := range list {
		for _, t := range b.Tests {
			c := t.Cases
			if c == nil {
				continue
			}
			sum := out[b.ID]
			if sum == nil {
				sum = &slipway.TestCaseCounts{}
				out[b.ID] = sum
			}
			sum.Passed += c.Passed
			sum.Failed += c.Failed
			sum.Errors += c.Errors
			sum.Skipped += c.Skipped
		}
	}
	return out
}

// handleBuilds answers GET /builds: builds newest first, filtered by
// repository, branch or tag, state and pull request, a page at a time (the
// query parameters of GET /api/v1/builds; before pages).
func (d *dashboard) handleBuilds(w http.ResponseWriter, r *http.Request) {
	f, err := buildFilter(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	f.Repo, f.Ref = strings.TrimSpace(f.Repo), strings.TrimSpace(f.Ref)
	f.Limit = dashboardPageSize + 1 // one more tells whether an older page exists
	list, err := d.builds.FindBuilds(r.Context(), f)
	if err != nil {
		writeError(w, r, err)
		return
	}
	bd := buildsData{Filter: f, States: slipway.BuildStates, Builds: list,
		Filtering: f.Repo != "" || f.Ref != "" || f.State != "" || f.PullRequest > 0}
	if f.PullRequest > 0 {
		bd.PR = strconv.Itoa(f.PullRequest)
	}
	q := url.Values{}
	for k, v := range map[string]string{"repo": f.Repo, "ref": f.Ref, "state": string(f.State), "pull_request": bd.PR} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if len(list) > dashboardPageSize {
		bd.Builds = list[:dashboardPageSize]
		older := url.Values{}
		for k, v := range q {
			older[k] = v
		}
		older.Set("before", strconv.FormatInt(bd.Builds[len(bd.Builds)-1].ID, 10))
		bd.Older = "?" + older.Encode()
	}
	if f.Before > 0 {
		bd.First = "?" + q.Encode()
	}
	bd.Cases = caseCounts(bd.Builds)
	if d.svc.Repos != nil {
		if repos, err := d.svc.Repos.FindRepos(r.Context()); err == nil {
			for _, rp := range repos {
				bd.Repos = append(bd.Repos, rp.FullName())
			}
		}
	}
	d.render(w, r, http.StatusOK, "builds.html", "Builds", "builds", bd)
}

// handleBuildRef answers the repository page's "Build this ref" form, POST
// /repos/{owner}/{name}/builds (the owner may hold GitLab subgroups): it
// queues ref (a branch, a tag or a full ref, at its current commit, or at
// commit when given) as POST /api/v1/repos/{owner}/{name}/builds does, and
// opens the new build. The build's sender names the token signed in; its
// message is the commit's subject, which the worker records. A refusal shows
// on the error page.
func (d *dashboard) handleBuildRef(w http.ResponseWriter, r *http.Request) {
	full, ok := strings.CutSuffix(chi.URLParam(r, "*"), "/builds")
	owner, name := slipway.SplitRepo(full)
	if !ok || owner == "" || name == "" {
		writeError(w, r, slipway.Errorf(slipway.ENOTFOUND, "There is no page at %s.", shortQuote(r.URL.Path)))
		return
	}
	t, image, err := refTrigger(r, d.builds, d.svc.Repos, owner, name, r.PostFormValue("ref"), r.PostFormValue("commit"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	res, err := d.builds.EnqueueTrigger(r.Context(), t, image)
	if err != nil {
		writeError(w, r, err)
		return
	}
	hlog.FromRequest(r).Info().Int64("build_id", res.Build.ID).Str("repo", owner+"/"+name).Str("ref", t.Ref).Msg("Build queued")
	http.Redirect(w, r, fmt.Sprintf("/builds/%d", res.Build.ID), http.StatusSeeOther)
}

// tokensData is what the tokens page shows.
type tokensData struct {
	Tokens  []*slipway.Token
	Roles   []slipway.Role
	Created *createdToken // the token just made, shown this once
	Name    string        // the create form's name, kept after a refusal
	Role    slipway.Role
	Refusal string
}

type createdToken struct {
	Name   string
	Role   slipway.Role
	Secret string
}

// tokenRoles lists the roles offered by the tokens page, weakest first.
var tokenRoles = []slipway.Role{slipway.RoleViewer, slipway.RoleDeveloper, slipway.RoleReleaseManager, slipway.RoleAdmin}

// handleTokens answers GET /tokens (admins): every API token, and a form
// that makes one.
func (d *dashboard) handleTokens(w http.ResponseWriter, r *http.Request) {
	d.renderTokens(w, r, http.StatusOK, tokensData{Role: slipway.RoleViewer})
}

func (d *dashboard) renderTokens(w http.ResponseWriter, r *http.Request, status int, td tokensData) {
	if d.svc.Tokens == nil {
		writeError(w, r, unavailable("Token storage"))
		return
	}
	list, err := d.svc.Tokens.FindTokens(r.Context())
	if err != nil {
		writeError(w, r, err)
		return
	}
	td.Tokens, td.Roles = list, tokenRoles
	// The page may show a new secret: keep it out of caches.
	w.Header().Set("Cache-Control", "no-store")
	d.render(w, r, status, "tokens.html", "Tokens", "tokens", td)
}

// handleTokenCreateForm answers POST /tokens: it makes a token and shows its
// secret once, or the page again with the refusal.
func (d *dashboard) handleTokenCreateForm(w http.ResponseWriter, r *http.Request) {
	if d.svc.Tokens == nil {
		writeError(w, r, unavailable("Token storage"))
		return
	}
	name, role := strings.TrimSpace(r.PostFormValue("name")), slipway.Role(r.PostFormValue("role"))
	secret := slipway.NewTokenSecret()
	t, err := d.svc.Tokens.CreateToken(r.Context(), name, role, secret)
	if err != nil {
		code := slipway.ErrorCode(err)
		if code != slipway.EINVALID && code != slipway.ECONFLICT {
			writeError(w, r, err)
			return
		}
		d.renderTokens(w, r, errorStatus[code], tokensData{Name: name, Role: role, Refusal: slipway.ErrorMessage(err)})
		return
	}
	hlog.FromRequest(r).Info().Int64("token_id", t.ID).Str("token_name", t.Name).Str("role", string(t.Role)).
		Str("actor", principalFrom(r.Context()).Name).Msg("Token created")
	d.renderTokens(w, r, http.StatusCreated, tokensData{Role: slipway.RoleViewer, Created: &createdToken{Name: t.Name, Role: t.Role, Secret: secret}})
}

// handleTokenDeleteForm answers POST /tokens/{id}/delete and goes back to the list.
func (d *dashboard) handleTokenDeleteForm(w http.ResponseWriter, r *http.Request) {
	if d.svc.Tokens == nil {
		writeError(w, r, unavailable("Token storage"))
		return
	}
	s := chi.URLParam(r, "id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		writeError(w, r, slipway.Errorf(slipway.EINVALID, "%q is not a token id.", s))
		return
	}
	if err := d.svc.Tokens.DeleteToken(r.Context(), id); err != nil {
		writeError(w, r, err)
		return
	}
	hlog.FromRequest(r).Info().Int64("token_id", id).Str("actor", principalFrom(r.Context()).Name).Msg("Token deleted")
	http.Redirect(w, r, "/tokens", http.StatusSeeOther)
}
