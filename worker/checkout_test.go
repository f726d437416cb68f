package worker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// devGit is the policy of the tests' git daemon (git://) repositories.
var devGit = slipway.GitPolicy{DevProtocols: true}

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
		require.NoError(t, checkout(ctx, devGit, dir, "https://forge.invalid/acme/app.git", "refs/heads/main", first, func(s string) { lines = append(lines, s) }))
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
		require.NoError(t, checkout(ctx, devGit, dir, "https://forge.invalid/acme/app.git", "refs/pull/7/head", head, func(s string) { lines = append(lines, s) }))
		require.Contains(t, lines, "checked out "+head)
		require.Contains(t, strings.Join(lines, "\n"), "+refs/pull/7/head:refs/slipway/pull", "the pull-request ref of the base repository is fetched")
		require.Equal(t, head, gitOut(t, dir, "rev-parse", "refs/slipway/pull"))
	})

	t.Run("UnknownCommit", func(t *testing.T) {
		err := checkout(ctx, devGit, t.TempDir(), "https://forge.invalid/acme/app.git", "refs/heads/main", "0123456789abcdef0123456789abcdef01234567", func(string) {})
		require.ErrorContains(t, err, "git fetch")
		require.ErrorContains(t, err, "is not in the repository (no branch or tag reaches it)")
	})

	t.Run("CredentialsNotInError", func(t *testing.T) {
		err := checkout(ctx, devGit, t.TempDir(), "http://user:s3cret@127.0.0.1:1/acme/app.git", "refs/heads/main", first, func(s string) {
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

// TestCheckoutGitEnvironment: git runs without slipway's own variables (a
// wrapper first on PATH records git's environment), with only the policy's
// transports; a git:// URL fails before any git runs unless the policy allows
// development transports.
func TestCheckoutGitEnvironment(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	commit := testenv.NewGitRepo(t, filepath.Join(base, "app.git"), map[string]string{"Dockerfile": "FROM scratch\n"})
	daemonURL := testenv.ServeGit(t, base)
	real, err := exec.LookPath("git")
	require.NoError(t, err)
	bin, record := t.TempDir(), filepath.Join(t.TempDir(), "env")
	require.NoError(t, os.WriteFile(filepath.Join(bin, "git"), []byte("#!/bin/sh\nenv >> "+record+"\nexec "+real+" \"$@\"\n"), 0o755))
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	t.Setenv("SLIPWAY_SECRET_KEY", "the-worker-secret-key-0123456789")
	t.Setenv("SLIPWAY_DATABASE_URL", "postgres://slipway:db-password@db/slipway")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "some-other-secret")

	require.NoError(t, checkout(ctx, devGit, t.TempDir(), daemonURL+"app.git", "refs/heads/main", commit, func(string) {}))
	// The ls-remote that resolves an API build's ref runs the same way.
	remote, err := lsRemoteRef(ctx, devGit, daemonURL+"app.git", "main")
	require.NoError(t, err)
	require.Equal(t, remoteRef{Ref: "refs/heads/main", Commit: commit}, remote)
	env, err := os.ReadFile(record)
	require.NoError(t, err)
	for _, leak := range []string{"the-worker-secret-key", "db-password", "some-other-secret", "SLIPWAY_"} {
		require.NotContains(t, string(env), leak)
	}
	require.Contains(t, string(env), "GIT_ALLOW_PROTOCOL=https:ssh:git:http:file")
	require.Contains(t, string(env), "GIT_TERMINAL_PROMPT=0")

	require.NoError(t, os.Remove(record))
	err = checkout(ctx, slipway.GitPolicy{}, t.TempDir(), daemonURL+"app.git", "refs/heads/main", commit, func(string) {})
	require.ErrorContains(t, err, "SLIPWAY_GIT_DEV_PROTOCOLS")
	_, statErr := os.Stat(record)
	require.True(t, os.IsNotExist(statErr), "no git ran for a refused URL")
	_, err = lsRemoteRef(ctx, slipway.GitPolicy{}, daemonURL+"app.git", "main")
	require.ErrorContains(t, err, "SLIPWAY_GIT_DEV_PROTOCOLS")
	_, statErr = os.Stat(record)
	require.True(t, os.IsNotExist(statErr), "no ls-remote ran for a refused URL")
	for _, u := range []string{"file:///etc", "ext::sh -c id", "http://127.0.0.1:1/x.git", "-uhelp"} {
		require.Error(t, checkout(ctx, slipway.GitPolicy{}, t.TempDir(), u, "refs/heads/main", commit, func(string) {}), u)
		_, err := lsRemoteRef(ctx, slipway.GitPolicy{}, u, "main")
		require.Error(t, err, u)
	}
}
