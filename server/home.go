package server

import (
	"bytes"
	"net/http"

	"github.com/slipway-ci/slipway/web"
)

// handleHome answers GET / with the start page (the dashboard comes later): what
// slipway is and how to point a webhook at it.
func handleHome(publicURL string) http.HandlerFunc {
	tmpl, err := web.Templates()
	if err != nil {
		// The templates are embedded at build time; a parse error is a bug that
		// every test run would catch.
		panic(err)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		if err := tmpl.ExecuteTemplate(&buf, "home.html", struct{ PublicURL string }{publicURL}); err != nil {
			writeError(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(buf.Bytes())
	}
}
