package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/rs/zerolog/hlog"

	"github.com/slipway-ci/slipway"
)

// lsRemoteTimeout bounds the git ls-remote that resolves a ref to a commit.
const lsRemoteTimeout = 30 * time.Second

// triggerResponse is the answer of a trigger or a retry.
type triggerResponse struct {
	BuildID int64          `json:"build_id"`
	URL     string         `json:"url"`
	Build   *slipway.Build `json:"build"`
}

// handleTrigger answers POST /api/v1/repos/{owner}/{name}/builds {"ref",
// "commit"} with 201 and a new queued build. The repository must have been
// built before (its forge and clone URL come from its latest build). Without
// a commit, the ref's current commit is read with git ls-remote.
func handleTrigger(cfg Config, builds slipway.BuildService) http.HandlerFunc {
	type request struct {
		Ref    string `json:"ref"`
		Commit string `json:"commit"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		owner, name := repoParams(r)
		var req request
		if err := decodeJSON(w, r, &req); err != nil {
			writeError(w, r, err)
			return
		}
		t, image, err := refTrigger(r, builds, owner, name, req.Ref, req.Commit)
		if err != nil {
			writeError(w, r, err)
			return
		}
		enqueueAPI(w, r, cfg, builds, t, image)
	}
}

// refTrigger is the trigger that builds ref of owner/name (at commit, or at
// the ref's current commit when commit is "") for the principal of r, and
// the image its builds push to. EINVALID for a bad ref or commit, ENOTFOUND
// for a repository never built, errors of resolveRef.
func refTrigger(r *http.Request, builds slipway.BuildService, owner, name, ref, commit string) (slipway.Trigger, string, error) {
	ref, commit = strings.TrimSpace(ref), strings.ToLower(strings.TrimSpace(commit))
	if ref == "" {
		return slipway.Trigger{}, "", slipway.Errorf(slipway.EINVALID, `ref is required: {"ref": "main"} or {"ref": "refs/tags/v1.2.3", "commit": "<40 hex>"}.`)
	}
	if commit != "" && !commitRE.MatchString(commit) {
		return slipway.Trigger{}, "", slipway.Errorf(slipway.EINVALID, "commit must be a full 40-digit hex SHA-1, got %q.", commit)
	}
	if strings.ContainsAny(ref, " \t\n~^:?*[\\") || strings.Contains(ref, "..") || len(ref) > 1000 {
		return slipway.Trigger{}, "", slipway.Errorf(slipway.EINVALID, "%q is not a valid git ref.", ref)
	}
	latest, err := builds.FindBuilds(r.Context(), slipway.BuildFilter{Repo: owner + "/" + name, Limit: 1})
	if err != nil {
		return slipway.Trigger{}, "", err
	}
	if len(latest) == 0 {
		return slipway.Trigger{}, "", slipway.Errorf(slipway.ENOTFOUND,
			"Repository %s/%s has no builds yet: slipway learns a repository from its first push webhook.", owner, name)
	}
	last := latest[0]
	if commit == "" {
		ref, commit, err = resolveRef(r.Context(), last.CloneURL, ref)
		if err != nil {
			return slipway.Trigger{}, "", err
		}
	} else if !strings.HasPrefix(ref, "refs/") {
		ref = "refs/heads/" + ref
	}
	who := principalFrom(r.Context())
	repoOwner, repoName := slipway.SplitRepo(last.Repo)
	return slipway.Trigger{
		Forge: last.Forge, DeliveryID: "api-" + randomID(), Event: "api",
		Owner: repoOwner, Name: repoName, CloneURL: last.CloneURL,
		Ref: ref, Commit: commit, Message: "Triggered through the API", Sender: who.Name,
	}, last.Image, nil
}

// handleRetry answers POST /api/v1/builds/{id}/retry with 201 and a new
// queued build of the same commit and ref. The build must be finished.
func handleRetry(cfg Config, builds slipway.BuildService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := requestBuild(r, builds)
		if err != nil {
			writeError(w, r, err)
			return
		}
		t, err := retryTrigger(r, b)
		if err != nil {
			writeError(w, r, err)
			return
		}
		enqueueAPI(w, r, cfg, builds, t, b.Image)
	}
}

// retryTrigger is the trigger that builds b's commit again for the principal
// of r; ECONFLICT while b is not finished.
func retryTrigger(r *http.Request, b *slipway.Build) (slipway.Trigger, error) {
	if !b.State.Done() {
		return slipway.Trigger{}, slipway.Errorf(slipway.ECONFLICT, "Build %d is %s; only a finished build can be retried.", b.ID, b.State)
	}
	owner, name := slipway.SplitRepo(b.Repo)
	return slipway.Trigger{
		Forge: b.Forge, DeliveryID: fmt.Sprintf("retry-%d-%s", b.ID, randomID()), Event: "retry",
		Owner: owner, Name: name, CloneURL: b.CloneURL, Ref: b.Ref, Commit: b.Commit,
		Message: fmt.Sprintf("Retry of build %d", b.ID), Sender: principalFrom(r.Context()).Name,
		// A pull request's retry stays one: pr-N only, and a fork's waits for approval again.
		PullRequest: b.PullRequest,
	}, nil
}

func enqueueAPI(w http.ResponseWriter, r *http.Request, cfg Config, builds slipway.BuildService, t slipway.Trigger, image string) {
	res, err := builds.EnqueueTrigger(r.Context(), t, image)
	if err != nil {
		writeError(w, r, err)
		return
	}
	hlog.FromRequest(r).Info().Int64("build_id", res.Build.ID).Str("repo", t.Owner+"/"+t.Name).
		Str("ref", t.Ref).Str("event", t.Event).Msg("Build queued")
	writeJSON(w, r, http.StatusCreated, triggerResponse{BuildID: res.Build.ID,
		URL: fmt.Sprintf("%s/api/v1/builds/%d", cfg.PublicURL, res.Build.ID), Build: res.Build})
}

// resolveRef finds ref's commit with git ls-remote: a full ref as is, a short
// name as a branch, then as a tag.
func resolveRef(ctx context.Context, cloneURL, ref string) (fullRef, commit string, err error) {
	candidates := []string{ref}
	if !strings.HasPrefix(ref, "refs/") {
		candidates = []string{"refs/heads/" + ref, "refs/tags/" + ref}
	}
	ctx, cancel := context.WithTimeout(ctx, lsRemoteTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", append([]string{"ls-remote", "--", cloneURL}, candidates...)...)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		// git's message may quote the clone URL with credentials: log it, do not show it.
		zerolog.Ctx(ctx).Warn().Err(err).Str("git_stderr", redactCredentials(stderr.String())).Msg("Resolving ref with git ls-remote")
		return "", "", slipway.Errorf(slipway.EUNAVAILABLE, "Could not read the repository's refs (git ls-remote failed); pass a commit to build it without a lookup.")
	}
	found := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if sha, name, ok := strings.Cut(line, "\t"); ok && commitRE.MatchString(sha) {
			found[name] = sha
		}
	}
	for _, c := range candidates {
		if sha, ok := found[c]; ok {
			// An annotated tag's own line carries the tag object; the peeled
			// line (ref^{}) names the commit.
			if peeled, ok := found[c+"^{}"]; ok {
				sha = peeled
			}
			return c, sha, nil
		}
	}
	return "", "", slipway.Errorf(slipway.ENOTFOUND, "The repository has no branch or tag %q.", ref)
}

var credentialsRE = regexp.MustCompile(`://[^/@\s]+@`)

func redactCredentials(s string) string { return credentialsRE.ReplaceAllString(s, "://***@") }

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// requestBuild returns the build the {id} URL parameter names: EINVALID for a
// bad id, ENOTFOUND when there is none.
func requestBuild(r *http.Request, builds slipway.BuildService) (*slipway.Build, error) {
	id, err := buildID(r)
	if err != nil {
		return nil, err
	}
	return builds.FindBuildByID(r.Context(), id)
}
