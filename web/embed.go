// Package web holds the dashboard's templates and static assets, embedded in the
// slipway binary so nothing the browser loads comes from outside slipway.
package web

import (
	"embed"
	"html/template"
)

// FS holds the templates (templates/) and static files (static/).
//
//go:embed templates static
var FS embed.FS

// Templates parses every page template with the helper functions funcs.
func Templates(funcs template.FuncMap) (*template.Template, error) {
	return template.New("").Funcs(funcs).ParseFS(FS, "templates/*.html")
}
