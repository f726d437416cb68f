package worker

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReleaseTags(t *testing.T) {
	t.Parallel()
	cfg, err := ParseRepoConfig(nil)
	require.NoError(t, err)
	r := cfg.Release
	for ref, want := range map[string][]string{
		"refs/tags/v1.2.3":      {"1.2.3", "1.2", "1", "latest"},
		"refs/tags/1.2.3":       {"1.2.3", "1.2", "1", "latest"},
		"refs/tags/v2.0.0-rc.1": {"2.0.0-rc.1"},
		"refs/tags/v1.2":        nil, // not v1.2.3 style
		"refs/tags/nightly":     nil,
		"refs/heads/v1.2.3":     nil, // a branch is never a release
		"refs/pull/1/head":      nil,
	} {
		got, ok := r.releaseTags(ref)
		require.Equal(t, want != nil, ok, ref)
		require.Equal(t, want, got, ref)
	}

	cfg, err = ParseRepoConfig([]byte("release:\n  pattern: '^release-[0-9]+$'\n  latest: false\n  untested: refuse\n"))
	require.NoError(t, err)
	got, ok := cfg.Release.releaseTags("refs/tags/release-7")
	require.True(t, ok)
	require.Equal(t, []string{"release-7"}, got)
	_, ok = cfg.Release.releaseTags("refs/tags/v1.2.3")
	require.False(t, ok, "the pattern decides")
	require.Equal(t, UntestedRefuse, cfg.Release.Untested)

	cfg, err = ParseRepoConfig([]byte("release:\n  latest: false\n"))
	require.NoError(t, err)
	got, _ = cfg.Release.releaseTags("refs/tags/v3.1.4")
	require.Equal(t, []string{"3.1.4", "3.1", "3"}, got)

	cfg, err = ParseRepoConfig([]byte("release:\n  enabled: false\n"))
	require.NoError(t, err)
	_, ok = cfg.Release.releaseTags("refs/tags/v1.2.3")
	require.False(t, ok)

	_, err = ParseRepoConfig([]byte("release:\n  pattern: '('\n"))
	require.ErrorContains(t, err, "release: pattern")
	_, err = ParseRepoConfig([]byte("release:\n  untested: maybe\n"))
	require.ErrorContains(t, err, "untested")
}
