package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var updateSettings = flag.Bool("update-settings", false, "rewrite deploy/settings.txt, the README's settings table and the Helm values' setting comments from the settings list")

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

// valuesFile is the Helm chart's values.yaml, whose config and secrets maps
// hold one key per setting.
const valuesFile = "../../deploy/helm/slipway/values.yaml"

// chartNote starts the lines of a setting's values.yaml comment that the
// chart owns (what the chart does with the setting, which value of the chart
// sets it); withValuesComments keeps them below the generated text.
const chartNote = "# Chart: "

var valuesKey = regexp.MustCompile(`^  (SLIPWAY_[A-Z0-9_]+):`)

// valuesComment returns the helm-docs comment (`# -- …`) of s in values.yaml,
// indented by two spaces and wrapped before column 80: its Doc, what an empty
// value means (its Default), and which of the chart's processes read it.
func valuesComment(s setting) []string {
	text := "-- " + s.Doc
	if s.Default != "" {
		text += " Empty: " + s.Default + "."
	}
	var roles []string
	for _, r := range strings.Split(s.Roles, ", ") {
		switch r {
		case "all":
			roles = append(roles, "server, worker, migrate")
		case "server", "worker", "migrate":
			roles = append(roles, r)
		}
	}
	if len(roles) > 0 {
		text += " Read\x00by: " + strings.Join(roles, ", ") + "." // one word when wrapping
	}
	var lines []string
	line := "  #"
	for _, w := range strings.Fields(text) {
		if len(line)+1+len(w) > 79 && line != "  #" {
			lines = append(lines, line)
			line = "  #"
		}
		line += " " + strings.ReplaceAll(w, "\x00", " ")
	}
	return append(lines, line)
}

// withValuesComments returns values (values.yaml) with the comment above each
// key of its config and secrets maps made from the settings list: the
// generated lines replace the comment's other lines, and its chartNote lines
// follow them unchanged. A key that is no setting, or a secret setting under
// config (or a plain one under secrets), is an error.
func withValuesComments(values string) (string, error) {
	byName := map[string]setting{}
	for _, s := range settings {
		byName[s.Name] = s
	}
	var out []string
	block := ""
	for i, l := range strings.Split(values, "\n") {
		if l != "" && l[0] != ' ' && l[0] != '#' {
			block, _, _ = strings.Cut(l, ":")
		}
		m := valuesKey.FindStringSubmatch(l)
		if m == nil || (block != "config" && block != "secrets") {
			out = append(out, l)
			continue
		}
		s, ok := byName[m[1]]
		if !ok {
			return "", fmt.Errorf("values.yaml:%d: %s.%s is not a setting of cmd/slipway/config.go", i+1, block, m[1])
		}
		if s.Secret != (block == "secrets") {
			return "", fmt.Errorf("values.yaml:%d: %s belongs under %s", i+1, m[1], map[bool]string{true: "secrets", false: "config"}[s.Secret])
		}
		start := len(out)
		for start > 0 && strings.HasPrefix(out[start-1], "  #") {
			start--
		}
		var notes []string
		for _, c := range out[start:] {
			if strings.HasPrefix(strings.TrimSpace(c), chartNote) {
				notes = append(notes, c)
			}
		}
		out = append(append(append(out[:start], valuesComment(s)...), notes...), l)
	}
	return strings.Join(out, "\n"), nil
}

// TestSettingsFile fails when deploy/settings.txt, the README's settings
// table or the setting comments of the chart's values.yaml differ from the
// settings list, so neither the docs, the chart nor the compose file can
// drift from what slipway reads.
//
// Why values.yaml's comments are generated rather than compared: the
// settings list stays the one text a setting has (edit it, regenerate), as
// for the README, where a test comparing hand-written comments would keep
// two copies that must be edited alike. What only the chart knows (which of
// its values sets a setting, what it mounts) stays in values.yaml as
// "# Chart:" lines, which the generator keeps.
func TestSettingsFile(t *testing.T) {
	want := settingsFileText()
	readme, err := os.ReadFile(readmeFile)
	require.NoError(t, err)
	wantReadme, err := withSettingsTable(string(readme))
	require.NoError(t, err)
	values, err := os.ReadFile(valuesFile)
	require.NoError(t, err)
	wantValues, err := withValuesComments(string(values))
	require.NoError(t, err)
	if *updateSettings {
		require.NoError(t, os.WriteFile(settingsFile, []byte(want), 0o644))
		require.NoError(t, os.WriteFile(readmeFile, []byte(wantReadme), 0o644))
		require.NoError(t, os.WriteFile(valuesFile, []byte(wantValues), 0o644))
		readme, values = []byte(wantReadme), []byte(wantValues)
	}
	got, err := os.ReadFile(settingsFile)
	require.NoError(t, err)
	require.Equal(t, want, string(got),
		"deploy/settings.txt is stale: run go test ./cmd/slipway -run TestSettingsFile -update-settings, then update deploy/helm and docker-compose.yml")
	require.Equal(t, wantReadme, string(readme),
		"README.md's settings table is stale: edit the settings list in cmd/slipway/config.go, then run go test ./cmd/slipway -run TestSettingsFile -update-settings")
	require.Equal(t, wantValues, string(values),
		"deploy/helm/slipway/values.yaml's setting comments are stale: edit the settings list in cmd/slipway/config.go (or a \"# Chart:\" line), then run go test ./cmd/slipway -run TestSettingsFile -update-settings")
}

// TestValuesComments: the generated comment replaces a hand-written one,
// keeps the chart's own lines, wraps, and refuses keys that are no setting
// or sit in the wrong map.
func TestValuesComments(t *testing.T) {
	t.Parallel()
	in := "config:\n  # -- hand-written, stale\n  # Chart: the chart mounts an emptyDir there.\n  SLIPWAY_WORKSPACE_DIR: /w\n" +
		"secrets:\n  # -- old\n  SLIPWAY_INTEGRATION_SECRET: \"\"\nother:\n  # -- untouched\n  SLIPWAY_NOT_A_SETTING: 1\n"
	got, err := withValuesComments(in)
	require.NoError(t, err)
	require.Equal(t, "config:\n"+
		"  # -- Where checkouts are made (one folder per build, removed afterwards).\n"+
		"  # Empty: `$TMPDIR/slipway-work`. Read by: worker.\n"+
		"  # Chart: the chart mounts an emptyDir there.\n"+
		"  SLIPWAY_WORKSPACE_DIR: /w\n"+
		"secrets:\n"+
		"  # -- Key of the HMAC-SHA256 signature (`X-Slipway-Signature-256`) on calls to\n"+
		"  # a repository's `integration.webhook`. Builds that use one fail while it is\n"+
		"  # unset. Read by: worker.\n"+
		"  SLIPWAY_INTEGRATION_SECRET: \"\"\nother:\n  # -- untouched\n  SLIPWAY_NOT_A_SETTING: 1\n", got)
	again, err := withValuesComments(got)
	require.NoError(t, err)
	require.Equal(t, got, again, "generating twice changes nothing")

	_, err = withValuesComments("config:\n  SLIPWAY_NOPE: \"\"\n")
	require.EqualError(t, err, "values.yaml:2: config.SLIPWAY_NOPE is not a setting of cmd/slipway/config.go")
	_, err = withValuesComments("config:\n  SLIPWAY_ADMIN_TOKEN: \"\"\n")
	require.EqualError(t, err, "values.yaml:2: SLIPWAY_ADMIN_TOKEN belongs under secrets")
}
