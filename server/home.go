package server

import (
	"io"
	"net/http"
)

// homePage stands in for the dashboard until it lands.
const homePage = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>slipway</title></head>
<body>
<h1>slipway is running</h1>
<p>The dashboard is not built yet. Builds are at <a href="/api/v1/builds">/api/v1/builds</a>
(send <code>Authorization: Bearer $SLIPWAY_ADMIN_TOKEN</code>); the API is described in
<a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.</p>
</body>
</html>
`

// handleHome answers GET / with a placeholder page.
func handleHome() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, homePage)
	}
}
