package server

import (
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

// githubReceiver receives GitHub deliveries at POST /webhooks/github.
func githubReceiver(cfg Config) receiver {
	return receiver{
		forge:         slipway.ForgeGitHub,
		title:         "GitHub",
		secretSetting: "SLIPWAY_GITHUB_WEBHOOK_SECRET",
		secret:        cfg.GitHubWebhookSecret,
		headers: func(h http.Header) (string, string, error) {
			event, delivery := h.Get(githubEventHeader), h.Get(githubDeliveryHeader)
			if event == "" {
				return event, delivery, slipway.Errorf(slipway.EINVALID, "The %s header is missing.", githubEventHeader)
			}
			return event, delivery, checkDelivery(githubDeliveryHeader, delivery, event == "push")
		},
		payload: func(h http.Header, body []byte) ([]byte, error) { return formPayload(h.Get("Content-Type"), body) },
		locate:  locateGitHubStyle,
		verify: func(secret []byte, h http.Header, body []byte) error {
			return verifyGitHubSignature(secret, h.Get(githubSignatureHeader), body)
		},
		parse:         parseGitHubEvent,
		allowedOwners: cfg.GitHubAllowedOwners,
		ownersSetting: "SLIPWAY_GITHUB_ALLOWED_OWNERS",
	}
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
	return owner, p.Repository.Name, validRepoPart(owner) && validRepoPart(p.Repository.Name)
}

// githubPush holds the fields of a push payload slipway reads.
// https://docs.github.com/en/webhooks/webhook-events-and-payloads#push
type githubPush struct {
	Ref        string            `json:"ref"`
	After      string            `json:"after"`
	Deleted    bool              `json:"deleted"`
	Repository *githubRepository `json:"repository"`
	HeadCommit *struct {
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
		out.Message = p.HeadCommit.Message
	}
	if p.Sender != nil {
		out.Sender = p.Sender.Login
	}
	return out
}

// parseGitHubEvent reads the payload of a delivery of event. It returns EINVALID
// with the parser's reason for malformed JSON and names the field for a push
// slipway could not build from.
func parseGitHubEvent(event, delivery string, payload []byte) (webhookEvent, error) {
	switch event {
	case "ping":
		var p struct {
			Zen string `json:"zen"`
		}
		if err := json.Unmarshal(payload, &p); err != nil {
			return webhookEvent{}, malformed(err)
		}
		return webhookEvent{Ping: true, Zen: p.Zen}, nil
	case "push":
		var p githubPush
		if err := json.Unmarshal(payload, &p); err != nil {
			return webhookEvent{}, malformed(err)
		}
		return p.push(slipway.ForgeGitHub, delivery).event()
	default:
		return otherEvent(event, payload)
	}
}

// otherEvent answers an event that starts no build, once its JSON parses.
func otherEvent(event string, payload []byte) (webhookEvent, error) {
	var v json.RawMessage
	if err := json.Unmarshal(payload, &v); err != nil {
		return webhookEvent{}, malformed(err)
	}
	return webhookEvent{Ignored: "event " + strconv.Quote(event) + " does not start builds"}, nil
}
