package server

import (
	_ "embed"
	"net/http"
)

// openAPI is the hand-written OpenAPI 3.1 description of the routes in routes.go.
//
//go:embed openapi.json
var openAPI []byte

// handleOpenAPI answers GET /api/v1/openapi.json.
func handleOpenAPI() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	}
}
