package server

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// TestOpenAPI checks that the hand-written document and routes.go describe the
// same routes, so neither can drift without this test failing.
func TestOpenAPI(t *testing.T) {
	t.Parallel()

	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	require.Equal(t, "3.1.0", doc.OpenAPI)

	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	// The dashboard's pages are HTML, not API.
	pages := map[string]bool{}
	dash := chi.NewRouter()
	newDashboard(zerolog.Nop(), Config{}, newAuthenticator("", nil), nil, Services{}).routes(dash)
	require.NoError(t, chi.Walk(dash, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		pages[method+" "+route] = true
		return nil
	}))
	require.Contains(t, pages, "GET /builds/{id}")
	routed := map[string]bool{}
	r := newRouter(zerolog.Nop(), Config{}.withDefaults(), nil, nil, Services{})
	require.NoError(t, chi.Walk(r, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if pages[method+" "+route] {
			return nil
		}
		routed[method+" "+route] = true
		return nil
	}))
	require.Equal(t, routed, documented)

	// Every API route says how it fails, and every POST but retry, cancel and approve takes a body.
	for path, ops := range doc.Paths {
		if !strings.HasPrefix(path, "/api/v1/") || path == "/api/v1/openapi.json" {
			continue
		}
		for method, op := range ops {
			responses, _ := op["responses"].(map[string]any)
			require.Contains(t, responses, "401", "%s %s documents its 401", method, path)
			if method == "post" && !strings.HasSuffix(path, "/retry") && !strings.HasSuffix(path, "/cancel") && !strings.HasSuffix(path, "/approve") {
				require.Contains(t, op, "requestBody", "%s %s documents its body", method, path)
			}
		}
	}

	// A build queued through the API without a commit answers commit ""
	// until the worker has resolved it; the schema must allow that.
	var schemas struct {
		Components struct {
			Schemas struct {
				Build struct {
					Properties map[string]struct {
						Pattern string `json:"pattern"`
					} `json:"properties"`
				} `json:"Build"`
			} `json:"schemas"`
		} `json:"components"`
	}
	require.NoError(t, json.Unmarshal(openAPI, &schemas))
	commit := regexp.MustCompile(schemas.Components.Schemas.Build.Properties["commit"].Pattern)
	require.True(t, commit.MatchString(""), "an unresolved build's commit")
	require.True(t, commit.MatchString(strings.Repeat("ab", 20)))
	require.False(t, commit.MatchString("main"))

	srv := newTestServer(t, nil)
	resp, out := getPath(t, srv, "/api/v1/openapi.json")
	require.Equal(t, http.StatusOK, resp.StatusCode, "the document needs no token")
	require.Equal(t, "3.1.0", out["openapi"])
}
