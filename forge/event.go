package forge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/slipway-ci/slipway"
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

// Event is what one delivery asks for: exactly one of a ping, a reason to
// ignore it, or a trigger to build.
type Event struct {
	// Ping is a forge's test delivery; Zen is GitHub's saying in it.
	Ping bool
	Zen  string
	// Ignored is why the delivery starts no build; it is answered 202.
	Ignored string
	// Trigger is what to build.
	Trigger *slipway.Trigger
	// Cancel stops the builds of a closed pull request.
	Cancel *RefCancel
}

// jsonPayload is the payload of forges that always send JSON as the body.
func jsonPayload(_ http.Header, body []byte) ([]byte, error) { return body, nil }

// wrongSecretHint says which secret a refused delivery should have been
// signed or sent with.
const wrongSecretHint = "set the webhook's secret to the one slipway has for this repository " +
	"(printed by `slipway repo add` or `slipway repo rotate-secret`; a repository without its own uses the forge's SLIPWAY_*_WEBHOOK_SECRET/TOKEN setting)."

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
		return slipway.Errorf(slipway.EUNAUTHORIZED, "The %s signature does not match the body: %s", header, wrongSecretHint)
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

var (
	commitRE   = regexp.MustCompile(`^[0-9a-fA-F]{40}$`)
	repoPartRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	skipCIRE   = regexp.MustCompile(`(?i)\[(skip ci|ci skip)\]`)
)

// ValidCommit reports whether s is a full commit id: 40 hex digits.
func ValidCommit(s string) bool { return commitRE.MatchString(s) }

const zeroCommit = "0000000000000000000000000000000000000000"

// ValidRefName reports whether name is a ref name git accepts, by the rules
// of git check-ref-format with --allow-onelevel (so "main" is one too): no
// empty component (no leading, trailing or double "/"), none that begins
// with "." or ends with ".lock", no "..", no "@{", not "@", no trailing ".",
// and no space, "~", "^", ":", "?", "*", "[", "\" or control character
// (git allows other bytes above 0x7f; so does this, but not Unicode's C1
// controls).
func ValidRefName(name string) bool {
	if name == "" || name == "@" || strings.HasSuffix(name, ".") || strings.Contains(name, "..") || strings.Contains(name, "@{") ||
		strings.ContainsAny(name, " ~^:?*[\\") || strings.ContainsFunc(name, unicode.IsControl) {
		return false
	}
	for c := range strings.SplitSeq(name, "/") {
		if c == "" || strings.HasPrefix(c, ".") || strings.HasSuffix(c, ".lock") {
			return false
		}
	}
	return true
}

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
func (p *push) event() (Event, error) {
	if p.Ref == "" {
		return Event{}, slipway.Errorf(slipway.EINVALID, "The push payload has no ref.")
	}
	if len(p.Ref) > maxRefBytes {
		return Event{}, slipway.Errorf(slipway.EINVALID, "The push payload's ref is %d bytes long; slipway builds refs of up to %d bytes.", len(p.Ref), maxRefBytes)
	}
	var kind string
	switch {
	case strings.HasPrefix(p.Ref, "refs/heads/"):
		kind = "branch"
	case strings.HasPrefix(p.Ref, "refs/tags/"):
		kind = "tag"
	default:
		return Event{Ignored: "ref " + strconv.Quote(p.Ref) + " is neither a branch nor a tag"}, nil
	}
	short := slipway.RefName(p.Ref)
	if short == "" {
		return Event{}, slipway.Errorf(slipway.EINVALID, "The push payload's ref %q names no %s.", p.Ref, kind)
	}
	if !ValidRefName(p.Ref) {
		return Event{}, slipway.Errorf(slipway.EINVALID, "The push payload's ref %q is not a ref name git accepts (see git check-ref-format).", p.Ref)
	}
	if p.Deleted || p.After == zeroCommit {
		return Event{Ignored: kind + " " + strconv.Quote(short) + " was deleted"}, nil
	}
	if !commitRE.MatchString(p.After) {
		return Event{}, slipway.Errorf(slipway.EINVALID, "The push payload's after is not a 40-digit hex commit: %q.", shortQuote(p.After))
	}
	commit := p.After
	if kind == "tag" && p.HeadCommit != "" {
		// git tag -a: after names the tag object, which is not what the
		// worker checks out nor what a commit status can be set on.
		if !commitRE.MatchString(p.HeadCommit) {
			return Event{}, slipway.Errorf(slipway.EINVALID, "The push payload's head_commit.id is not a 40-digit hex commit: %q.", shortQuote(p.HeadCommit))
		}
		commit = p.HeadCommit
	}
	if p.Missing != "" {
		return Event{}, slipway.Errorf(slipway.EINVALID, "The push payload has no %s.", p.Missing)
	}
	if !ValidOwner(p.Forge, p.Owner) {
		return Event{}, slipway.Errorf(slipway.EINVALID, "The push payload's %s is missing or not an owner name: %q.", p.OwnerField, shortQuote(p.Owner))
	}
	if !ValidName(p.Name) {
		return Event{}, slipway.Errorf(slipway.EINVALID, "The push payload's %s is missing or not a repository name: %q.", p.NameField, shortQuote(p.Name))
	}
	if err := ValidateCloneURL(p.URLField, p.CloneURL); err != nil {
		return Event{}, err
	}
	if m := skipCIRE.FindString(p.Message); m != "" {
		return Event{Ignored: "the head commit message contains " + m}, nil
	}
	def := slipway.Printable(p.DefaultBranch, 255)
	if len(def) != len(p.DefaultBranch) {
		def = "" // not a branch name; the repository's stays as it was
	}
	return Event{Trigger: &slipway.Trigger{
		Forge:         p.Forge,
		DeliveryID:    p.Delivery,
		Event:         "push",
		Owner:         p.Owner,
		Name:          p.Name,
		CloneURL:      p.CloneURL,
		Ref:           p.Ref,
		Commit:        strings.ToLower(commit),
		Message:       subject(p.Message),
		Sender:        slipway.Printable(p.Sender, 255),
		DefaultBranch: def,
	}}, nil
}

// shortQuote keeps messages about a bad value short whatever its size.
func shortQuote(s string) string { return slipway.Printable(s, 100) }

func malformed(err error) error {
	return slipway.Errorf(slipway.EINVALID, "Malformed JSON payload: %v.", err)
}

// ValidName reports whether s can be an owner or repository name. The check
// is stricter than "non-empty" because both end up in image names and paths.
func ValidName(s string) bool {
	return repoPartRE.MatchString(s) && s != "." && s != ".."
}

// maxGitLabDepth is how deep GitLab nests groups (a namespace of at most 20
// groups: https://docs.gitlab.com/user/group/subgroups/).
const maxGitLabDepth = 20

// ValidOwner reports whether s can be the owner of a repository of forge: one
// name as ValidName checks it, or for GitLab a namespace of up to 20
// "/"-separated group names ("group/sub"). Other forges have no nested
// owners, so a slash there is refused: it would put a repository's image
// under another repository's path.
func ValidOwner(forge, s string) bool {
	if forge != slipway.ForgeGitLab {
		return ValidName(s)
	}
	parts := strings.Split(s, "/")
	if len(parts) > maxGitLabDepth || len(s) > 255 {
		return false
	}
	for _, p := range parts {
		if !ValidName(p) {
			return false
		}
	}
	return true
}

// ValidateCloneURL accepts the URL kinds git fetches over the network or from a
// local path (file:// serves tests). A URL starting with "-" could pass for an
// option of git. It returns EINVALID naming field, where the URL came from,
// for an empty, malformed or unsupported URL.
func ValidateCloneURL(field, s string) error {
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
	return slipway.Printable(strings.TrimRight(line, "\r"), maxMessageBytes)
}
