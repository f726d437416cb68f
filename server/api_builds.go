package server

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog/hlog"
	"github.com/slipway-ci/slipway"
)

// maxBuildsLimit is the most builds one GET /api/v1/builds returns.
const maxBuildsLimit = 500

// handleBuildList answers GET /api/v1/builds: builds newest first, filtered by
// the query parameters repo (owner/name), ref, state, pull_request (a number),
// limit and before (an id, for paging).
func handleBuildList(builds slipway.BuildService) http.HandlerFunc {
	type response struct {
		Builds []*slipway.Build `json:"builds"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		f, err := buildFilter(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		list, err := builds.FindBuilds(r.Context(), f)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if list == nil {
			list = []*slipway.Build{}
		}
		writeJSON(w, r, http.StatusOK, response{Builds: list})
	}
}

// buildFilter reads a BuildFilter from the query string; EINVALID names the bad
// parameter.
func buildFilter(r *http.Request) (slipway.BuildFilter, error) {
	q := r.URL.Query()
	f := slipway.BuildFilter{Repo: q.Get("repo"), Ref: q.Get("ref")}
	if s := q.Get("state"); s != "" {
		f.State = slipway.BuildState(s)
		if !f.State.Valid() {
			names := make([]string, len(slipway.BuildStates))
			for i, st := range slipway.BuildStates {
				names[i] = string(st)
			}
			return f, slipway.Errorf(slipway.EINVALID, "Unknown state %q; use one of %s.", s, strings.Join(names, ", "))
		}
	}
	n, err := queryLimit(q, maxBuildsLimit)
	if err != nil {
		return f, err
	}
	f.Limit = n
	if s := q.Get("pull_request"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 999_999_999 {
			return f, slipway.Errorf(slipway.EINVALID, "pull_request must be a pull-request (merge-request) number.")
		}
		f.PullRequest = n
	}
	if s := q.Get("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return f, slipway.Errorf(slipway.EINVALID, "before must be a build id.")
		}
		f.Before = n
	}
	return f, nil
}

// handleBuildView answers GET /api/v1/builds/{id} with the build.
func handleBuildView(builds slipway.BuildService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := buildID(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		b, err := builds.FindBuildByID(r.Context(), id)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, b)
	}
}

// handleBuildTestCases answers GET /api/v1/builds/{id}/test-cases: the
// cases of the JUnit reports the build's tests wrote (.slipway.yml's junit),
// failed and error cases first, then skipped, then passed, as
// {"test_cases": [{test, platform, name, classname, time_seconds, status,
// message}]} (an empty list for a build without reports). The build's JSON
// carries only their counts (tests[].cases). 404 for no such build.
func handleBuildTestCases(builds slipway.BuildService, cases slipway.TestCaseService) http.HandlerFunc {
	type response struct {
		TestCases []slipway.TestCase `json:"test_cases"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if cases == nil {
			writeError(w, r, unavailable("The test cases"))
			return
		}
		b, err := requestBuild(r, builds)
		if err != nil {
			writeError(w, r, err)
			return
		}
		list, err := cases.FindTestCases(r.Context(), b.ID)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, response{TestCases: list})
	}
}

// handleBuildLogs answers GET /api/v1/builds/{id}/logs with the build's whole
// log as plain text, or with ?follow=1 as a live stream (see streamBuildLog),
// one of at most streams' cap (503 beyond it).
func handleBuildLogs(builds slipway.BuildService, follow slipway.LogFollower, streams *streamLimit) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := buildID(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		// WriteLog of a build that does not exist writes nothing, which would
		// read as an empty log.
		if _, err := builds.FindBuildByID(r.Context(), id); err != nil {
			writeError(w, r, err)
			return
		}
		if wantsFollow(r) {
			leave, ok := streams.enter(w, r)
			if !ok {
				return
			}
			defer leave()
			streamBuildLog(w, r, builds, follow, id)
			return
		}
		cw := &countingWriter{w: w}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if err := builds.WriteLog(r.Context(), id, cw); err != nil {
			if cw.n == 0 {
				writeError(w, r, err)
				return
			}
			// Part of the log is out with a 200. Aborting the response makes
			// the client see a broken transfer instead of a log that looks whole.
			if r.Context().Err() == nil {
				hlog.FromRequest(r).Error().Err(err).Int64("build_id", id).Msg("Writing build log")
			}
			panic(http.ErrAbortHandler)
		}
	}
}

// buildID reads the {id} URL parameter; EINVALID when it is not a build id.
func buildID(r *http.Request) (int64, error) {
	s := chi.URLParam(r, "id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, slipway.Errorf(slipway.EINVALID, "%q is not a build id.", s)
	}
	return id, nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// handleBuildCancel answers POST /api/v1/builds/{id}/cancel: a queued build ends
// canceled at once (200), a running one is told to stop (202; its worker ends
// the solve and the build canceled within seconds). A final build is 409.
func handleBuildCancel(builds slipway.BuildService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := buildID(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		b, err := builds.CancelBuild(r.Context(), id, "canceled through the API")
		if err != nil {
			writeError(w, r, err)
			return
		}
		status := http.StatusAccepted
		if b.State.Done() {
			status = http.StatusOK
		}
		writeJSON(w, r, status, b)
	}
}

// handleBuildApprove answers POST /api/v1/builds/{id}/approve: a fork's
// pull-request build that waits for approval may run (200 with the build);
// 409 when it waits for none.
func handleBuildApprove(builds slipway.BuildService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := buildID(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		b, err := builds.ApproveBuild(r.Context(), id, principalFrom(r.Context()).Name)
		if err != nil {
			writeError(w, r, err)
			return
		}
		hlog.FromRequest(r).Info().Int64("build_id", id).Msg("Build approved")
		writeJSON(w, r, http.StatusOK, b)
	}
}

// queryLimit reads the query's limit: 0 when there is none, EINVALID unless
// it is a whole number from 1 to most.
func queryLimit(q url.Values, most int) (int, error) {
	s := q.Get("limit")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > most {
		return 0, slipway.Errorf(slipway.EINVALID, "The limit must be a whole number from 1 to %d.", most)
	}
	return n, nil
}
