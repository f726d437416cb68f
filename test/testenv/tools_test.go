package testenv

import (
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBuildKitToolsMatchClient: bin/buildkitd and bin/buildctl are built from
// test/tools/go.mod, slipway's BuildKit client from go.mod; a daemon of
// another version than the client is a setup nobody tested.
func TestBuildKitToolsMatchClient(t *testing.T) {
	version := func(path string) string {
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?github\.com/moby/buildkit (v\S+)`).FindSubmatch(data)
		require.NotNil(t, m, "%s requires github.com/moby/buildkit", path)
		return string(m[1])
	}
	require.Equal(t, version("../../go.mod"), version("../tools/go.mod"),
		"test/tools/go.mod must pin the BuildKit version of go.mod (go -C test/tools get github.com/moby/buildkit@VERSION)")
}
