package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/slipway-ci/slipway"
)

// maxSubmoduleDepth bounds how deep submodules of submodules are checked out.
const maxSubmoduleDepth = 8

// gitmodulesMaxBytes caps each .gitmodules: git's listing of it is read
// into memory.
const gitmodulesMaxBytes = 1 << 20

// updateSubmodules checks the submodules of the checkout in dir out at the
// commits its tree records: recursively, shallow (one commit each), with the
// same git configuration and environment as the main clone (URL rewriting
// with url.<base>.insteadOf, credential helpers). A relative URL in
// .gitmodules ("../lib.git") resolves against cloneURL, as git does.
//
// .gitmodules comes from the push, so each resolved URL must use the main
// clone's scheme or https/ssh, and name the main clone's host or one of
// allowHosts ("host" or "host:port"); anything else fails before a fetch. An
// error names the submodule's path and URL (without user information).
//
// auth gives the git environment that authenticates a fetch of one
// submodule's URL (see Worker.cloneAuth), nil for an anonymous one.
func updateSubmodules(ctx context.Context, policy slipway.GitPolicy, dir, cloneURL string, allowHosts []string, auth func(url string) ([]string, error), log func(string)) error {
	return updateSubmodulesAt(ctx, policy, dir, "", cloneURL, allowHosts, auth, log, 0)
}

func updateSubmodulesAt(ctx context.Context, policy slipway.GitPolicy, dir, prefix, cloneURL string, allowHosts []string, auth func(string) ([]string, error), log func(string), depth int) error {
	fi, err := os.Lstat(filepath.Join(dir, ".gitmodules"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading %s.gitmodules: %w", prefix, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s.gitmodules is not a regular file", prefix)
	}
	if fi.Size() > gitmodulesMaxBytes {
		return tooBig(prefix+".gitmodules", fi.Size(), gitmodulesMaxBytes)
	}
	if depth >= maxSubmoduleDepth {
		return fmt.Errorf("submodules nested deeper than %d levels at %s", maxSubmoduleDepth, strings.TrimSuffix(prefix, "/"))
	}
	base, err := url.Parse(cloneURL)
	if err != nil {
		return fmt.Errorf("parsing the clone URL: %w", err)
	}
	// git refuses every other transport, also for what .gitmodules of
	// nested submodules name; the policy's own GIT_ALLOW_PROTOCOL comes
	// first and this one, narrower, wins.
	var schemes []string
	for _, p := range []string{"https", "ssh", base.Scheme} {
		if slices.Contains(strings.Split(policy.Protocols(), ":"), p) && !slices.Contains(schemes, p) {
			schemes = append(schemes, p)
		}
	}
	env := append(policy.GitEnv(os.Environ()), "GIT_ALLOW_PROTOCOL="+strings.Join(schemes, ":"))
	git := func(extra []string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir, cmd.Env = dir, append(slices.Clone(env), extra...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err != nil && ctx.Err() != nil {
			return "", context.Cause(ctx)
		}
		return out.String(), err
	}

	// init copies each submodule's URL into .git/config, relative ones
	// resolved against origin; nothing is fetched yet.
	if out, err := git(nil, "submodule", "--quiet", "init"); err != nil {
		return fmt.Errorf("git submodule init in %s: %s", orRoot(prefix), lastLine(redactURLs(out)))
	}
	out, err := git(nil, "config", "--local", "--get-regexp", `^submodule\..*\.url$`)
	if err != nil {
		return nil // .gitmodules names no submodule
	}
	type sub struct{ name, path, url string }
	var subs []sub
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		key, u, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		name := strings.TrimSuffix(strings.TrimPrefix(key, "submodule."), ".url")
		p, _ := git(nil, "config", "-f", ".gitmodules", "--get", "submodule."+name+".path")
		subs = append(subs, sub{name: name, path: strings.TrimSpace(p), url: u})
	}
	for _, s := range subs {
		if !filepath.IsLocal(s.path) {
			return fmt.Errorf("submodule %s has the path %q, which is not inside the repository", s.name, s.path)
		}
		if err := allowedSubmoduleURL(s.url, base, allowHosts); err != nil {
			return fmt.Errorf("submodule %s%s (%s): %v", prefix, s.path, redactURLs(s.url), err)
		}
	}
	for _, s := range subs {
		log(fmt.Sprintf("submodule %s%s from %s", prefix, s.path, redactURLs(s.url)))
		authEnv, err := auth(s.url)
		if err != nil {
			return fmt.Errorf("submodule %s%s (%s): %v", prefix, s.path, redactURLs(s.url), err)
		}
		if out, err := git(authEnv, "-c", "protocol.version=2", "submodule", "--quiet", "update", "--depth", "1", "--", s.path); err != nil {
			return fmt.Errorf("submodule %s%s (%s) could not be fetched: %s", prefix, s.path, redactURLs(s.url), lastLine(redactURLs(out)))
		}
		if err := updateSubmodulesAt(ctx, policy, filepath.Join(dir, s.path), prefix+s.path+"/", s.url, allowHosts, auth, log, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// allowedSubmoduleURL checks one resolved submodule URL against the main
// clone's URL base: the same scheme or https/ssh, the same host or one of
// allowHosts. scp-like ssh URLs (git@host:path) are refused: ssh://host/path
// says the same thing in a form that can be checked.
func allowedSubmoduleURL(raw string, base *url.URL, allowHosts []string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" || strings.HasPrefix(raw, "-") {
		return fmt.Errorf("not a URL with a scheme and a host; write it as https://host/path, ssh://host/path or relative to the repository (../name.git)")
	}
	switch u.Scheme {
	case "https", "ssh", base.Scheme:
	default:
		return fmt.Errorf("scheme %q is not allowed (https, ssh, or the repository's own %s)", u.Scheme, base.Scheme)
	}
	if strings.EqualFold(u.Host, base.Host) {
		return nil
	}
	for _, h := range allowHosts {
		if strings.EqualFold(h, u.Host) || strings.EqualFold(h, u.Hostname()) {
			return nil
		}
	}
	return fmt.Errorf("host %s is neither the repository's (%s) nor in SLIPWAY_SUBMODULE_HOSTS", u.Host, base.Host)
}

func orRoot(prefix string) string {
	if prefix == "" {
		return "the repository"
	}
	return strings.TrimSuffix(prefix, "/")
}
