package main

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var updateSettings = flag.Bool("update-settings", false, "rewrite deploy/settings.txt from the settings list")

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

// TestSettingsFile fails when deploy/settings.txt and the settings list differ,
// so neither the chart nor the compose file can drift from what slipway reads.
func TestSettingsFile(t *testing.T) {
	want := settingsFileText()
	if *updateSettings {
		require.NoError(t, os.WriteFile(settingsFile, []byte(want), 0o644))
	}
	got, err := os.ReadFile(settingsFile)
	require.NoError(t, err)
	require.Equal(t, want, string(got),
		"deploy/settings.txt is stale: run go test ./cmd/slipway -run TestSettingsFile -update-settings, then update deploy/helm and docker-compose.yml")
}
