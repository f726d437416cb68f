package forge

import (
	"cmp"
	"context"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/slipway-ci/slipway"
)

// GitHub's delivery headers, described in
// https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers.
const (
	githubEventHeader     = "X-GitHub-Event"
	githubDeliveryHeader  = "X-GitHub-Delivery"
	githubSignatureHeader = "X-Hub-Signature-256"
)

// GitHub is GitHub (and GitHub Enterprise Server) whole. It receives the
// deliveries of POST /webhooks/github, signed with X-Hub-Signature-256, and
// sets statuses with "Create a commit status":
// POST {BaseURL}/repos/{owner}/{repo}/statuses/{sha}
// (https://docs.github.com/en/rest/commits/statuses#create-a-commit-status).
// The server fills Webhook, the status sender the rest.
type GitHub struct {
	Webhook
	BaseURL string // https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server
	Token   string
	// App, when Token is empty, gives an installation token per repository.
	App  *GitHubApp
	HTTP *http.Client // nil: a default with a 30 s timeout
}

// githubStates maps build states to GitHub's: error, failure, pending, success.
var githubStates = map[slipway.BuildState]string{
	slipway.BuildQueued: "pending", slipway.BuildRunning: "pending", slipway.BuildTesting: "pending",
	slipway.BuildSucceeded: "success", slipway.BuildFailed: "failure", slipway.BuildCanceled: "error",
}

// SetStatus implements Client.
func (g *GitHub) SetStatus(ctx context.Context, s Status) error {
	u := repoStatusesURL(g.BaseURL, s)
	token := g.Token
	if token == "" && g.App != nil {
		var err error
		if token, err = g.App.Token(ctx, s.Owner, s.Name); err != nil {
			return err
		}
	}
	h := http.Header{}
	h.Set("Accept", "application/vnd.github+json")
	h.Set("Authorization", "Bearer "+token)
	h.Set("X-GitHub-Api-Version", "2022-11-28")
	return post(ctx, g.HTTP, "GitHub", u, h, map[string]string{
		"state": githubStates[s.State], "target_url": s.TargetURL,
		"description": slipway.Truncate(s.Description, 140), "context": StatusContext,
	})
}

// Name implements Hook.
func (g *GitHub) Name() string { return slipway.ForgeGitHub }

// Title implements Hook.
func (g *GitHub) Title() string { return "GitHub" }

// WebhookSecret implements Hook.
func (g *GitHub) WebhookSecret() (string, string) {
	return g.Webhook.Secret, "SLIPWAY_GITHUB_WEBHOOK_SECRET"
}

// OwnerAllowed implements Hook.
func (g *GitHub) OwnerAllowed(owner string) error {
	return g.ownerAllowed(owner, "SLIPWAY_GITHUB_ALLOWED_OWNERS")
}

// Delivery implements Hook: X-GitHub-Event and X-GitHub-Delivery, which a
// push needs.
func (g *GitHub) Delivery(h http.Header) (string, string, error) {
	event, delivery := h.Get(githubEventHeader), h.Get(githubDeliveryHeader)
	if event == "" {
		return event, delivery, slipway.Errorf(slipway.EINVALID, "The %s header is missing.", githubEventHeader)
	}
	return event, delivery, checkDelivery(githubDeliveryHeader, delivery, event == "push")
}

// Payload implements Hook; see formPayload.
func (g *GitHub) Payload(h http.Header, body []byte) ([]byte, error) {
	return formPayload(h.Get("Content-Type"), body)
}

// Locate implements Hook: repository.owner.login and repository.name.
func (g *GitHub) Locate(payload []byte) (string, string, bool) { return locateGitHubStyle(payload) }

// Verify implements Hook; see verifyGitHubSignature.
func (g *GitHub) Verify(secret []byte, h http.Header, body []byte) error {
	return verifyGitHubSignature(secret, h.Get(githubSignatureHeader), body)
}

// Parse implements Hook: ping, push (branches and tags) and pull_request;
// every other event is ignored once its JSON parses.
func (g *GitHub) Parse(event, delivery string, payload []byte) (Event, error) {
	return parseGitHubEvent(event, delivery, payload)
}

// verifyGitHubSignature checks header, "sha256=" and the hex HMAC-SHA256 of
// body keyed with secret, in constant time. It returns EUNAUTHORIZED when the
// header is missing, malformed or wrong.
func verifyGitHubSignature(secret []byte, header string, body []byte) error {
	if header == "" {
		return slipway.Errorf(slipway.EUNAUTHORIZED, "The %s header is missing; set a secret on the webhook.", githubSignatureHeader)
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return slipway.Errorf(slipway.EUNAUTHORIZED, "The %s header must start with sha256=.", githubSignatureHeader)
	}
	return verifyHexHMAC(secret, githubSignatureHeader, hexSig, body)
}

// formPayload returns the JSON payload of a delivery. GitHub sends it as the
// body, or, for a webhook set to application/x-www-form-urlencoded, in the form
// field "payload". The signature covers the raw body in both cases.
func formPayload(contentType string, body []byte) ([]byte, error) {
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt != "application/x-www-form-urlencoded" {
		return body, nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, slipway.Errorf(slipway.EINVALID, "Malformed form body: %v.", err)
	}
	if !form.Has("payload") {
		return nil, slipway.Errorf(slipway.EINVALID, "The form body has no payload field.")
	}
	return []byte(form.Get("payload")), nil
}

// githubRepository is the repository object of GitHub's payloads; Gitea and
// Forgejo send the same shape (with owner.username beside owner.login).
type githubRepository struct {
	Name          string `json:"name"`
	CloneURL      string `json:"clone_url"`
	DefaultBranch string `json:"default_branch"`
	Owner         struct {
		Login    string `json:"login"`
		Username string `json:"username"`
		Name     string `json:"name"`
	} `json:"owner"`
}

// owner is owner.login, else owner.username (Gitea), else owner.name (older
// GitHub payloads).
func (r *githubRepository) owner() string {
	switch {
	case r.Owner.Login != "":
		return r.Owner.Login
	case r.Owner.Username != "":
		return r.Owner.Username
	}
	return r.Owner.Name
}

// locateGitHubStyle reads repository.owner and repository.name, for GitHub and
// Gitea payloads alike.
func locateGitHubStyle(payload []byte) (string, string, bool) {
	var p struct {
		Repository *githubRepository `json:"repository"`
	}
	if json.Unmarshal(payload, &p) != nil || p.Repository == nil {
		return "", "", false
	}
	owner := p.Repository.owner()
	return owner, p.Repository.Name, ValidName(owner) && ValidName(p.Repository.Name)
}

// githubPush holds the fields of a push payload slipway reads.
// https://docs.github.com/en/webhooks/webhook-events-and-payloads#push
type githubPush struct {
	Ref        string            `json:"ref"`
	After      string            `json:"after"`
	Deleted    bool              `json:"deleted"`
	Repository *githubRepository `json:"repository"`
	HeadCommit *struct {
		ID      string `json:"id"`
		Message string `json:"message"`
	} `json:"head_commit"`
	Sender *struct {
		Login string `json:"login"`
	} `json:"sender"`
}

// push maps the payload onto the forge-neutral push.
func (p *githubPush) push(forge, delivery string) *push {
	out := &push{
		Forge: forge, Delivery: delivery, Ref: p.Ref, After: p.After, Deleted: p.Deleted,
		OwnerField: "repository.owner.login", NameField: "repository.name", URLField: "repository.clone_url",
	}
	if p.Repository != nil {
		out.Owner, out.Name, out.CloneURL = p.Repository.owner(), p.Repository.Name, p.Repository.CloneURL
		out.DefaultBranch = p.Repository.DefaultBranch
	} else {
		out.Missing = "repository"
	}
	if p.HeadCommit != nil {
		out.Message, out.HeadCommit = p.HeadCommit.Message, p.HeadCommit.ID
	}
	if p.Sender != nil {
		out.Sender = p.Sender.Login
	}
	return out
}

// parseGitHubEvent reads the payload of a delivery of event. It returns EINVALID
// with the parser's reason for malformed JSON and names the field for a push
// slipway could not build from.
func parseGitHubEvent(event, delivery string, payload []byte) (Event, error) {
	switch event {
	case "ping":
		var p struct {
			Zen string `json:"zen"`
		}
		if err := json.Unmarshal(payload, &p); err != nil {
			return Event{}, malformed(err)
		}
		return Event{Ping: true, Zen: p.Zen}, nil
	case "push":
		var p githubPush
		if err := json.Unmarshal(payload, &p); err != nil {
			return Event{}, malformed(err)
		}
		return p.push(slipway.ForgeGitHub, delivery).event()
	case "pull_request":
		return parseGitHubStylePullRequest(slipway.ForgeGitHub, event, delivery, payload)
	default:
		return otherEvent(event, payload)
	}
}

// otherEvent answers an event that starts no build, once its JSON parses.
func otherEvent(event string, payload []byte) (Event, error) {
	var v json.RawMessage
	if err := json.Unmarshal(payload, &v); err != nil {
		return Event{}, malformed(err)
	}
	return Event{Ignored: "event " + strconv.Quote(event) + " does not start builds"}, nil
}

// githubPullRequest holds the fields of a pull_request payload slipway reads;
// Gitea and Forgejo send the same shape.
// https://docs.github.com/en/webhooks/webhook-events-and-payloads#pull_request
type githubPullRequest struct {
	Action      string `json:"action"`
	Number      int    `json:"number"`
	PullRequest *struct {
		Number  int    `json:"number"`
		Title   string `json:"title"`
		HTMLURL string `json:"html_url"`
		User    *struct {
			Login    string `json:"login"`
			Username string `json:"username"`
		} `json:"user"`
		Head *githubPRBranch `json:"head"`
		Base *githubPRBranch `json:"base"`
		// AuthorAssociation is GitHub's only (Gitea and Forgejo send none).
		AuthorAssociation string `json:"author_association"`
	} `json:"pull_request"`
	Repository *githubRepository `json:"repository"`
	Sender     *struct {
		Login    string `json:"login"`
		Username string `json:"username"`
	} `json:"sender"`
}

// githubPRBranch is the head or base of a pull request.
type githubPRBranch struct {
	Ref    string `json:"ref"`
	SHA    string `json:"sha"`
	RepoID int64  `json:"repo_id"` // Gitea
	Repo   *struct {
		ID       int64  `json:"id"`
		FullName string `json:"full_name"`
	} `json:"repo"`
}

// repoKey names the branch's repository for comparing head with base.
func (b *githubPRBranch) repoKey() string {
	switch {
	case b == nil:
		return ""
	case b.Repo != nil && b.Repo.ID != 0:
		return strconv.FormatInt(b.Repo.ID, 10)
	case b.RepoID != 0:
		return strconv.FormatInt(b.RepoID, 10)
	case b.Repo != nil:
		return strings.ToLower(b.Repo.FullName)
	}
	return ""
}

// githubPRActions maps the actions of GitHub's and Gitea's pull_request event
// onto what slipway does; every other action (edited, labeled, …) is ignored.
var githubPRActions = map[string]prAction{
	"opened": prBuild, "reopened": prBuild,
	"synchronize":  prBuild, // GitHub
	"synchronized": prBuild, // Gitea, Forgejo
	"closed":       prCancel,
}

// parseGitHubStylePullRequest reads a pull_request payload of GitHub, Gitea or
// Forgejo. The head repository a fork names is never fetched from: the clone
// URL is the base repository's.
func parseGitHubStylePullRequest(forge, event, delivery string, payload []byte) (Event, error) {
	var p githubPullRequest
	if err := json.Unmarshal(payload, &p); err != nil {
		return Event{}, malformed(err)
	}
	out := &pullRequest{
		Forge: forge, Delivery: delivery, Event: event, Action: p.Action, Do: githubPRActions[p.Action],
		Number: p.Number, HeadField: "pull_request.head.sha",
		OwnerField: "repository.owner.login", NameField: "repository.name", URLField: "repository.clone_url",
	}
	if p.Repository == nil {
		out.Missing = "repository"
	} else {
		out.Owner, out.Name, out.CloneURL = p.Repository.owner(), p.Repository.Name, p.Repository.CloneURL
		out.DefaultBranch = p.Repository.DefaultBranch
	}
	if pr := p.PullRequest; pr == nil || pr.Head == nil {
		out.Missing = "pull_request.head"
	} else {
		if out.Number == 0 {
			out.Number = pr.Number
		}
		out.Title, out.URL, out.Head = pr.Title, pr.HTMLURL, pr.Head.SHA
		if pr.User != nil {
			out.Author = cmp.Or(pr.User.Login, pr.User.Username)
		}
		if pr.Base != nil {
			out.BaseBranch = pr.Base.Ref
		}
		// A head without a repository is a fork that was deleted: untrusted too.
		head := pr.Head.repoKey()
		out.Fork = head == "" || head != pr.Base.repoKey()
		if forge == slipway.ForgeGitHub {
			// Read from the payload whose signature was checked, and from
			// GitHub's alone: a Gitea field of that name would mean what
			// Gitea says, not what trusted_associations is documented for.
			out.Association = pr.AuthorAssociation
		}
	}
	if p.Sender != nil {
		out.Sender = cmp.Or(p.Sender.Login, p.Sender.Username)
	}
	return out.event()
}
