package worker

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/forge"
)

// TestRepoToken: the repository's own token goes only to the build's own
// clone URL, and only while that has the origin of the registered clone URL.
func TestRepoToken(t *testing.T) {
	t.Parallel()
	build := &slipway.Build{Forge: slipway.ForgeGitLab, Repo: "acme/app", CloneURL: "https://git.example.com/acme/app.git"}
	rc := &slipway.RepoCredentials{CloneURL: "https://git.example.com/acme/app.git", CloneToken: "repo-token"}
	c, ok := repoToken(build, rc, build.CloneURL)
	require.True(t, ok)
	require.Equal(t, forge.Credential{Username: "oauth2", Password: "repo-token"}, c, "the forge's default username")

	named := *rc
	named.CloneUsername = "ci-bot"
	c, ok = repoToken(build, &named, build.CloneURL)
	require.True(t, ok)
	require.Equal(t, "ci-bot", c.Username)

	for _, u := range []string{
		"https://git.example.com/acme/lib.git",      // a submodule on the same host
		"https://other.example.com/acme/app.git",    // another host
		"http://git.example.com/acme/app.git",       // another scheme
		"https://git.example.com:8443/acme/app.git", // another port
	} {
		_, ok := repoToken(build, rc, u)
		require.False(t, ok, u)
	}
	moved := *build
	moved.CloneURL = "https://other.example.com/acme/app.git" // queued before the admin moved the repository
	_, ok = repoToken(&moved, rc, moved.CloneURL)
	require.False(t, ok)
	_, ok = repoToken(build, nil, build.CloneURL)
	require.False(t, ok)
	_, ok = repoToken(build, &slipway.RepoCredentials{CloneURL: rc.CloneURL}, build.CloneURL)
	require.False(t, ok, "no token stored")
}
