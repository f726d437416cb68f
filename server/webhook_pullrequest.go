package server

import (
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/rs/zerolog/hlog"

	"github.com/slipway-ci/slipway"
)

// prAction is what a pull-request event asks of slipway.
type prAction int

const (
	prIgnore prAction = iota // labels, edits, reviews, …: nothing to build
	prBuild                  // opened, new commits, reopened: build the head commit
	prCancel                 // closed or merged: stop its builds
)

// refCancel asks to stop the builds of one ref of a repository still on their
// way: the builds of a pull request that was closed or merged.
type refCancel struct {
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
func (p *pullRequest) event() (webhookEvent, error) {
	if p.Do == prIgnore {
		return webhookEvent{Ignored: p.Event + " action " + strconv.Quote(shortQuote(p.Action)) + " does not start builds"}, nil
	}
	if p.Missing != "" {
		return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The pull-request payload has no %s.", p.Missing)
	}
	if p.Number <= 0 || p.Number > 999_999_999 {
		return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The pull-request payload has no pull-request number.")
	}
	if !validOwner(p.Forge, p.Owner) {
		return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The pull-request payload's %s is missing or not an owner name: %q.", p.OwnerField, shortQuote(p.Owner))
	}
	if !validRepoPart(p.Name) {
		return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The pull-request payload's %s is missing or not a repository name: %q.", p.NameField, shortQuote(p.Name))
	}
	ref := slipway.PullRequestRef(p.Forge, p.Number)
	if p.Do == prCancel {
		return webhookEvent{Cancel: &refCancel{Forge: p.Forge, Owner: p.Owner, Name: p.Name, Ref: ref,
			Reason: "pull request " + strconv.Itoa(p.Number) + " was " + p.Action}}, nil
	}
	if p.Delivery == "" {
		// A redelivery is recognized by its id; without one it would build twice.
		return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The %s delivery has no delivery id header.", p.Event)
	}
	if !commitRE.MatchString(p.Head) {
		return webhookEvent{}, slipway.Errorf(slipway.EINVALID, "The pull-request payload's %s is not a 40-digit hex commit: %q.", p.HeadField, shortQuote(p.Head))
	}
	if err := validateCloneURL(p.URLField, p.CloneURL); err != nil {
		return webhookEvent{}, err
	}
	if m := skipCIRE.FindString(p.Title); m != "" {
		return webhookEvent{Ignored: "the pull request's title contains " + m}, nil
	}
	if m := skipCIRE.FindString(p.Message); m != "" {
		return webhookEvent{Ignored: "the head commit message contains " + m}, nil
	}
	def := printable(p.DefaultBranch, 255)
	if len(def) != len(p.DefaultBranch) {
		def = ""
	}
	base := printable(p.BaseBranch, 255)
	if len(base) != len(p.BaseBranch) || strings.ContainsFunc(base, unicode.IsSpace) {
		base = ""
	}
	msg := subject(p.Message)
	if msg == "" {
		msg = subject(p.Title)
	}
	return webhookEvent{Trigger: &slipway.Trigger{
		Forge:         p.Forge,
		DeliveryID:    p.Delivery,
		Event:         "pull_request",
		Owner:         p.Owner,
		Name:          p.Name,
		CloneURL:      p.CloneURL,
		Ref:           ref,
		Commit:        strings.ToLower(p.Head),
		Message:       msg,
		Sender:        printable(p.Sender, 255),
		DefaultBranch: def,
		PullRequest: &slipway.PullRequest{
			Number: p.Number,
			Title:  subject(p.Title),
			Author: printable(p.Author, 255),
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

// pullRequestPolicy decides whether a pull-request trigger builds: one that
// would merge into a branch the repository does not build is ignored. One
// from a fork is queued untrusted (see EnqueueTrigger): it goes to the fork
// image, runs without secrets or the integration webhook, and waits for
// approval unless the repository trusts its author's association
// (slipway.ForkTrusted, decided in EnqueueTrigger's transaction).
func pullRequestPolicy(ev webhookEvent, repo *slipway.Repo) webhookEvent {
	if ev.Trigger == nil || ev.Trigger.PullRequest == nil {
		return ev
	}
	pr := ev.Trigger.PullRequest
	if repo != nil && pr.Base != "" && !repo.BranchAllowed("refs/heads/"+pr.Base) {
		return webhookEvent{Ignored: "pull request " + strconv.Itoa(pr.Number) + " targets branch " +
			strconv.Quote(pr.Base) + ", which is not in the repository's allowed branches"}
	}
	return ev
}

// cancelPullRequest answers a closed pull request: its builds still on their
// way are canceled, 202 with their ids.
func cancelPullRequest(w http.ResponseWriter, r *http.Request, rc receiver, builds slipway.BuildService, c *refCancel) {
	type canceled struct {
		Canceled []int64 `json:"canceled"`
	}
	if !ownerAllowed(rc.allowedOwners, c.Owner) {
		writeError(w, r, slipway.Errorf(slipway.EFORBIDDEN,
			"Owner %q is not in %s; this slipway does not build its repositories.", c.Owner, rc.ownersSetting))
		return
	}
	ids, err := builds.CancelRefBuilds(r.Context(), c.Forge, c.Owner, c.Name, c.Ref, c.Reason)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if ids == nil {
		ids = []int64{}
	}
	hlog.FromRequest(r).Info().Str("repo", c.Owner+"/"+c.Name).Str("ref", c.Ref).Ints64("canceled", ids).Msg("Pull request closed")
	writeJSON(w, r, http.StatusAccepted, canceled{Canceled: ids})
}
