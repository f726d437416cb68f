package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"

	"github.com/slipway-ci/slipway"
)

// checkout fetches exactly commit from cloneURL into dir, shallow, with the git
// CLI so the user's git configuration applies (url.<base>.insteadOf rewrites,
// credential helpers, proxies). For a pull-request ref (refs/pull/N/head,
// refs/merge-requests/N/head) it also fetches that ref of cloneURL, the base
// repository, which holds the head commit also when it came from a fork.
// dir must exist and be empty. git runs with policy's environment (none of
// slipway's own variables, only the transports policy allows); env is added
// to it (the credential of gitAuthEnv). A clone URL the policy refuses fails
// before git runs.
func checkout(ctx context.Context, policy slipway.GitPolicy, dir, cloneURL, ref, commit string, log func(string), env ...string) error {
	if err := policy.CheckCloneURL("The clone URL", cloneURL); err != nil {
		return errors.New(slipway.ErrorMessage(err))
	}
	if !commitHexRE.MatchString(commit) {
		return fmt.Errorf("commit %q is not 40 hex digits", commit)
	}
	gitEnv := append(policy.GitEnv(os.Environ()), env...)
	steps := [][]string{
		{"init", "--quiet"},
		{"remote", "add", "origin", cloneURL},
		// Fetching one commit by id needs uploadpack.allowReachableSHA1InWant (or
		// allowAnySHA1InWant) on the server; GitHub, GitLab, Gitea and git daemon
		// with protocol v2 allow it.
		append([]string{"-c", "protocol.version=2", "fetch", "--quiet", "--no-tags", "--depth", "1", "origin", commit}, pullRequestRefspec(ref)...),
		{"-c", "advice.detachedHead=false", "checkout", "--quiet", "FETCH_HEAD"},
	}
	for _, args := range steps {
		if err := runGit(ctx, gitEnv, dir, args, log); err != nil {
			// git daemon, GitHub and Gitea say "not our ref" for a commit
			// the repository does not have (or no ref reaches).
			if strings.Contains(err.Error(), "not our ref") {
				return fmt.Errorf("commit %s is not in the repository (no branch or tag reaches it); pass a commit that was pushed, or only a ref (%w)", commit, err)
			}
			return err
		}
	}
	rev := exec.CommandContext(ctx, "git", "-C", dir, "rev-parse", "HEAD")
	rev.Env = gitEnv
	out, err := rev.Output()
	if err != nil {
		return fmt.Errorf("git rev-parse HEAD: %w", err)
	}
	if got := strings.TrimSpace(string(out)); got != commit {
		return fmt.Errorf("checked out %s, wanted %s", got, commit)
	}
	log("checked out " + commit)
	return nil
}

// runGit runs git with args in dir and gitEnv, logging the command line
// (its URLs redacted) unless it is init or remote; the error holds the last
// line of git's output, redacted, or the cause of ctx once it has ended.
func runGit(ctx context.Context, gitEnv []string, dir string, args []string, log func(string)) error {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if sub := gitSubcommand(args); sub != "init" && sub != "remote" {
		log("$ git " + redactURLs(strings.Join(args, " ")))
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(redactURLs(out.String()))
		if msg == "" {
			msg = err.Error()
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("git %s: %s", gitSubcommand(args), lastLine(msg))
	}
	return nil
}

var userinfoRE = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@`)

// redactURLs removes user information (tokens, passwords) from every URL in s.
func redactURLs(s string) string {
	return userinfoRE.ReplaceAllString(s, "${1}***@")
}

// lastLine is the last non-empty line of git's output s, or the line where
// ssh said why it refused the server or the server refused ssh (git's own
// last line then only says it could not read from the remote).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for _, l := range lines {
		if sshRefusalRE.MatchString(l) {
			return strings.TrimSpace(l)
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return s
}

// gitSubcommand returns the subcommand of a git argument list, skipping -c options.
func gitSubcommand(args []string) string {
	for i := 0; i < len(args); i++ {
		if args[i] == "-c" {
			i++
			continue
		}
		return args[i]
	}
	return ""
}

// pullRequestRefspec is the refspec fetching a pull-request ref into
// refs/slipway/pull, none for any other ref. The commit stays the first
// refspec, so FETCH_HEAD is the commit.
func pullRequestRefspec(ref string) []string {
	if _, ok := slipway.PullRequestNumber(ref); !ok {
		return nil
	}
	return []string{"+" + ref + ":refs/slipway/pull"}
}
