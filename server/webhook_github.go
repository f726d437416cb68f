package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime"
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

// GitHub's delivery headers, described in
// https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers.
const (
	githubEventHeader     = "X-GitHub-Event"
	githubDeliveryHeader  = "X-GitHub-Delivery"
	githubSignatureHeader = "X-Hub-Signature-256"
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

// handleGitHubWebhook receives GitHub deliveries at POST /webhooks/github.
//
// The order matters: the body is read whole under a cap, its HMAC is checked
// over the raw bytes before anything parses it, and a push is answered 202 only
// after EnqueueTrigger returned, that is after the build and its queue job were
// committed. An unsigned or wrongly signed request causes no store call at all.
func handleGitHubWebhook(cfg Config, builds slipway.BuildService) http.HandlerFunc {
	secret := []byte(cfg.GitHubWebhookSecret)

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
		Zen string `json:"zen"`
	}

	return func(w http.ResponseWriter, r *http.Request) {
		if len(secret) == 0 {
			writeError(w, r, slipway.Errorf(slipway.EUNAVAILABLE, "GitHub webhooks are disabled: SLIPWAY_GITHUB_WEBHOOK_SECRET is unset."))
			return
		}
		body, err := readBody(w, r, cfg.MaxWebhookBytes)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := verifyGitHubSignature(secret, r.Header.Get(githubSignatureHeader), body); err != nil {
			writeError(w, r, err)
			return
		}

		event, delivery := r.Header.Get(githubEventHeader), r.Header.Get(githubDeliveryHeader)
		log := hlog.FromRequest(r)
		log.UpdateContext(func(c zerolog.Context) zerolog.Context {
			return c.Str("event", event).Str("delivery", delivery)
		})
		if event == "" {
			writeError(w, r, slipway.Errorf(slipway.EINVALID, "The %s header is missing.", githubEventHeader))
			return
		}
		if err := validateDelivery(event, delivery); err != nil {
			writeError(w, r, err)
			return
		}
		payload, err := formPayload(r.Header.Get("Content-Type"), body)
		if err != nil {
			writeError(w, r, err)
			return
		}
		ev, err := parseGitHubEvent(event, delivery, payload)
		if err != nil {
			writeError(w, r, err)
			return
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

		t := *ev.Trigger
		repo := t.Owner + "/" + t.Name
		log.UpdateContext(func(c zerolog.Context) zerolog.Context { return c.Str("repo", repo) })
		if !ownerAllowed(cfg.GitHubAllowedOwners, t.Owner) {
			writeError(w, r, slipway.Errorf(slipway.EFORBIDDEN,
				"Owner %q is not in SLIPWAY_GITHUB_ALLOWED_OWNERS; this slipway does not build its repositories.", t.Owner))
			return
		}
		if cfg.Registry == "" {
			writeError(w, r, slipway.Errorf(slipway.EUNAVAILABLE, "Builds are disabled: SLIPWAY_REGISTRY is unset."))
			return
		}
		image := cfg.Registry + "/" + strings.ToLower(t.Owner) + "/" + strings.ToLower(t.Name)

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

// readBody reads the whole request body, at most limit bytes. A larger body is
// ETOOLARGE, refused from its Content-Length when the client sent one.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	tooLarge := slipway.Errorf(slipway.ETOOLARGE, "The body is larger than %d bytes.", limit)
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return nil, tooLarge
	} else if err != nil {
		return nil, slipway.Errorf(slipway.EINVALID, "Reading the body: %v.", err)
	}
	return body, nil
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
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return slipway.Errorf(slipway.EUNAUTHORIZED, "The %s header is not hex.", githubSignatureHeader)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return slipway.Errorf(slipway.EUNAUTHORIZED, "The %s signature does not match the body.", githubSignatureHeader)
	}
	return nil
}

// validateDelivery checks the delivery id: a push needs one, because a
// redelivery is recognized by it.
func validateDelivery(event, delivery string) error {
	if delivery == "" && event == "push" {
		return slipway.Errorf(slipway.EINVALID, "The %s header is missing.", githubDeliveryHeader)
	}
	if len(delivery) > maxDeliveryBytes || strings.ContainsFunc(delivery, unicode.IsControl) {
		return slipway.Errorf(slipway.EINVALID, "The %s header is not a delivery id.", githubDeliveryHeader)
	}
	return nil
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

// ownerAllowed reports whether owner may have builds; allowed is lower case and
// empty allows any.
func ownerAllowed(allowed []string, owner string) bool {
	return len(allowed) == 0 || slices.Contains(allowed, strings.ToLower(owner))
}

// githubEvent is what one GitHub delivery asks for: exactly one of a ping, a
// reason to ignore it, or a trigger to build.
type githubEvent struct {
	Ping    bool
	Zen     string
	Ignored string
	Trigger *slipway.Trigger
}

// githubPush holds the fields of a push payload slipway reads.
// https://docs.github.com/en/webhooks/webhook-events-and-payloads#push
type githubPush struct {
	Ref        string `json:"ref"`
	After      string `json:"after"`
	Deleted    bool   `json:"deleted"`
	Repository *struct {
		Name     string `json:"name"`
		CloneURL string `json:"clone_url"`
		Owner    struct {
			Login string `json:"login"`
			Name  string `json:"name"`
		} `json:"owner"`
	} `json:"repository"`
	HeadCommit *struct {
		Message string `json:"message"`
	} `json:"head_commit"`
	Sender *struct {
		Login string `json:"login"`
	} `json:"sender"`
}

var (
	commitRE   = regexp.MustCompile(`^[0-9a-fA-F]{40}$`)
	repoPartRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
)

const zeroCommit = "0000000000000000000000000000000000000000"

// parseGitHubEvent reads the payload of a delivery of event. It returns EINVALID
// with the parser's reason for malformed JSON and names the field for a push
// slipway could not build from.
func parseGitHubEvent(event, delivery string, payload []byte) (githubEvent, error) {
	switch event {
	case "ping":
		var p struct {
			Zen string `json:"zen"`
		}
		if err := json.Unmarshal(payload, &p); err != nil {
			return githubEvent{}, malformed(err)
		}
		return githubEvent{Ping: true, Zen: p.Zen}, nil
	case "push":
		var p githubPush
		if err := json.Unmarshal(payload, &p); err != nil {
			return githubEvent{}, malformed(err)
		}
		return pushEvent(delivery, &p)
	default:
		var v json.RawMessage
		if err := json.Unmarshal(payload, &v); err != nil {
			return githubEvent{}, malformed(err)
		}
		return githubEvent{Ignored: "event " + strconv.Quote(event) + " does not start builds"}, nil
	}
}

func malformed(err error) error {
	return slipway.Errorf(slipway.EINVALID, "Malformed JSON payload: %v.", err)
}

// pushEvent maps a push to a trigger, or to the reason it starts no build.
func pushEvent(delivery string, p *githubPush) (githubEvent, error) {
	if p.Ref == "" {
		return githubEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload has no ref.")
	}
	if len(p.Ref) > maxRefBytes || strings.ContainsFunc(p.Ref, unicode.IsControl) {
		return githubEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload's ref is not a git ref.")
	}
	var kind string
	switch {
	case strings.HasPrefix(p.Ref, "refs/heads/"):
		kind = "branch"
	case strings.HasPrefix(p.Ref, "refs/tags/"):
		kind = "tag"
	default:
		return githubEvent{Ignored: "ref " + strconv.Quote(p.Ref) + " is neither a branch nor a tag"}, nil
	}
	short := slipway.RefName(p.Ref)
	if short == "" {
		return githubEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload's ref %q names no %s.", p.Ref, kind)
	}
	if p.Deleted || p.After == zeroCommit {
		return githubEvent{Ignored: kind + " " + strconv.Quote(short) + " was deleted"}, nil
	}
	if !commitRE.MatchString(p.After) {
		return githubEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload's after is not a 40-digit hex commit: %q.", p.After)
	}
	if p.Repository == nil {
		return githubEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload has no repository.")
	}
	owner := p.Repository.Owner.Login
	if owner == "" {
		owner = p.Repository.Owner.Name
	}
	if !validRepoPart(owner) {
		return githubEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload's repository.owner.login is missing or not an owner name: %q.", owner)
	}
	if !validRepoPart(p.Repository.Name) {
		return githubEvent{}, slipway.Errorf(slipway.EINVALID, "The push payload's repository.name is missing or not a repository name: %q.", p.Repository.Name)
	}
	if err := validateCloneURL(p.Repository.CloneURL); err != nil {
		return githubEvent{}, err
	}
	t := &slipway.Trigger{
		Forge:      "github",
		DeliveryID: delivery,
		Event:      "push",
		Owner:      owner,
		Name:       p.Repository.Name,
		CloneURL:   p.Repository.CloneURL,
		Ref:        p.Ref,
		Commit:     strings.ToLower(p.After),
	}
	if p.HeadCommit != nil {
		t.Message = subject(p.HeadCommit.Message)
	}
	if p.Sender != nil {
		t.Sender = printable(p.Sender.Login, 255)
	}
	return githubEvent{Trigger: t}, nil
}

// validRepoPart reports whether s can be an owner or repository name. The check
// is stricter than "non-empty" because both end up in image names and paths.
func validRepoPart(s string) bool {
	return repoPartRE.MatchString(s) && s != "." && s != ".."
}

// validateCloneURL accepts the URL kinds git fetches over the network or from a
// local path (file:// serves tests). A URL starting with "-" could pass for an
// option of git.
func validateCloneURL(s string) error {
	if s == "" {
		return slipway.Errorf(slipway.EINVALID, "The push payload has no repository.clone_url.")
	}
	u, err := url.Parse(s)
	if err != nil || strings.HasPrefix(s, "-") || strings.ContainsFunc(s, unicode.IsControl) || len(s) > maxCloneURLBytes {
		return slipway.Errorf(slipway.EINVALID, "The push payload's repository.clone_url is not a URL: %q.", s)
	}
	switch u.Scheme {
	case "https", "http", "git", "ssh", "file":
		return nil
	}
	return slipway.Errorf(slipway.EINVALID, "The push payload's repository.clone_url has an unsupported scheme: %q.", s)
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
