package server

import (
	"net/http"
	"strconv"

	"github.com/slipway-ci/slipway"
)

// handlePromotionList answers GET /api/v1/promotions: the audit trail, newest
// first, filtered by repo (the target repository, or its owner/name ending),
// tag, build and limit.
func handlePromotionList(promotions slipway.PromotionService) http.HandlerFunc {
	type response struct {
		Promotions []*slipway.Promotion `json:"promotions"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if promotions == nil {
			writeError(w, r, unavailable("The promotion audit trail"))
			return
		}
		q := r.URL.Query()
		f := slipway.PromotionFilter{Repo: q.Get("repo"), Tag: q.Get("tag")}
		if s := q.Get("build"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 1 {
				writeError(w, r, slipway.Errorf(slipway.EINVALID, "build must be a build id, got %q.", s))
				return
			}
			f.BuildID = n
		}
		n, err := queryLimit(q, 500)
		if err != nil {
			writeError(w, r, err)
			return
		}
		f.Limit = n
		list, err := promotions.FindPromotions(r.Context(), f)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if list == nil {
			list = []*slipway.Promotion{}
		}
		writeJSON(w, r, http.StatusOK, response{Promotions: list})
	}
}
