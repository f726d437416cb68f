package server

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// readForgeFixture returns the bytes of one of slipway's own webhook samples
// of forge, which live with the parsers in forge/testdata/webhooks.
func readForgeFixture(t testing.TB, forge, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "forge", "testdata", "webhooks", forge, name))
	require.NoError(t, err)
	return b
}

// readFixture returns the bytes of one of slipway's own GitHub samples.
func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	return readForgeFixture(t, "github", name)
}
