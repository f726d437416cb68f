package worker

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// TestAllowedSubmoduleURL: a submodule URL from a push's .gitmodules reaches
// only the repository's own host (or an allowed one) over https, ssh or the
// repository's own scheme.
func TestAllowedSubmoduleURL(t *testing.T) {
	t.Parallel()
	base, err := url.Parse("https://git.example.com/team/app.git")
	require.NoError(t, err)
	allow := []string{"github.com", "mirror.example.com:8443"}
	tests := map[string]string{ // URL → "" (allowed) or part of the refusal
		"https://git.example.com/team/lib.git":      "",
		"ssh://git@git.example.com/team/lib.git":    "",
		"https://GIT.example.com/team/lib.git":      "",
		"https://github.com/other/lib.git":          "",
		"https://mirror.example.com:8443/lib.git":   "",
		"https://mirror.example.com/lib.git":        "neither the repository's",
		"https://git.example.com:8080/team/lib.git": "neither the repository's",
		"https://169.254.169.254/latest":            "SLIPWAY_SUBMODULE_HOSTS",
		"http://git.example.com/team/lib.git":       `scheme "http" is not allowed`,
		"git://git.example.com/team/lib.git":        `scheme "git" is not allowed`,
		"file:///etc/passwd":                        "not a URL with a scheme and a host",
		"ext::sh -c touch% /tmp/x":                  "not a URL",
		"git@github.com:other/lib.git":              "not a URL",
		"-uhelp":                                    "not a URL",
	}
	for raw, want := range tests {
		err := allowedSubmoduleURL(raw, base, allow)
		if want == "" {
			require.NoError(t, err, raw)
			continue
		}
		require.Error(t, err, raw)
		require.Contains(t, err.Error(), want, raw)
	}
}

func TestSubmodulesSetting(t *testing.T) {
	t.Parallel()
	on, err := ParseRepoConfig(nil)
	require.NoError(t, err)
	require.True(t, on.WantSubmodules(), "on by default")
	off, err := ParseRepoConfig([]byte("submodules: false\n"))
	require.NoError(t, err)
	require.False(t, off.WantSubmodules())
	_, err = ParseRepoConfig([]byte("submodules: maybe\n"))
	require.Error(t, err)
}

// TestAuthHint: a refused clone gets the setting to check; a failure that
// merely contains the digits 403 (a commit id) gets none.
func TestAuthHint(t *testing.T) {
	t.Parallel()
	for msg, want := range map[string]string{
		"git fetch: fatal: could not read Username for 'https://git.example.com': terminal prompts disabled": "the repository is private; set SLIPWAY_GITEA_TOKEN",
		"git fetch: fatal: Authentication failed for 'https://git.example.com/a/b.git/'":                     "the forge refused the credential: check SLIPWAY_GITEA_TOKEN",
		"git fetch: fatal: unable to access 'https://x/': The requested URL returned error: 403":             "the forge refused the credential",
		"git fetch: fatal: remote error: upload-pack: not our ref 34121f22baf3d403a0b79a3f4600f37d87151472":  "",
	} {
		got := authHint("gitea", errors.New(msg), false)
		if want == "" {
			require.Empty(t, got, msg)
			continue
		}
		require.Contains(t, got, want, msg)
	}
}

// TestGitmodulesCap: an oversize .gitmodules fails before git reads it.
func TestGitmodulesCap(t *testing.T) {
	t.Parallel()
	dir := gitCheckout(t, map[string]string{".gitmodules": strings.Repeat("# x\n", gitmodulesMaxBytes/4+1)}, nil)
	err := updateSubmodules(context.Background(), slipway.GitPolicy{}, dir, "https://git.example.com/a/b.git", nil, nil, func(string) {})
	require.EqualError(t, err, ".gitmodules is 1048580 bytes; slipway reads at most 1 MiB of it, so make it smaller")
}
