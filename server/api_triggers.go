package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/rs/zerolog/hlog"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/forge"
)

// triggerResponse is the answer of a trigger or a retry.
type triggerResponse struct {
	BuildID int64          `json:"build_id"`
	URL     string         `json:"url"`
	Build   *slipway.Build `json:"build"`
}

// handleTrigger answers POST /api/v1/repos/{owner}/{name}/builds {"ref",
// "commit"} with 201 and a new queued build. The repository must have been
// built before (its forge and clone URL come from its latest build). The
// server runs no git: without a commit the build is queued with the ref as
// given and commit "", and the worker resolves both; with one, the worker
// checks that the commit belongs to the ref before it builds anything.
func handleTrigger(cfg Config, builds slipway.BuildService, repos slipway.RepoService) http.HandlerFunc {
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
		t, image, err := refTrigger(r, builds, repos, owner, name, req.Ref, req.Commit)
		if err != nil {
			writeError(w, r, err)
			return
		}
		enqueueAPI(w, r, cfg, builds, t, image)
	}
}

// refTrigger is the trigger that builds ref of owner/name for the principal
// of r, and the image its builds push to. With a commit, a short ref names a
// branch (refs/heads/<ref>) and the worker checks that the commit is on it;
// without one, the ref stays as given (a short name may be a branch or a tag)
// with commit "" for the worker to resolve. EINVALID for a bad ref or commit,
// ENOTFOUND for a repository neither built nor registered, EFORBIDDEN for a branch outside the
// repository's allowed_branches, EUNAVAILABLE without a repository store.
func refTrigger(r *http.Request, builds slipway.BuildService, repos slipway.RepoService, owner, name, ref, commit string) (slipway.Trigger, string, error) {
	ref, commit = strings.TrimSpace(ref), strings.ToLower(strings.TrimSpace(commit))
	if ref == "" {
		return slipway.Trigger{}, "", slipway.Errorf(slipway.EINVALID, `ref is required: {"ref": "main"} or {"ref": "refs/tags/v1.2.3", "commit": "<40 hex>"}.`)
	}
	if commit != "" && !forge.ValidCommit(commit) {
		return slipway.Trigger{}, "", slipway.Errorf(slipway.EINVALID, "commit must be a full 40-digit hex SHA-1, got %q.", commit)
	}
	if !validRef(ref) {
		return slipway.Trigger{}, "", slipway.Errorf(slipway.EINVALID, "%q is not a valid git ref: give a branch (main), a tag (v1.2.3) or a full ref (refs/tags/v1.2.3).", ref)
	}
	latest, err := builds.FindBuilds(r.Context(), slipway.BuildFilter{Repo: owner + "/" + name, Limit: 1})
	if err != nil {
		return slipway.Trigger{}, "", err
	}
	if len(latest) == 0 {
		// A repository registered ahead (slipway repo add) has no build yet:
		// its settings say where it lives.
		var repo *slipway.Repo
		if repos != nil {
			if repo, err = repos.FindRepo(r.Context(), slipway.RepoKey{Owner: owner, Name: name}); err != nil && slipway.ErrorCode(err) != slipway.ENOTFOUND {
				return slipway.Trigger{}, "", err
			}
		}
		if repo == nil {
			return slipway.Trigger{}, "", slipway.Errorf(slipway.ENOTFOUND,
				"Repository %s/%s is not registered: an admin registers it with `slipway repo add FORGE %s/%s` (or POST /api/v1/repos).", owner, name, owner, name)
		}
		latest = []*slipway.Build{{Forge: repo.Forge, Repo: repo.FullName(), CloneURL: repo.CloneURL, Image: repo.Image}}
	}
	last := latest[0]
	repoOwner, repoName := slipway.SplitRepo(last.Repo)
	if commit != "" && !strings.HasPrefix(ref, "refs/") {
		ref = "refs/heads/" + ref
	}
	if err := checkBranchAllowed(r.Context(), repos, last.Forge, repoOwner, repoName, ref); err != nil {
		return slipway.Trigger{}, "", err
	}
	return slipway.Trigger{
		Forge: last.Forge, DeliveryID: "api-" + randomID(), Event: "api",
		Owner: repoOwner, Name: repoName, CloneURL: last.CloneURL,
		// The message stays "" for the worker to fill with the commit's subject.
		Ref: ref, Commit: commit, Sender: senderName(principalFrom(r.Context())),
		VerifyRef: commit != "",
	}, last.Image, nil
}

// checkBranchAllowed returns EFORBIDDEN when ref is a branch outside the
// allowed_branches of the repository forge/owner/name, the errors of
// FindRepo, and EUNAVAILABLE without a repository store. A short name (a
// build not resolved yet) is checked as the branch it may be: a tag of the
// same name is still reachable as refs/tags/<name>.
func checkBranchAllowed(ctx context.Context, repos slipway.RepoService, forge, owner, name, ref string) error {
	if repos == nil {
		return slipway.Errorf(slipway.EUNAVAILABLE, "Triggering builds needs the repository store, which this server has not.")
	}
	repo, err := repos.FindRepo(ctx, slipway.RepoKey{Forge: forge, Owner: owner, Name: name})
	if err != nil {
		return err
	}
	branch, hint := ref, ""
	if !strings.HasPrefix(ref, "refs/") {
		branch = "refs/heads/" + ref
		hint = fmt.Sprintf(" (for a tag of that name, pass refs/tags/%s)", ref)
	}
	if repo.BranchAllowed(branch) {
		return nil
	}
	return slipway.Errorf(slipway.EFORBIDDEN,
		"Branch %q is not in %s's allowed_branches (%s): build one of those branches%s, or ask an admin to add it (PATCH /api/v1/repos/%s).",
		slipway.RefName(branch), repo.FullName(), strings.Join(repo.AllowedBranches, ", "), hint, repo.FullName())
}

// validRef reports whether ref may be queued: a ref name git accepts
// (forge.ValidRefName), not one a git command would take for an option, not
// too long for the schema once resolved.
func validRef(ref string) bool {
	return forge.ValidRefName(ref) && !strings.HasPrefix(ref, "-") && len(ref) <= 1000
}

// senderName is how a build names who triggered it: "token deploy-bot" for a
// stored API token, "admin token (SLIPWAY_ADMIN_TOKEN)" for the bootstrap
// admin token.
func senderName(p principal) string {
	switch p.Name {
	case "":
		return ""
	case adminActor:
		return "admin token (SLIPWAY_ADMIN_TOKEN)"
	}
	return "token " + p.Name
}

// handleRetry answers POST /api/v1/builds/{id}/retry with 201 and a new
// queued build of the same commit and ref. The build must be finished.
func handleRetry(cfg Config, builds slipway.BuildService, repos slipway.RepoService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := requestBuild(r, builds)
		if err != nil {
			writeError(w, r, err)
			return
		}
		t, err := retryTrigger(r, repos, b)
		if err != nil {
			writeError(w, r, err)
			return
		}
		enqueueAPI(w, r, cfg, builds, t, b.Image)
	}
}

// retryTrigger is the trigger that builds b's commit again for the principal
// of r; ECONFLICT while b is not finished, the errors of checkBranchAllowed
// (the repository's allowed_branches may have changed since b ran).
func retryTrigger(r *http.Request, repos slipway.RepoService, b *slipway.Build) (slipway.Trigger, error) {
	if !b.State.Done() {
		return slipway.Trigger{}, slipway.Errorf(slipway.ECONFLICT, "Build %d is %s; only a finished build can be retried.", b.ID, b.State)
	}
	owner, name := slipway.SplitRepo(b.Repo)
	if b.PullRequest == nil {
		if err := checkBranchAllowed(r.Context(), repos, b.Forge, owner, name, b.Ref); err != nil {
			return slipway.Trigger{}, err
		}
	}
	return slipway.Trigger{
		Forge: b.Forge, DeliveryID: fmt.Sprintf("retry-%d-%s", b.ID, randomID()), Event: "retry",
		Owner: owner, Name: name, CloneURL: b.CloneURL, Ref: b.Ref, Commit: b.Commit,
		Message: fmt.Sprintf("Retry of build %d", b.ID), Sender: senderName(principalFrom(r.Context())),
		// A retry keeps a user-named commit's check; an unresolved build's
		// retry resolves its ref again.
		VerifyRef: b.VerifyRef,
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
