package forge

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/slipway-ci/slipway"
)

// Hook reads and verifies the webhook deliveries of one forge. It does no
// I/O: the server reads the body under its budget, looks the repository up,
// and enqueues what Parse returns. Implementations are safe for concurrent
// use; every method is a pure function of its arguments and the forge's
// settings.
//
// For each delivery the server calls, in this order: Payload; Locate, to pick
// the secret (the repository's own, else WebhookSecret); Verify over the raw
// body; Delivery; Parse; and OwnerAllowed before it writes anything. Nothing a
// payload says is trusted before Verify returned nil: Locate's answer only
// chooses which secret checks the signature.
//
// Every error is a *slipway.Error whose message is safe to answer: EINVALID
// for a malformed delivery (naming the header or field), EUNAUTHORIZED for a
// missing or wrong signature, EFORBIDDEN for an owner slipway does not build.
type Hook interface {
	// Name is the forge's key (slipway.ForgeGitHub, …), as in the route
	// /webhooks/{name} and in repos.forge.
	Name() string
	// Title names the forge in messages: "GitHub".
	Title() string
	// WebhookSecret returns the forge's global webhook secret ("" when unset)
	// and the name of its setting, for messages.
	WebhookSecret() (secret, setting string)
	// Payload returns the JSON inside body (GitHub may form-encode it), or
	// EINVALID when the body holds none.
	Payload(h http.Header, body []byte) ([]byte, error)
	// Locate finds the repository a payload is about, before anything is
	// trusted. ok is false when it cannot tell; then the global secret applies.
	Locate(payload []byte) (owner, name string, ok bool)
	// Verify checks the request's signature (or token) against secret and
	// returns EUNAUTHORIZED when it is missing or wrong.
	Verify(secret []byte, h http.Header, body []byte) error
	// Delivery returns the event and the delivery id from the headers, or
	// EINVALID naming the header that is missing or malformed. A delivery that
	// can start a build needs an id: a redelivery is recognized by it.
	Delivery(h http.Header) (event, delivery string, err error)
	// Parse reads a verified payload of event into what it asks for. It
	// returns EINVALID with the parser's reason for malformed JSON, and names
	// the field of a push or pull request slipway could not build from.
	Parse(event, delivery string, payload []byte) (Event, error)
	// OwnerAllowed returns nil when the repositories of owner may have
	// builds, else EFORBIDDEN naming the forge's allowed-owners setting.
	OwnerAllowed(owner string) error
}

// Forge is one forge whole: it receives the forge's webhooks and sets commit
// statuses on it. GitHub, GitLab and Gitea implement it; a new forge is one
// more implementation in this package.
type Forge interface {
	Hook
	Client
}

var (
	_ Forge = (*GitHub)(nil)
	_ Forge = (*GitLab)(nil)
	_ Forge = (*Gitea)(nil)
)

// Webhook holds the webhook settings every forge has.
type Webhook struct {
	// Secret is the global webhook secret (GitLab's secret token); "" receives
	// deliveries only for repositories that have a secret of their own.
	Secret string
	// AllowedOwners, lower case, limits whose pushes are built; empty allows
	// any. An allowed GitLab group allows its subgroups.
	AllowedOwners []string
}

// ownerAllowed returns EFORBIDDEN naming setting unless w allows owner.
func (w *Webhook) ownerAllowed(owner, setting string) error {
	if !ownerAllowed(w.AllowedOwners, owner) {
		return slipway.Errorf(slipway.EFORBIDDEN,
			"Owner %q is not in %s; this slipway does not build its repositories.", owner, setting)
	}
	return nil
}

// ownerAllowed reports whether owner may have builds; allowed is lower case and
// empty allows any. An allowed GitLab group allows its subgroups: "acme"
// allows "acme/platform", never "acme-evil".
func ownerAllowed(allowed []string, owner string) bool {
	owner = strings.ToLower(owner)
	return len(allowed) == 0 || slices.ContainsFunc(allowed, func(a string) bool {
		return owner == a || strings.HasPrefix(owner, a+"/")
	})
}

// Policy applies a registered repository's branch rules to e: a push of a
// branch the repository does not build, and a pull request that would merge
// into one, are ignored. repo is nil for a repository not registered yet,
// which has no rules. A pull request from a fork is not refused here: it is
// queued untrusted (see EnqueueTrigger), goes to the fork image, runs without
// secrets or the integration webhook, and waits for approval unless the
// repository trusts its author's association (slipway.ForkTrusted, decided in
// EnqueueTrigger's transaction).
func (e Event) Policy(repo *slipway.Repo) Event {
	if e.Trigger == nil || repo == nil {
		return e
	}
	if pr := e.Trigger.PullRequest; pr != nil {
		if pr.Base != "" && !repo.BranchAllowed("refs/heads/"+pr.Base) {
			return Event{Ignored: "pull request " + strconv.Itoa(pr.Number) + " targets branch " +
				strconv.Quote(pr.Base) + ", which is not in the repository's allowed branches"}
		}
		return e
	}
	if !repo.BranchAllowed(e.Trigger.Ref) {
		return Event{Ignored: "branch " + strconv.Quote(slipway.RefName(e.Trigger.Ref)) +
			" is not in the repository's allowed branches"}
	}
	return e
}
