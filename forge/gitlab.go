package forge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/slipway-ci/slipway"
)

// GitLab's delivery headers, described in
// https://docs.gitlab.com/user/project/integrations/webhooks/#delivery-headers.
// Idempotency-Key stays the same across retries (GitLab 17.4 and later); older
// GitLab only sends X-Gitlab-Event-UUID.
const (
	gitlabEventHeader       = "X-Gitlab-Event"
	gitlabTokenHeader       = "X-Gitlab-Token"
	gitlabIdempotencyHeader = "Idempotency-Key"
	gitlabEventUUIDHeader   = "X-Gitlab-Event-UUID"
)

// GitLab is GitLab whole. It receives the deliveries of POST
// /webhooks/gitlab, which carry the secret token in X-Gitlab-Token, and sets
// statuses with "Set the pipeline status of a commit":
// POST {BaseURL}/projects/:id/statuses/:sha, :id being the URL-encoded
// "namespace/project" (https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit).
// The server fills Webhook, the status sender the rest.
type GitLab struct {
	Webhook
	BaseURL string // https://gitlab.com/api/v4, or https://HOST/api/v4
	Token   string // sent as PRIVATE-TOKEN
	HTTP    *http.Client
}

// gitlabStates maps build states to GitLab's: pending, running, success, failed, canceled.
var gitlabStates = map[slipway.BuildState]string{
	slipway.BuildQueued: "pending", slipway.BuildRunning: "running", slipway.BuildTesting: "running",
	slipway.BuildSucceeded: "success", slipway.BuildFailed: "failed", slipway.BuildCanceled: "canceled",
}

// SetStatus implements Client.
func (g *GitLab) SetStatus(ctx context.Context, s Status) error {
	u := strings.TrimRight(g.BaseURL, "/") + "/projects/" + url.PathEscape(s.Owner+"/"+s.Name) + "/statuses/" + url.PathEscape(s.Commit)
	h := http.Header{}
	h.Set("PRIVATE-TOKEN", g.Token)
	return post(ctx, g.HTTP, "GitLab", u, h, map[string]string{
		"state": gitlabStates[s.State], "ref": slipway.RefName(s.Ref), "name": StatusContext,
		"target_url": s.TargetURL, "description": slipway.Truncate(s.Description, 255),
	})
}

// Name implements Hook.
func (g *GitLab) Name() string { return slipway.ForgeGitLab }

// Title implements Hook.
func (g *GitLab) Title() string { return "GitLab" }

// WebhookSecret implements Hook: the secret token.
func (g *GitLab) WebhookSecret() (string, string) {
	return g.Webhook.Secret, "SLIPWAY_GITLAB_WEBHOOK_TOKEN"
}

// OwnerAllowed implements Hook; an allowed group allows its subgroups.
func (g *GitLab) OwnerAllowed(owner string) error {
	return g.ownerAllowed(owner, "SLIPWAY_GITLAB_ALLOWED_OWNERS")
}

// Delivery implements Hook; see gitlabHeaders.
func (g *GitLab) Delivery(h http.Header) (string, string, error) { return gitlabHeaders(h) }

// Payload implements Hook: GitLab always sends JSON as the body.
func (g *GitLab) Payload(h http.Header, body []byte) ([]byte, error) { return jsonPayload(h, body) }

// Locate implements Hook: project.path_with_namespace.
func (g *GitLab) Locate(payload []byte) (string, string, bool) { return locateGitLab(payload) }

// Verify implements Hook; see verifyGitLabToken.
func (g *GitLab) Verify(secret []byte, h http.Header, _ []byte) error {
	return verifyGitLabToken(secret, h.Get(gitlabTokenHeader))
}

// Parse implements Hook: Push Hook, Tag Push Hook and Merge Request Hook;
// every other event is ignored once its JSON parses.
func (g *GitLab) Parse(event, delivery string, payload []byte) (Event, error) {
	return parseGitLabEvent(event, delivery, payload)
}

// gitlabHeaders reads X-Gitlab-Event and the delivery id: Idempotency-Key,
// else X-Gitlab-Event-UUID; a push and a tag push need one.
func gitlabHeaders(h http.Header) (string, string, error) {
	event := h.Get(gitlabEventHeader)
	header, delivery := gitlabIdempotencyHeader, h.Get(gitlabIdempotencyHeader)
	if delivery == "" {
		header, delivery = gitlabEventUUIDHeader, h.Get(gitlabEventUUIDHeader)
	}
	if event == "" {
		return event, delivery, slipway.Errorf(slipway.EINVALID, "The %s header is missing.", gitlabEventHeader)
	}
	push := event == "Push Hook" || event == "Tag Push Hook"
	if delivery == "" && push {
		return event, delivery, slipway.Errorf(slipway.EINVALID, "The %s header (or %s) is missing.", gitlabIdempotencyHeader, gitlabEventUUIDHeader)
	}
	return event, delivery, checkDelivery(header, delivery, push)
}

// verifyGitLabToken compares the X-Gitlab-Token header with the secret token in
// constant time: GitLab sends the token itself, not a signature. Comparing
// SHA-256 digests keeps the token's length from leaking too.
func verifyGitLabToken(secret []byte, header string) error {
	if header == "" {
		return slipway.Errorf(slipway.EUNAUTHORIZED, "The %s header is missing; set a secret token on the webhook.", gitlabTokenHeader)
	}
	got, want := sha256.Sum256([]byte(header)), sha256.Sum256(secret)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return slipway.Errorf(slipway.EUNAUTHORIZED, "The %s header does not match the secret token: %s", gitlabTokenHeader, wrongSecretHint)
	}
	return nil
}

// gitlabPush holds the fields of push and tag push payloads slipway reads.
// https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events
type gitlabPush struct {
	ObjectKind   string `json:"object_kind"`
	Ref          string `json:"ref"`
	After        string `json:"after"`
	CheckoutSHA  string `json:"checkout_sha"`
	UserUsername string `json:"user_username"`
	Project      *struct {
		PathWithNamespace string `json:"path_with_namespace"`
		GitHTTPURL        string `json:"git_http_url"`
		DefaultBranch     string `json:"default_branch"`
	} `json:"project"`
	Commits []struct {
		ID      string `json:"id"`
		Message string `json:"message"`
	} `json:"commits"`
}

// splitGitLabPath splits path_with_namespace into the namespace and the project.
// A project in a subgroup ("group/sub/project") gives a namespace with a slash
// ("group/sub"), which stays the repository's owner: its image path keeps the
// groups.
func splitGitLabPath(p string) (string, string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

func locateGitLab(payload []byte) (string, string, bool) {
	var p struct {
		Project *struct {
			PathWithNamespace string `json:"path_with_namespace"`
		} `json:"project"`
	}
	if json.Unmarshal(payload, &p) != nil || p.Project == nil {
		return "", "", false
	}
	owner, name := splitGitLabPath(p.Project.PathWithNamespace)
	return owner, name, ValidOwner(slipway.ForgeGitLab, owner) && ValidName(name)
}

// parseGitLabEvent reads the payload of a delivery of event (the X-Gitlab-Event
// header: "Push Hook", "Tag Push Hook", …).
func parseGitLabEvent(event, delivery string, payload []byte) (Event, error) {
	if event == "Merge Request Hook" {
		return parseGitLabMergeRequest(event, delivery, payload)
	}
	if event != "Push Hook" && event != "Tag Push Hook" {
		return otherEvent(event, payload)
	}
	var p gitlabPush
	if err := json.Unmarshal(payload, &p); err != nil {
		return Event{}, malformed(err)
	}
	// checkout_sha is the commit to build: for an annotated tag, after is the
	// tag object. It is null for a deletion.
	commit := p.CheckoutSHA
	if commit == "" {
		commit = p.After
	}
	out := &push{
		Forge: slipway.ForgeGitLab, Delivery: delivery, Ref: p.Ref, After: commit, Deleted: p.After == zeroCommit,
		OwnerField: "project.path_with_namespace", NameField: "project.path_with_namespace",
		URLField: "project.git_http_url", Sender: p.UserUsername,
	}
	if p.Project == nil {
		out.Missing = "project"
	} else {
		out.Owner, out.Name = splitGitLabPath(p.Project.PathWithNamespace)
		out.CloneURL, out.DefaultBranch = p.Project.GitHTTPURL, p.Project.DefaultBranch
	}
	for _, c := range p.Commits {
		if strings.EqualFold(c.ID, commit) {
			out.Message = c.Message
		}
	}
	return out.event()
}

// gitlabMergeRequest holds the fields of a Merge Request Hook payload slipway reads.
// https://docs.gitlab.com/user/project/integrations/webhook_events/#merge-request-events
type gitlabMergeRequest struct {
	ObjectKind string `json:"object_kind"`
	User       *struct {
		Username string `json:"username"`
	} `json:"user"`
	Project *struct {
		ID                int64  `json:"id"`
		PathWithNamespace string `json:"path_with_namespace"`
		GitHTTPURL        string `json:"git_http_url"`
		DefaultBranch     string `json:"default_branch"`
	} `json:"project"`
	Attrs *struct {
		IID             int    `json:"iid"`
		Title           string `json:"title"`
		URL             string `json:"url"`
		Action          string `json:"action"`
		AuthorID        int64  `json:"author_id"`
		SourceProjectID int64  `json:"source_project_id"`
		TargetProjectID int64  `json:"target_project_id"`
		TargetBranch    string `json:"target_branch"`
		// OldRev is present on an update only when it brought new commits.
		OldRev     string `json:"oldrev"`
		LastCommit *struct {
			ID      string `json:"id"`
			Message string `json:"message"`
			Author  *struct {
				Name string `json:"name"`
			} `json:"author"`
		} `json:"last_commit"`
	} `json:"object_attributes"`
}

// gitlabMRActions maps object_attributes.action onto what slipway does; an
// update builds only when it brought commits (oldrev set).
var gitlabMRActions = map[string]prAction{
	"open": prBuild, "reopen": prBuild, "update": prBuild,
	"close": prCancel, "merge": prCancel,
}

// parseGitLabMergeRequest reads a Merge Request Hook payload. The clone URL is
// the target project's, which serves the head as refs/merge-requests/N/head.
func parseGitLabMergeRequest(event, delivery string, payload []byte) (Event, error) {
	var p gitlabMergeRequest
	if err := json.Unmarshal(payload, &p); err != nil {
		return Event{}, malformed(err)
	}
	out := &pullRequest{
		Forge: slipway.ForgeGitLab, Delivery: delivery, Event: event, HeadField: "object_attributes.last_commit.id",
		OwnerField: "project.path_with_namespace", NameField: "project.path_with_namespace", URLField: "project.git_http_url",
	}
	if p.User != nil {
		out.Sender = p.User.Username
	}
	if p.Project == nil {
		out.Missing = "project"
	} else {
		out.Owner, out.Name = splitGitLabPath(p.Project.PathWithNamespace)
		out.CloneURL, out.DefaultBranch = p.Project.GitHTTPURL, p.Project.DefaultBranch
	}
	if a := p.Attrs; a == nil {
		out.Missing = "object_attributes"
	} else {
		out.Action, out.Do = a.Action, gitlabMRActions[a.Action]
		if a.Action == "update" && a.OldRev == "" {
			out.Do, out.Action = prIgnore, "update without new commits"
		}
		out.Number, out.Title, out.URL, out.BaseBranch = a.IID, a.Title, a.URL, a.TargetBranch
		// The payload names the merge request's author by id only; the user who
		// opened or pushed it is user.
		out.Author = out.Sender
		out.Fork = a.SourceProjectID != a.TargetProjectID
		if a.LastCommit != nil {
			out.Head, out.Message = a.LastCommit.ID, a.LastCommit.Message
		}
	}
	return out.event()
}
