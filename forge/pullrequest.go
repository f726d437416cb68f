package forge

import (
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/slipway-ci/slipway"
)

// prAction is what a pull-request event asks of slipway.
type prAction int

const (
	prIgnore prAction = iota // labels, edits, reviews, …: nothing to build
	prBuild                  // opened, new commits, reopened: build the head commit
	prCancel                 // closed or merged: stop its builds
)

// RefCancel asks to stop the builds of one ref of a repository still on their
// way: the builds of a pull request that was closed or merged. Reason is kept
// with each canceled build.
type RefCancel struct {
	Forge, Owner, Name, Ref string
	Reason                  string
}

// pullRequest is a pull-request event as every forge describes it, before it
// is checked; field names are the payload's, for messages.
type pullRequest struct {
	Forge, Delivery    string
	Event              string // the event header, for messages
	Action             string // the payload's action, for messages
	Do                 prAction
	Number             int
	Title, Author, URL string
	Head               string // the head commit
	HeadField          string
	BaseBranch         string // the branch it would merge into
	Fork               bool
	// Association is the author's association with the base repository
	// (GitHub's pull_request.author_association; "" from other forges).
	Association       string
	Owner, OwnerField string
	Name, NameField   string
	// CloneURL is the BASE repository's: the head commit is fetched from its
	// pull-request ref, never from the head repository a fork names.
	CloneURL, URLField string
	DefaultBranch      string
	Message            string // the head commit's message when the payload has it
	Sender             string
	// Missing names an object the payload lacks ("repository").
	Missing string
}

// event checks a pull-request event and maps it to a trigger, a cancel, or
// the reason it does nothing; EINVALID names the field slipway could not use.
func (p *pullRequest) event() (Event, error) {
	if p.Do == prIgnore {
		return Event{Ignored: p.Event + " action " + strconv.Quote(shortQuote(p.Action)) + " does not start builds"}, nil
	}
	if p.Missing != "" {
		return Event{}, slipway.Errorf(slipway.EINVALID, "The pull-request payload has no %s.", p.Missing)
	}
	if p.Number <= 0 || p.Number > 999_999_999 {
		return Event{}, slipway.Errorf(slipway.EINVALID, "The pull-request payload has no pull-request number.")
	}
	if !ValidOwner(p.Forge, p.Owner) {
		return Event{}, slipway.Errorf(slipway.EINVALID, "The pull-request payload's %s is missing or not an owner name: %q.", p.OwnerField, shortQuote(p.Owner))
	}
	if !ValidName(p.Name) {
		return Event{}, slipway.Errorf(slipway.EINVALID, "The pull-request payload's %s is missing or not a repository name: %q.", p.NameField, shortQuote(p.Name))
	}
	ref := slipway.PullRequestRef(p.Forge, p.Number)
	if p.Do == prCancel {
		return Event{Cancel: &RefCancel{Forge: p.Forge, Owner: p.Owner, Name: p.Name, Ref: ref,
			Reason: "pull request " + strconv.Itoa(p.Number) + " was " + p.Action}}, nil
	}
	if p.Delivery == "" {
		// A redelivery is recognized by its id; without one it would build twice.
		return Event{}, slipway.Errorf(slipway.EINVALID, "The %s delivery has no delivery id header.", p.Event)
	}
	if !commitRE.MatchString(p.Head) {
		return Event{}, slipway.Errorf(slipway.EINVALID, "The pull-request payload's %s is not a 40-digit hex commit: %q.", p.HeadField, shortQuote(p.Head))
	}
	if err := ValidateCloneURL(p.URLField, p.CloneURL); err != nil {
		return Event{}, err
	}
	if m := skipCIRE.FindString(p.Title); m != "" {
		return Event{Ignored: "the pull request's title contains " + m}, nil
	}
	if m := skipCIRE.FindString(p.Message); m != "" {
		return Event{Ignored: "the head commit message contains " + m}, nil
	}
	def := slipway.Printable(p.DefaultBranch, 255)
	if len(def) != len(p.DefaultBranch) {
		def = ""
	}
	base := slipway.Printable(p.BaseBranch, 255)
	if len(base) != len(p.BaseBranch) || strings.ContainsFunc(base, unicode.IsSpace) {
		base = ""
	}
	msg := subject(p.Message)
	if msg == "" {
		msg = subject(p.Title)
	}
	return Event{Trigger: &slipway.Trigger{
		Forge:         p.Forge,
		DeliveryID:    p.Delivery,
		Event:         "pull_request",
		Owner:         p.Owner,
		Name:          p.Name,
		CloneURL:      p.CloneURL,
		Ref:           ref,
		Commit:        strings.ToLower(p.Head),
		Message:       msg,
		Sender:        slipway.Printable(p.Sender, 255),
		DefaultBranch: def,
		PullRequest: &slipway.PullRequest{
			Number: p.Number,
			Title:  subject(p.Title),
			Author: slipway.Printable(p.Author, 255),
			URL:    webURL(p.URL),
			Fork:   p.Fork,
			Base:   base,
			// Only GitHub's upper-case words are kept; anything else trusts nothing.
			AuthorAssociation: associationRE.FindString(p.Association),
		},
	}}, nil
}

// associationRE is the shape of GitHub's author_association values.
var associationRE = regexp.MustCompile(`^[A-Z_]{1,32}$`)

// webURL keeps u when it is an http(s) URL fit to link to, else "".
func webURL(u string) string {
	parsed, err := url.Parse(u)
	if err != nil || len(u) > maxCloneURLBytes || strings.ContainsFunc(u, unicode.IsControl) ||
		(parsed.Scheme != "https" && parsed.Scheme != "http") || parsed.Host == "" {
		return ""
	}
	return u
}
