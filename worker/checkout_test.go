package worker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/test/testenv"
)

// TestCheckout is not parallel: it sets GIT_CONFIG_GLOBAL for the git processes
// checkout starts, to prove the user's git configuration applies.
func TestCheckout(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	first := testenv.NewGitRepo(t, filepath.Join(base, "app.git"), map[string]string{"Dockerfile": "FROM scratch\n"})
	second, err := testenv.CommitFiles(ctx, filepath.Join(base, "app.git"), map[string]string{"Dockerfile": "FROM scratch\nLABEL v=2\n"}, "second")
	require.NoError(t, err)
	daemonURL := testenv.ServeGit(t, base)

	// The clone URL a forge sends is rewritten by the user's insteadOf to our daemon.
	gitconfig := filepath.Join(t.TempDir(), "gitconfig")
	require.NoError(t, os.WriteFile(gitconfig, []byte("[url \""+daemonURL+"\"]\n\tinsteadOf = https://forge.invalid/acme/\n"), 0o600))
	t.Setenv("GIT_CONFIG_GLOBAL", gitconfig)

	t.Run("ExactOlderCommit", func(t *testing.T) {
		dir := t.TempDir()
		var lines []string
		require.NoError(t, checkout(ctx, dir, "https://forge.invalid/acme/app.git", "refs/heads/main", first, func(s string) { lines = append(lines, s) }))
		data, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
		require.NoError(t, err)
		require.Equal(t, "FROM scratch\n", string(data), "the pushed commit, not the branch head")
		require.Contains(t, lines, "checked out "+first)
		require.NotEqual(t, first, second)
	})

	t.Run("PullRequestHeadOnlyInPullRef", func(t *testing.T) {
		// A fork's head commit is reachable only from the base repository's
		// refs/pull/N/head, never from a branch.
		repo := filepath.Join(base, "app.git")
		tree := gitOut(t, repo, "rev-parse", "HEAD^{tree}")
		head := gitOut(t, repo, "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit-tree", "-p", second, "-m", "pr head", tree)
		gitOut(t, repo, "update-ref", "refs/pull/7/head", head)
		dir := t.TempDir()
		var lines []string
		require.NoError(t, checkout(ctx, dir, "https://forge.invalid/acme/app.git", "refs/pull/7/head", head, func(s string) { lines = append(lines, s) }))
		require.Contains(t, lines, "checked out "+head)
		require.Contains(t, strings.Join(lines, "\n"), "+refs/pull/7/head:refs/slipway/pull", "the pull-request ref of the base repository is fetched")
		require.Equal(t, head, gitOut(t, dir, "rev-parse", "refs/slipway/pull"))
	})

	t.Run("UnknownCommit", func(t *testing.T) {
		err := checkout(ctx, t.TempDir(), "https://forge.invalid/acme/app.git", "refs/heads/main", "0123456789abcdef0123456789abcdef01234567", func(string) {})
		require.ErrorContains(t, err, "git fetch")
	})

	t.Run("CredentialsNotInError", func(t *testing.T) {
		err := checkout(ctx, t.TempDir(), "http://user:s3cret@127.0.0.1:1/acme/app.git", "refs/heads/main", first, func(s string) {
			require.NotContains(t, s, "s3cret")
		})
		require.Error(t, err)
		require.NotContains(t, err.Error(), "s3cret")
	})
}

func gitOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	require.NoError(t, err, string(out))
	return strings.TrimSpace(string(out))
}
