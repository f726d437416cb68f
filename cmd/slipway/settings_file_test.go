package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var updateSettings = flag.Bool("update-settings", false, "rewrite deploy/settings.txt and the README's settings table from the settings list")

// settingsFile is the settings list as the deploy tests read it: the Helm
// chart and docker-compose.yml live in another module (deploy/test), which
// cannot import package main, so they compare against this generated file.
const settingsFile = "../../deploy/settings.txt"

func settingsFileText() string {
	var b strings.Builder
	b.WriteString("# Every SLIPWAY_* variable slipway reads: name, secret or plain, the commands that read it.\n")
	b.WriteString("# Generated from the settings list in cmd/slipway/config.go; do not edit.\n")
	b.WriteString("# Regenerate: go test ./cmd/slipway -run TestSettingsFile -update-settings\n")
	for _, s := range settings {
		kind := "plain"
		if s.Secret {
			kind = "secret"
		}
		b.WriteString(s.Name + " " + kind + " " + strings.ReplaceAll(s.Roles, " ", "") + "\n")
	}
	return b.String()
}

const (
	readmeFile = "../../README.md"
	// tableHead is the README's settings table header; the rows after it
	// (up to the first line that is not a row) are generated.
	tableHead = "| variable | default | read by | meaning |\n| --- | --- | --- | --- |\n"
)

// settingsTable returns the README's settings table rows, one per setting
// in list order.
func settingsTable() string {
	var b strings.Builder
	for _, s := range settings {
		def := s.Default
		if def == "" {
			def = "—"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", s.Name, def, s.Roles, s.Doc)
	}
	return b.String()
}

// withSettingsTable returns readme with the rows after tableHead replaced by
// settingsTable; an error when the header is missing or appears twice.
func withSettingsTable(readme string) (string, error) {
	if n := strings.Count(readme, tableHead); n != 1 {
		return "", fmt.Errorf("README.md has the settings table header %d times, want once", n)
	}
	start := strings.Index(readme, tableHead) + len(tableHead)
	end := start
	for end < len(readme) && strings.HasPrefix(readme[end:], "| ") {
		next := strings.IndexByte(readme[end:], '\n')
		if next < 0 {
			end = len(readme)
			break
		}
		end += next + 1
	}
	return readme[:start] + settingsTable() + readme[end:], nil
}

// TestSettingsFile fails when deploy/settings.txt or the README's settings
// table differ from the settings list, so neither the docs, the chart nor
// the compose file can drift from what slipway reads.
func TestSettingsFile(t *testing.T) {
	want := settingsFileText()
	readme, err := os.ReadFile(readmeFile)
	require.NoError(t, err)
	wantReadme, err := withSettingsTable(string(readme))
	require.NoError(t, err)
	if *updateSettings {
		require.NoError(t, os.WriteFile(settingsFile, []byte(want), 0o644))
		require.NoError(t, os.WriteFile(readmeFile, []byte(wantReadme), 0o644))
		readme = []byte(wantReadme)
	}
	got, err := os.ReadFile(settingsFile)
	require.NoError(t, err)
	require.Equal(t, want, string(got),
		"deploy/settings.txt is stale: run go test ./cmd/slipway -run TestSettingsFile -update-settings, then update deploy/helm and docker-compose.yml")
	require.Equal(t, wantReadme, string(readme),
		"README.md's settings table is stale: edit the settings list in cmd/slipway/config.go, then run go test ./cmd/slipway -run TestSettingsFile -update-settings")
}
