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
	"time"

	"github.com/slipway-ci/slipway"
)

// lsRemoteTimeout bounds the git ls-remote that resolves a ref to a commit.
const lsRemoteTimeout = 60 * time.Second

// maxSubjectBytes caps the commit subject recorded as a build's message.
const maxSubjectBytes = 500

var commitHexRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// remoteRef is a ref as the repository holds it now.
type remoteRef struct {
	Ref    string // full ref: refs/heads/main, refs/tags/v1
	Commit string // 40 hex; for an annotated tag the commit it points at
}

// tag reports whether r is a tag.
func (r remoteRef) tag() bool { return strings.HasPrefix(r.Ref, "refs/tags/") }

// errUserRef is a ref or a commit the user named that the build cannot use;
// its text says what to pass instead.
type errUserRef struct{ msg string }

func (e errUserRef) Error() string { return e.msg }

// lsRemoteRef finds ref in the repository at cloneURL with git ls-remote, run
// as checkout runs git (policy's environment and transports, env added: the
// clone credential): a full ref as is, a short name as a branch, then as a
// tag. An annotated tag resolves to the commit it points at (its peeled
// "^{}" line). A ref the repository does not have is an errUserRef naming it.
func lsRemoteRef(ctx context.Context, policy slipway.GitPolicy, cloneURL, ref string, env ...string) (remoteRef, error) {
	if err := policy.CheckCloneURL("The clone URL", cloneURL); err != nil {
		return remoteRef{}, errors.New(slipway.ErrorMessage(err))
	}
	candidates := []string{ref}
	if !strings.HasPrefix(ref, "refs/") {
		candidates = []string{"refs/heads/" + ref, "refs/tags/" + ref}
	}
	lctx, cancel := context.WithTimeout(ctx, lsRemoteTimeout)
	defer cancel()
	args := []string{"ls-remote", "--", cloneURL}
	for _, c := range candidates {
		// ls-remote matches the peeled line of an annotated tag
		// (refs/tags/v1^{}) only by a pattern of its own.
		args = append(args, c, c+"^{}")
	}
	cmd := exec.CommandContext(lctx, "git", args...)
	cmd.Env = append(policy.GitEnv(os.Environ()), env...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return remoteRef{}, context.Cause(ctx)
		}
		msg := lastLine(redactURLs(stderr.String()))
		if msg == "" {
			msg = err.Error()
		}
		return remoteRef{}, fmt.Errorf("git ls-remote: %s", msg)
	}
	found := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		// ls-remote matches patterns against the tail of every ref, so
		// refs/heads/main also matches refs/remotes/x/refs/heads/main: only
		// exact names count.
		if sha, name, ok := strings.Cut(line, "\t"); ok && commitHexRE.MatchString(sha) {
			found[name] = sha
		}
	}
	for _, c := range candidates {
		if sha, ok := found[c]; ok {
			if peeled, ok := found[c+"^{}"]; ok {
				sha = peeled
			}
			return remoteRef{Ref: c, Commit: sha}, nil
		}
	}
	what := "ref"
	switch {
	case len(candidates) == 2:
		what = "branch or tag"
	case strings.HasPrefix(ref, "refs/heads/"):
		what = "branch"
	case strings.HasPrefix(ref, "refs/tags/"):
		what = "tag"
	}
	return remoteRef{}, errUserRef{fmt.Sprintf("the repository has no %s %q; push it, or trigger an existing branch or tag", what, ref)}
}

// verifyOnRef checks that commit, checked out in dir by checkout, belongs to
// remote: for a tag it must be the commit the tag points at; for a branch
// (or any other ref) it must be reachable from the ref's tip, which is
// fetched into refs/slipway/ref for `git merge-base --is-ancestor` unless it
// is commit itself. A commit that does not belong is an errUserRef.
func verifyOnRef(ctx context.Context, policy slipway.GitPolicy, dir string, remote remoteRef, commit string, log func(string), env ...string) error {
	if commit == remote.Commit {
		return nil
	}
	name := slipway.RefName(remote.Ref)
	if remote.tag() {
		return errUserRef{fmt.Sprintf("commit %s is not the commit of tag %s (%s); pass that commit or no commit", commit, name, remote.Commit)}
	}
	kind := "branch"
	if !strings.HasPrefix(remote.Ref, "refs/heads/") {
		kind = "ref"
	}
	gitEnv := append(policy.GitEnv(os.Environ()), env...)
	// The checkout is shallow at commit; fetching the branch without a depth
	// brings the history from its tip down to commit when commit is on it
	// (the server stops at what the client has), the whole branch otherwise.
	if err := runGit(ctx, gitEnv, dir, []string{"-c", "protocol.version=2", "fetch", "--quiet", "--no-tags", "origin", "+" + remote.Ref + ":refs/slipway/ref"}, log); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "git", "merge-base", "--is-ancestor", commit, "refs/slipway/ref")
	cmd.Dir, cmd.Env = dir, gitEnv
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		log(fmt.Sprintf("commit %s is on %s %s", commit, kind, name))
		return nil
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return errUserRef{fmt.Sprintf("commit %s is not on %s %s; pass a commit of that %s or no commit", commit, kind, name, kind)}
	}
	return fmt.Errorf("git merge-base: %s", lastLine(strings.TrimSpace(out.String())+" "+err.Error()))
}

// commitSubject is the first line of HEAD's message in dir, at most
// maxSubjectBytes long.
func commitSubject(ctx context.Context, policy slipway.GitPolicy, dir string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", "log", "-1", "--format=%s", "HEAD")
	cmd.Dir, cmd.Env = dir, policy.GitEnv(os.Environ())
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git log: %w", err)
	}
	s := strings.TrimSpace(string(out))
	if len(s) > maxSubjectBytes {
		s = strings.ToValidUTF8(s[:maxSubjectBytes], "") + "…"
	}
	return s, nil
}
