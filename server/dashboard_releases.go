package server

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/slipway-ci/slipway"
)

// releasesData is what the releases page of a repository shows.
type releasesData struct {
	Repo     string
	Releases []*slipway.Release
}

// handleReleases answers GET /releases/{owner}/{name} (the repository's
// releases, newest first) and GET /releases/{owner}/{name}/{version} (one
// release). A GitLab owner may hold slashes, so the path is read whole: its
// last element is taken as a version first, and when the rest has no such
// release but the whole path names a repository with releases, its list is
// shown instead (/releases/group/sub/app).
func (d *dashboard) handleReleases(w http.ResponseWriter, r *http.Request) {
	if d.svc.Releases == nil {
		writeError(w, r, unavailable("The release records"))
		return
	}
	path := strings.Trim(chi.URLParam(r, "*"), "/")
	owner, name := slipway.SplitRepo(path)
	if owner == "" || name == "" {
		writeError(w, r, slipway.Errorf(slipway.ENOTFOUND, "No repository %s: the page of its releases is /releases/owner/name.", shortQuote(path)))
		return
	}
	if strings.Count(path, "/") >= 2 {
		i := strings.LastIndex(path, "/")
		v, err := loadRelease(r.Context(), d.svc.Releases, d.builds, d.cfg.PublicURL, path[:i], path[i+1:])
		if err == nil {
			d.render(w, r, http.StatusOK, "release.html", fmt.Sprintf("Release %s · %s", v.Version, v.Repo), "", v)
			return
		}
		if slipway.ErrorCode(err) != slipway.ENOTFOUND {
			writeError(w, r, err)
			return
		}
		list, lerr := d.svc.Releases.FindReleases(r.Context(), slipway.ReleaseFilter{Repo: path, Limit: 100})
		if lerr != nil || len(list) == 0 {
			writeError(w, r, err) // the release's own 404 says what is missing
			return
		}
		d.render(w, r, http.StatusOK, "releases.html", "Releases · "+path, "", releasesData{Repo: path, Releases: list})
		return
	}
	list, err := d.svc.Releases.FindReleases(r.Context(), slipway.ReleaseFilter{Repo: path, Limit: 100})
	if err != nil {
		writeError(w, r, err)
		return
	}
	d.render(w, r, http.StatusOK, "releases.html", "Releases · "+path, "", releasesData{Repo: path, Releases: list})
}
