// Package web holds the dashboard's templates and static assets, embedded in the
// slipway binary so nothing the browser loads comes from outside slipway.
package web

import (
	"embed"
	"html/template"
)

// FS holds the templates and static files.
//
//go:embed templates
var FS embed.FS

// Templates parses every page template.
func Templates() (*template.Template, error) {
	return template.ParseFS(FS, "templates/*.html")
}
