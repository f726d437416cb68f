package worker

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/slipway-ci/slipway"
)

// KnownHostsSetting names the worker setting of the known_hosts file that
// ssh clones check host keys against.
const KnownHostsSetting = "SLIPWAY_SSH_KNOWN_HOSTS"

// deployKeyRoute is where an admin sets a repository's deploy key.
const deployKeyRoute = "PUT /api/v1/repos/{owner}/{name}/deploy-key"

// sshAuth prepares the ssh:// clone of rawURL, the build's own clone URL,
// with the repository's deploy key (rc.DeployKey): it writes the key to a
// 0600 file in a new 0700 directory outside the workspace and returns
// GIT_SSH_COMMAND for the git processes of the checkout only, and the
// function that removes the directory (call it as soon as the checkout is
// done). The key itself is on no command line (ssh gets the file's path),
// in no workspace file and in no environment. For any other URL it returns
// no environment and a no-op remove.
//
// ssh checks the host key against Config.SSHKnownHosts only
// (StrictHostKeyChecking=yes, the admin's ~/.ssh/config ignored: -F
// /dev/null), never asks (BatchMode) and offers only the deploy key
// (IdentitiesOnly). Errors: the setting unset or its file unreadable, or the
// repository without a deploy key, each naming what to set. Submodules never
// get the deploy key: sshAuth serves the build's own clone URL only.
func (w *Worker) sshAuth(build *slipway.Build, rc *slipway.RepoCredentials, rawURL string, sink *logSink) ([]string, func(), error) {
	noop := func() {}
	if !strings.HasPrefix(rawURL, "ssh://") || rawURL != build.CloneURL {
		return nil, noop, nil
	}
	host := sshHost(rawURL)
	if w.cfg.SSHKnownHosts == "" {
		return nil, noop, fmt.Errorf("%s is an ssh:// clone URL, but the workers have no %s (the path of an OpenSSH known_hosts file holding the key of %s)", redactURLs(rawURL), KnownHostsSetting, host)
	}
	known, err := filepath.Abs(w.cfg.SSHKnownHosts)
	if err == nil {
		_, err = os.Stat(known)
	}
	if err != nil {
		return nil, noop, fmt.Errorf("%s: %v", KnownHostsSetting, err)
	}
	if rc == nil || len(rc.DeployKey) == 0 {
		return nil, noop, fmt.Errorf("%s is an ssh:// clone URL, but the repository %s has no deploy key; set one with %s", redactURLs(rawURL), build.Repo, deployKeyRoute)
	}
	dir, err := os.MkdirTemp("", "slipway-ssh-")
	if err != nil {
		return nil, noop, fmt.Errorf("creating the deploy key's directory: %w", err)
	}
	remove := func() { os.RemoveAll(dir) }
	keyFile := filepath.Join(dir, "deploy_key")
	key := rc.DeployKey
	if len(key) > 0 && key[len(key)-1] != '\n' {
		key = append(append([]byte{}, key...), '\n') // ssh refuses a key without its final newline
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		remove()
		return nil, noop, fmt.Errorf("writing the deploy key: %w", err)
	}
	sink.Mask([][]byte{rc.DeployKey})
	cmd := strings.Join([]string{"ssh", "-i", shellQuote(keyFile), "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + shellQuote(known), "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-F", "/dev/null"}, " ")
	return []string{"GIT_SSH_COMMAND=" + cmd, "GIT_SSH_VARIANT=ssh"}, remove, nil
}

// shellQuote quotes s for sh (git runs GIT_SSH_COMMAND through the shell).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sshHost is the host (with its port when not 22) of an ssh:// URL.
func sshHost(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "the server"
	}
	if p := u.Port(); p != "" && p != "22" {
		return "[" + u.Hostname() + "]:" + p
	}
	return u.Hostname()
}

// sshHint explains an ssh clone that ssh refused, "" for any other failure
// (or any other URL). Both are the user's or admin's to fix, not passing
// infrastructure failures, so they are not retried.
func sshHint(rawURL string, err error) string {
	if err == nil || !strings.HasPrefix(rawURL, "ssh://") {
		return ""
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "Host key verification failed"), strings.Contains(msg, "host key is known for"),
		strings.Contains(msg, "REMOTE HOST IDENTIFICATION HAS CHANGED"):
		return fmt.Sprintf(" (the host key of %s is not in the known_hosts file of %s, or differs from it: add the host's key there, e.g. with ssh-keyscan, after checking it)", sshHost(rawURL), KnownHostsSetting)
	case strings.Contains(msg, "Permission denied ("):
		return fmt.Sprintf(" (the server refused the deploy key: check that the repository's deploy key (%s) may read the repository)", deployKeyRoute)
	}
	return ""
}

// sshRefusalRE matches the line of ssh's output that says why a connection
// was refused: an unknown or changed host key, or the key refused.
var sshRefusalRE = regexp.MustCompile(`Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|host key is known for|Permission denied \(`)
