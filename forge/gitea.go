package forge

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/slipway-ci/slipway"
)

// Gitea's and Forgejo's delivery headers (Gitea's services/webhook/deliver.go;
// Forgejo sends its own names beside Gitea's). The signature is the bare hex
// HMAC-SHA256 of the body; X-Hub-Signature-256 carries the same as "sha256=…".
const (
	forgejoEventHeader     = "X-Forgejo-Event"
	giteaEventHeader       = "X-Gitea-Event"
	forgejoDeliveryHeader  = "X-Forgejo-Delivery"
	giteaDeliveryHeader    = "X-Gitea-Delivery"
	forgejoSignatureHeader = "X-Forgejo-Signature"
	giteaSignatureHeader   = "X-Gitea-Signature"
)

// Gitea is Gitea and Forgejo whole. It receives the deliveries of POST
// /webhooks/gitea, signed with X-Gitea-Signature (or Forgejo's or GitHub's
// header), and sets statuses with
// POST {BaseURL}/repos/{owner}/{repo}/statuses/{sha} (operation repoCreateStatus,
// body CreateStatusOption).
// The server fills Webhook, the status sender the rest.
type Gitea struct {
	Webhook
	BaseURL string // https://HOST/api/v1
	Token   string // sent as "Authorization: token <Token>"
	HTTP    *http.Client
}

// giteaStates maps build states to Gitea's: pending, success, error, failure, warning.
var giteaStates = map[slipway.BuildState]string{
	slipway.BuildQueued: "pending", slipway.BuildRunning: "pending", slipway.BuildTesting: "pending",
	slipway.BuildSucceeded: "success", slipway.BuildFailed: "failure", slipway.BuildCanceled: "error",
}

// SetStatus implements Client.
func (g *Gitea) SetStatus(ctx context.Context, s Status) error {
	u := repoStatusesURL(g.BaseURL, s)
	h := http.Header{}
	h.Set("Accept", "application/json")
	h.Set("Authorization", "token "+g.Token)
	return post(ctx, g.HTTP, "Gitea", u, h, map[string]string{
		"state": giteaStates[s.State], "target_url": s.TargetURL,
		"description": slipway.Truncate(s.Description, 255), "context": StatusContext,
	})
}

// Name implements Hook.
func (g *Gitea) Name() string { return slipway.ForgeGitea }

// Title implements Hook.
func (g *Gitea) Title() string { return "Gitea" }

// WebhookSecret implements Hook.
func (g *Gitea) WebhookSecret() (string, string) {
	return g.Webhook.Secret, "SLIPWAY_GITEA_WEBHOOK_SECRET"
}

// OwnerAllowed implements Hook.
func (g *Gitea) OwnerAllowed(owner string) error {
	return g.ownerAllowed(owner, "SLIPWAY_GITEA_ALLOWED_OWNERS")
}

// Delivery implements Hook; see giteaHeaders.
func (g *Gitea) Delivery(h http.Header) (string, string, error) { return giteaHeaders(h) }

// Payload implements Hook: Gitea always sends JSON as the body.
func (g *Gitea) Payload(h http.Header, body []byte) ([]byte, error) { return jsonPayload(h, body) }

// Locate implements Hook: repository.owner.login and repository.name, as
// GitHub's.
func (g *Gitea) Locate(payload []byte) (string, string, bool) { return locateGitHubStyle(payload) }

// Verify implements Hook; see verifyGiteaSignature.
func (g *Gitea) Verify(secret []byte, h http.Header, body []byte) error {
	return verifyGiteaSignature(secret, h, body)
}

// Parse implements Hook: push (branches and tags) and pull_request; every
// other event is ignored once its JSON parses.
func (g *Gitea) Parse(event, delivery string, payload []byte) (Event, error) {
	return parseGiteaEvent(event, delivery, payload)
}

// firstHeader returns the first of names that h has, and its value.
func firstHeader(h http.Header, names ...string) (string, string) {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return n, v
		}
	}
	return names[0], ""
}

// giteaHeaders reads the event and delivery headers, Forgejo's names first;
// a push needs a delivery id.
func giteaHeaders(h http.Header) (string, string, error) {
	_, event := firstHeader(h, forgejoEventHeader, giteaEventHeader)
	header, delivery := firstHeader(h, forgejoDeliveryHeader, giteaDeliveryHeader)
	if event == "" {
		return event, delivery, slipway.Errorf(slipway.EINVALID, "The %s (or %s) header is missing.", giteaEventHeader, forgejoEventHeader)
	}
	if delivery == "" && event == "push" {
		return event, delivery, slipway.Errorf(slipway.EINVALID, "The %s (or %s) header is missing.", giteaDeliveryHeader, forgejoDeliveryHeader)
	}
	return event, delivery, checkDelivery(header, delivery, event == "push")
}

// verifyGiteaSignature checks the first signature header present, in the
// order X-Forgejo-Signature, X-Gitea-Signature, X-Hub-Signature-256.
func verifyGiteaSignature(secret []byte, h http.Header, body []byte) error {
	header, sig := firstHeader(h, forgejoSignatureHeader, giteaSignatureHeader, githubSignatureHeader)
	switch {
	case sig == "":
		return slipway.Errorf(slipway.EUNAUTHORIZED, "The %s header is missing; set a secret on the webhook.", giteaSignatureHeader)
	case header == githubSignatureHeader:
		return verifyGitHubSignature(secret, sig, body)
	}
	return verifyHexHMAC(secret, header, sig, body)
}

// giteaPush holds the fields of a push payload slipway reads. Gitea's shape
// follows GitHub's; head_commit is missing in older versions.
type giteaPush struct {
	Ref        string            `json:"ref"`
	After      string            `json:"after"`
	Repository *githubRepository `json:"repository"`
	HeadCommit *struct {
		ID      string `json:"id"`
		Message string `json:"message"`
	} `json:"head_commit"`
	Commits []struct {
		ID      string `json:"id"`
		Message string `json:"message"`
	} `json:"commits"`
	Sender *struct {
		Login    string `json:"login"`
		Username string `json:"username"`
	} `json:"sender"`
}

// parseGiteaEvent reads the payload of a delivery of event (X-Gitea-Event).
// A new tag arrives both as a push of refs/tags/… (built) and as a create
// event (ignored), so it builds once.
func parseGiteaEvent(event, delivery string, payload []byte) (Event, error) {
	if event == "pull_request" {
		return parseGitHubStylePullRequest(slipway.ForgeGitea, event, delivery, payload)
	}
	if event != "push" {
		return otherEvent(event, payload)
	}
	var p giteaPush
	if err := json.Unmarshal(payload, &p); err != nil {
		return Event{}, malformed(err)
	}
	out := &push{
		Forge: slipway.ForgeGitea, Delivery: delivery, Ref: p.Ref, After: p.After,
		OwnerField: "repository.owner.login", NameField: "repository.name", URLField: "repository.clone_url",
	}
	if p.Repository == nil {
		out.Missing = "repository"
	} else {
		out.Owner, out.Name, out.CloneURL = p.Repository.owner(), p.Repository.Name, p.Repository.CloneURL
		out.DefaultBranch = p.Repository.DefaultBranch
	}
	if p.HeadCommit != nil {
		out.Message, out.HeadCommit = p.HeadCommit.Message, p.HeadCommit.ID
	} else {
		for _, c := range p.Commits {
			if strings.EqualFold(c.ID, p.After) {
				out.Message = c.Message
			}
		}
	}
	if p.Sender != nil {
		out.Sender = p.Sender.Login
		if out.Sender == "" {
			out.Sender = p.Sender.Username
		}
	}
	return out.event()
}
