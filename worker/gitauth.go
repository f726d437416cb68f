package worker

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/forge"
)

// gitAuthEnv is the environment that makes one git process send c as HTTP
// basic auth to prefix (a repository URL) and below, and nowhere else: the
// header http.<prefix>.extraHeader set through GIT_CONFIG_COUNT
// (git-config(1), "ENVIRONMENT"). So the credential is on no command line,
// in no .git/config or other workspace file, and in no environment but that
// git's (a test container never inherits it).
func gitAuthEnv(prefix string, c forge.Credential) []string {
	basic := base64.StdEncoding.EncodeToString([]byte(c.Username + ":" + c.Password))
	return []string{
		"GIT_CONFIG_COUNT=1",
		"GIT_CONFIG_KEY_0=http." + prefix + ".extraHeader",
		"GIT_CONFIG_VALUE_0=Authorization: Basic " + basic,
	}
}

// openRepoCredentials opens the build's repository's own clone credentials
// (nil when the worker has no store for them, or the repository has none)
// and masks them in sink before anything could print them.
func (w *Worker) openRepoCredentials(ctx context.Context, build *slipway.Build, sink *logSink) (*slipway.RepoCredentials, error) {
	if w.cfg.RepoCredentials == nil {
		return nil, nil
	}
	rc, err := w.cfg.RepoCredentials.OpenRepoCredentials(ctx, build.RepoID)
	if err != nil {
		return nil, fmt.Errorf("opening the clone credentials of %s: %s", build.Repo, slipway.ErrorMessage(err))
	}
	if rc.CloneToken == "" && rc.DeployKey == nil {
		return nil, nil
	}
	sink.Mask([][]byte{[]byte(rc.CloneToken), rc.DeployKey})
	return rc, nil
}

// repoToken is the credential of the repository's own clone token for
// rawURL: only for the build's own clone URL, and only while that has the
// origin of the repository's registered clone URL (rc.CloneURL), so neither
// a submodule nor a URL another host chose ever gets it.
func repoToken(build *slipway.Build, rc *slipway.RepoCredentials, rawURL string) (forge.Credential, bool) {
	if rc == nil || rc.CloneToken == "" || rawURL != build.CloneURL || !forge.SameOrigin(forge.OriginOf(rc.CloneURL), rawURL) {
		return forge.Credential{}, false
	}
	user := rc.CloneUsername
	if user == "" {
		user = forge.DefaultCloneUsername(build.Forge)
	}
	return forge.Credential{Username: user, Password: rc.CloneToken}, true
}

// cloneAuth returns the git environment that authenticates a fetch of
// rawURL, a repository of build's forge: none when the worker has no
// credential for it. The repository's own clone token (rc, see repoToken)
// wins over the forge-wide credentials. Every value that could show the
// credential is masked in sink first. owner/name of a URL other than the
// build's own (a submodule) are read from its path: the last segment without
// ".git" is the name, the rest the owner.
func (w *Worker) cloneAuth(ctx context.Context, build *slipway.Build, rc *slipway.RepoCredentials, rawURL string, sink *logSink) ([]string, error) {
	if !strings.HasPrefix(rawURL, "https://") && !strings.HasPrefix(rawURL, "http://") {
		return nil, nil
	}
	c, ok := repoToken(build, rc, rawURL)
	if !ok {
		if w.cfg.CloneAuth == nil {
			return nil, nil
		}
		owner, name := slipway.SplitRepo(build.Repo)
		if rawURL != build.CloneURL {
			u, err := url.Parse(rawURL)
			if err != nil {
				return nil, nil
			}
			owner, name = slipway.SplitRepo(strings.Trim(strings.TrimSuffix(u.Path, ".git"), "/"))
			if owner == "" {
				return nil, nil
			}
		}
		var err error
		c, ok, err = w.cfg.CloneAuth.ForClone(ctx, build.Forge, owner, name, rawURL)
		if err != nil {
			return nil, fmt.Errorf("getting the %s credential for %s/%s: %w", build.Forge, owner, name, err)
		}
		if !ok {
			return nil, nil
		}
	}
	env := gitAuthEnv(rawURL, c)
	sink.Mask([][]byte{[]byte(c.Password), []byte(strings.TrimPrefix(env[2], "GIT_CONFIG_VALUE_0=Authorization: Basic "))})
	return env, nil
}

// authHint explains a clone the forge refused for want of a credential, ""
// for any other failure: git says "could not read Username" when a forge
// asks for one and none is set, "Authentication failed" (or "The requested
// URL returned error: 403") when it refuses the one sent. repoToken tells
// that the repository's own clone token was sent (see repoToken).
func authHint(forgeName string, err error, repoToken bool) string {
	msg := err.Error()
	setting := map[string]string{
		slipway.ForgeGitHub: "SLIPWAY_GITHUB_TOKEN or SLIPWAY_GITHUB_APP_ID",
		slipway.ForgeGitLab: "SLIPWAY_GITLAB_TOKEN", slipway.ForgeGitea: "SLIPWAY_GITEA_TOKEN",
	}[forgeName]
	if setting == "" {
		setting = "a credential for the forge"
	}
	setting += " on the workers, or the repository's clone token (PUT /api/v1/repos/{owner}/{name}/clone-token)"
	if repoToken {
		setting = "the repository's clone token (PUT /api/v1/repos/{owner}/{name}/clone-token)"
	}
	switch {
	case strings.Contains(msg, "could not read Username"), strings.Contains(msg, "terminal prompts disabled"):
		return fmt.Sprintf(" (the forge asks for a login: the repository is private; set %s)", setting)
	case strings.Contains(msg, "Authentication failed"), strings.Contains(msg, "returned error: 403"):
		return fmt.Sprintf(" (the forge refused the credential: check %s and that it may read this repository)", setting)
	}
	return ""
}
