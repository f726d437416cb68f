package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"github.com/rs/zerolog/hlog"
	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/metrics"
)

// Limits on what a delivery may carry; they match the schema's CHECK constraints
// so a bad delivery gets a 400 naming the field instead of a constraint error.
const (
	maxDeliveryBytes = 200
	maxRefBytes      = 1024
	maxCloneURLBytes = 2048
)

// maxMessageBytes caps the commit subject kept with a build; a subject line is
// rarely longer than 100 characters, but nothing stops a commit from having
// one of a megabyte.
const maxMessageBytes = 1000

// webhookEvent is what one delivery asks for: exactly one of a ping, a reason to
// ignore it, or a trigger to build.
type webhookEvent struct {
	Ping    bool
	Zen     string
	Ignored string
	Trigger *slipway.Trigger
	// Cancel stops the builds of a closed pull request.
	Cancel *refCancel
}

// receiver is what differs between the forges' webhooks; handleWebhook does
// the rest the same way for all of them.
type receiver struct {
	forge string // slipway.ForgeGitHub, …
	// title names the forge in messages: "GitHub".
	title string
	// secretSetting names the variable of the global secret, for messages.
	secretSetting string
	// secret is the global secret or token; "" when unset.
	secret string
	// headers returns the event and the delivery id, or EINVALID naming the header.
	headers func(h http.Header) (event, delivery string, err error)
	// payload returns the JSON inside the body (GitHub may form-encode it).
	payload func(h http.Header, body []byte) ([]byte, error)
	// locate finds the repository a payload is about, before anything is
	// trusted: it only picks which secret checks the signature. ok is false
	// when it cannot tell; then the global secret applies.
	locate func(payload []byte) (owner, name string, ok bool)
	// verify checks the request's signature or token against secret, returning
	// EUNAUTHORIZED when it is missing or wrong.
	verify func(secret []byte, h http.Header, body []byte) error
	// parse reads a verified payload.
	parse func(event, delivery string, payload []byte) (webhookEvent, error)
	// allowedOwners, lower case, limits whose pushes are built; empty allows any.
	allowedOwners []string
	// ownersSetting names the variable of allowedOwners, for messages.
	ownersSetting string
}

// handleWebhook receives one forge's deliveries.
//
// The order matters. The body is read whole under a cap, and in budget (see
// bodyBudget.readBody) until the answer is written. The repository is
// looked up (reads only) to learn whether it has its own secret; then the
// signature is checked over the raw bytes before the payload is trusted, and a
// push is answered 202 only after EnqueueTrigger returned, that is after the
// build and its queue job were committed. An unsigned or wrongly signed request
// writes nothing.
func handleWebhook(cfg Config, budget *bodyBudget, rc receiver, repos slipway.RepoService, builds slipway.BuildService) http.HandlerFunc {
	type accepted struct {
		BuildID   int64  `json:"build_id"`
		URL       string `json:"url"`
		Duplicate bool   `json:"duplicate"`
	}
	type ignored struct {
		Ignored string `json:"ignored"`
	}
	type pong struct {
		OK  bool   `json:"ok"`
		Zen string `json:"zen,omitempty"`
	}

	return func(w http.ResponseWriter, r *http.Request) {
		log := hlog.FromRequest(r)
		log.UpdateContext(func(c zerolog.Context) zerolog.Context { return c.Str("forge", rc.forge) })
		body, release, err := budget.readBody(w, r, cfg.MaxWebhookBytes)
		defer release()
		if err != nil {
			writeError(w, r, err)
			return
		}
		payload, payloadErr := rc.payload(r.Header, body)

		secret, repo := rc.secret, (*slipway.Repo)(nil)
		if owner, name, ok := rc.locate(payload); ok && payloadErr == nil && repos != nil {
			found, own, err := repos.FindRepoWebhookSecret(r.Context(), rc.forge, owner, name)
			if err != nil {
				writeError(w, r, err)
				return
			}
			repo = found
			if own != "" {
				secret = own
			}
		}
		if secret == "" {
			writeError(w, r, slipway.Errorf(slipway.EUNAVAILABLE,
				"%s webhooks are disabled: %s is unset and the repository has no webhook secret of its own.", rc.title, rc.secretSetting))
			return
		}
		if err := rc.verify([]byte(secret), r.Header, body); err != nil {
			writeError(w, r, err)
			return
		}

		event, delivery, err := rc.headers(r.Header)
		log.UpdateContext(func(c zerolog.Context) zerolog.Context {
			return c.Str("event", event).Str("delivery", delivery)
		})
		if err != nil {
			writeError(w, r, err)
			return
		}
		if payloadErr != nil {
			writeError(w, r, payloadErr)
			return
		}
		ev, err := rc.parse(event, delivery, payload)
		if err != nil {
			writeError(w, r, err)
			return
		}
		ev = pullRequestPolicy(ev, repo)
		if ev.Trigger != nil && ev.Trigger.PullRequest == nil && repo != nil && !repo.BranchAllowed(ev.Trigger.Ref) {
			ev = webhookEvent{Ignored: "branch " + strconv.Quote(slipway.RefName(ev.Trigger.Ref)) +
				" is not in the repository's allowed branches"}
		}

		switch {
		case ev.Ping:
			log.Info().Msg("Webhook ping")
			writeJSON(w, r, http.StatusOK, pong{OK: true, Zen: ev.Zen})
			return
		case ev.Ignored != "":
			log.Info().Str("reason", ev.Ignored).Msg("Webhook ignored")
			metrics.SetWebhookOutcome(r.Context(), metrics.WebhookIgnored)
			writeJSON(w, r, http.StatusAccepted, ignored{Ignored: ev.Ignored})
			return
		}

		if ev.Cancel != nil {
			cancelPullRequest(w, r, rc, builds, ev.Cancel)
			return
		}
		t := *ev.Trigger
		log.UpdateContext(func(c zerolog.Context) zerolog.Context { return c.Str("repo", t.Owner+"/"+t.Name) })
		if !ownerAllowed(rc.allowedOwners, t.Owner) {
			writeError(w, r, slipway.Errorf(slipway.EFORBIDDEN,
				"Owner %q is not in %s; this slipway does not build its repositories.", t.Owner, rc.ownersSetting))
			return
		}
		if repo == nil && !cfg.AutoRegister {
			writeError(w, r, slipway.Errorf(slipway.EFORBIDDEN,
				"Repository %s/%s is not registered on this slipway. An admin registers it with `slipway repo add %s %s/%s` (or POST /api/v1/repos), or sets SLIPWAY_AUTO_REGISTER=true to let signed deliveries register repositories.",
				t.Owner, t.Name, rc.forge, t.Owner, t.Name))
			return
		}
		// The clone URL is a setting: a registered repository keeps its own
		// (EnqueueTrigger never changes it), a new one gets its forge's.
		if repo == nil && !cfg.CloneURLFromPayload {
			u, err := forgeCloneURL(cfg, t.Forge, t.Owner, t.Name)
			if err != nil {
				writeError(w, r, err)
				return
			}
			t.CloneURL = u
		}
		if cfg.Registry == "" {
			writeError(w, r, slipway.Errorf(slipway.EUNAVAILABLE, "Builds are disabled: SLIPWAY_REGISTRY is unset."))
			return
		}
		// A registered repository keeps its own image setting: EnqueueTrigger
		// uses the stored one and this only names the image of a new repository
		// (slipway.ImageRepository: one rule maps every name a forge allows).
		// A name that maps to no image is answered 202 ignored, not 4xx: a
		// forge disables a webhook that keeps failing, and a group webhook
		// serves every other project too.
		image, err := slipway.ImageRepository(cfg.Registry, t.Owner, t.Name)
		if err != nil && repo == nil {
			reason := slipway.ErrorMessage(err)
			log.Warn().Str("reason", reason).Msg("Webhook ignored")
			metrics.SetWebhookOutcome(r.Context(), metrics.WebhookIgnored)
			writeJSON(w, r, http.StatusAccepted, ignored{Ignored: reason})
			return
		}

		res, err := builds.EnqueueTrigger(r.Context(), t, image)
		if err != nil {
			writeError(w, r, err)
			return
		}
		id := res.Build.ID
		log.UpdateContext(func(c zerolog.Context) zerolog.Context { return c.Int64("build_id", id) })
		if res.Created {
			log.Info().Str("ref", t.Ref).Str("commit", t.Commit).Msg("Build queued")
		} else {
			log.Info().Msg("Delivery seen before")
		}
		u := cfg.PublicURL + "/api/v1/builds/" + strconv.FormatInt(id, 10)
		w.Header().Set("Location", u)
		writeJSON(w, r, http.StatusAccepted, accepted{BuildID: id, URL: u, Duplicate: !res.Created})
	}
}

// jsonPayload is the payload of forges that always send JSON as the body.
func jsonPayload(_ http.Header, body []byte) ([]byte, error) { return body, nil }

// verifyHexHMAC checks that hexSig is the hex HMAC-SHA256 of body keyed with
// secret, in constant time; header names the header for the message.
func verifyHexHMAC(secret []byte, header, hexSig string, body []byte) error {
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return slipway.Errorf(slipway.EUNAUTHORIZED, "The %s header is not hex.", header)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return slipway.Errorf(slipway.EUNAUTHORIZED, "The %s signature does not match the body.", header)
	}
	return nil
}

// checkDelivery checks a delivery id taken from header: a push needs one,
// because a redelivery is recognized by it.
func checkDelivery(header, delivery string, required bool) error {
	if delivery == "" && required {
		return slipway.Errorf(slipway.EINVALID, "The %s header is missing.", header)
	}
	if len(delivery) > maxDeliveryBytes || strings.ContainsFunc(delivery, unicode.IsControl) {
		return slipway.Errorf(slipway.EINVALID, "The %s header is not a delivery id.", header)
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

var (
	commitRE   = regexp.MustCompile(`^[0-9a-fA-F]{40}$`)
	repoPartRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	skipCIRE   = regexp.MustCompile(`(?i)\[(skip ci|ci skip)\]`)
)

const zeroCommit = "0000000000000000000000000000000000000000"

// push is a push as every forge describes it, before it is checked; field
// names are the payload's, for messages.
type push struct {
	Forge, Delivery string
	Ref, After      string
	// HeadCommit is the id of the payload's head_commit: for a tag it is the
	// commit the tag points at, where After of an annotated tag is the tag
	// object (GitHub, Gitea and Forgejo send both).
	HeadCommit         string
	Deleted            bool
	Owner, OwnerField  string
	Name, NameField    string
	CloneURL, URLField string
	DefaultBranch      string
	Message            string // the head commit's whole message
	Sender             string
	// Missing names an object the payload lacks ("repository"), reported once
	// the push is known to need it.
	Missing string
}

// event checks a push and maps it to a trigger, or to the reason it starts no
// build; EINVALID names the field slipway could not build from.
func (p *push) event() (webhookEvent, error) {
	if p.Ref == "" {
		return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload has no ref.")
	}
	if len(p.Ref) > maxRefBytes || strings.ContainsFunc(p.Ref, unicode.IsControl) {
		return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload's ref is not a git ref.")
	}
	var kind string
	switch {
	case strings.HasPrefix(p.Ref, "refs/heads/"):
		kind = "branch"
	case strings.HasPrefix(p.Ref, "refs/tags/"):
		kind = "tag"
	default:
		return webhookEvent{Ignored: "ref " + strconv.Quote(p.Ref) + " is neither a branch nor a tag"}, nil
	}
	short := slipway.RefName(p.Ref)
	if short == "" {
		return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload's ref %q names no %s.", p.Ref, kind)
	}
	if p.Deleted || p.After == zeroCommit {
		return webhookEvent{Ignored: kind + " " + strconv.Quote(short) + " was deleted"}, nil
	}
	if !commitRE.MatchString(p.After) {
		return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload's after is not a 40-digit hex commit: %q.", shortQuote(p.After))
	}
	commit := p.After
	if kind == "tag" && p.HeadCommit != "" {
		// git tag -a: after names the tag object, which is not what the
		// worker checks out nor what a commit status can be set on.
		if !commitRE.MatchString(p.HeadCommit) {
			return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload's head_commit.id is not a 40-digit hex commit: %q.", shortQuote(p.HeadCommit))
		}
		commit = p.HeadCommit
	}
	if p.Missing != "" {
		return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload has no %s.", p.Missing)
	}
	if !validOwner(p.Forge, p.Owner) {
		return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload's %s is missing or not an owner name: %q.", p.OwnerField, shortQuote(p.Owner))
	}
	if !validRepoPart(p.Name) {
		return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload's %s is missing or not a repository name: %q.", p.NameField, shortQuote(p.Name))
	}
	if err := validateCloneURL(p.URLField, p.CloneURL); err != nil {
		return webhookEvent{}, err
	}
	if m := skipCIRE.FindString(p.Message); m != "" {
		return webhookEvent{Ignored: "the head commit message contains " + m}, nil
	}
	def := printable(p.DefaultBranch, 255)
	if len(def) != len(p.DefaultBranch) {
		def = "" // not a branch name; the repository's stays as it was
	}
	return webhookEvent{Trigger: &slipway.Trigger{
		Forge:         p.Forge,
		DeliveryID:    p.Delivery,
		Event:         "push",
		Owner:         p.Owner,
		Name:          p.Name,
		CloneURL:      p.CloneURL,
		Ref:           p.Ref,
		Commit:        strings.ToLower(commit),
		Message:       subject(p.Message),
		Sender:        printable(p.Sender, 255),
		DefaultBranch: def,
	}}, nil
}

// shortQuote keeps messages about a bad value short whatever its size.
func shortQuote(s string) string { return printable(s, 100) }

func malformed(err error) error {
	return slipway.Errorf(slipway.EINVALID, "Malformed JSON payload: %v.", err)
}

// validRepoPart reports whether s can be an owner or repository name. The check
// is stricter than "non-empty" because both end up in image names and paths.
func validRepoPart(s string) bool {
	return repoPartRE.MatchString(s) && s != "." && s != ".."
}

// forgeCloneURL is the clone URL of owner/name on forge: the forge's base URL
// setting, then /owner/name.git. EUNAVAILABLE names the setting when the
// forge has no base URL.
func forgeCloneURL(cfg Config, forge, owner, name string) (string, error) {
	var base, setting string
	switch forge {
	case slipway.ForgeGitHub:
		base, setting = cfg.GitHubURL, "SLIPWAY_GITHUB_URL"
	case slipway.ForgeGitLab:
		base, setting = cfg.GitLabURL, "SLIPWAY_GITLAB_URL"
	case slipway.ForgeGitea:
		base, setting = cfg.GiteaURL, "SLIPWAY_GITEA_URL"
	}
	if base == "" {
		return "", slipway.Errorf(slipway.EUNAVAILABLE,
			"Repository %s/%s is not registered and %s is unset: set it to the forge's URL, or register the repository with its clone URL (POST /api/v1/repos).",
			owner, name, setting)
	}
	return strings.TrimRight(base, "/") + "/" + owner + "/" + name + ".git", nil
}

// maxGitLabDepth is how deep GitLab nests groups (a namespace of at most 20
// groups: https://docs.gitlab.com/user/group/subgroups/).
const maxGitLabDepth = 20

// validOwner reports whether s can be the owner of a repository of forge: one
// name as validRepoPart checks it, or for GitLab a namespace of up to 20
// "/"-separated group names ("group/sub"). Other forges have no nested
// owners, so a slash there is refused: it would put a repository's image
// under another repository's path.
func validOwner(forge, s string) bool {
	if forge != slipway.ForgeGitLab {
		return validRepoPart(s)
	}
	parts := strings.Split(s, "/")
	if len(parts) > maxGitLabDepth || len(s) > 255 {
		return false
	}
	for _, p := range parts {
		if !validRepoPart(p) {
			return false
		}
	}
	return true
}

// validateCloneURL accepts the URL kinds git fetches over the network or from a
// local path (file:// serves tests). A URL starting with "-" could pass for an
// option of git. field names where the URL came from.
func validateCloneURL(field, s string) error {
	if s == "" {
		return slipway.Errorf(slipway.EINVALID, "The push payload has no %s.", field)
	}
	u, err := url.Parse(s)
	if err != nil || strings.HasPrefix(s, "-") || strings.ContainsFunc(s, unicode.IsControl) || len(s) > maxCloneURLBytes {
		return slipway.Errorf(slipway.EINVALID, "The %s is not a URL: %q.", field, shortQuote(s))
	}
	switch u.Scheme {
	case "https", "http", "git", "ssh", "file":
		return nil
	}
	return slipway.Errorf(slipway.EINVALID, "The %s has an unsupported scheme: %q.", field, shortQuote(s))
}

// subject returns the first line of a commit message, without control
// characters and at most maxMessageBytes long.
func subject(msg string) string {
	line, _, _ := strings.Cut(msg, "\n")
	return printable(strings.TrimRight(line, "\r"), maxMessageBytes)
}

// printable drops control characters (Postgres refuses NUL in text) and cuts s
// to at most n bytes on a rune boundary.
func printable(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
