package slipway

import (
	"context"
	"io"
	"regexp"
	"strings"
	"time"
)

// BuildState is the state of a build. The values mirror the CHECK constraint on
// builds.state in the schema.
type BuildState string

// Build states. A build moves queued → running → testing → succeeded, or ends
// failed or canceled from any state before that. A build whose worker died goes
// back to queued and runs again (a new attempt).
const (
	BuildQueued    BuildState = "queued"
	BuildRunning   BuildState = "running"
	BuildTesting   BuildState = "testing"
	BuildSucceeded BuildState = "succeeded"
	BuildFailed    BuildState = "failed"
	BuildCanceled  BuildState = "canceled"
)

// BuildStates lists every state, in lifecycle order.
var BuildStates = []BuildState{BuildQueued, BuildRunning, BuildTesting, BuildSucceeded, BuildFailed, BuildCanceled}

// Valid reports whether s is one of BuildStates.
func (s BuildState) Valid() bool {
	for _, v := range BuildStates {
		if s == v {
			return true
		}
	}
	return false
}

// Done reports whether s is a final state.
func (s BuildState) Done() bool {
	return s == BuildSucceeded || s == BuildFailed || s == BuildCanceled
}

// Default platforms built when a repository does not list its own.
var DefaultPlatforms = []string{"linux/amd64", "linux/arm64"}

// Build is one run of the pipeline for one commit of one repository.
type Build struct {
	ID     int64  `json:"id"`
	RepoID int64  `json:"repo_id"`
	Repo   string `json:"repo"` // owner/name
	Forge  string `json:"forge"`
	// Ref is the full ref (refs/heads/main, refs/tags/v1), or, while Commit
	// is "", the ref as an API trigger named it ("main" may be a branch or
	// a tag): the worker resolves both before it checks anything out.
	Ref string `json:"ref"`
	// Commit is 40 hex digits, or "" until the worker has resolved Ref (a
	// build that ended before that keeps "").
	Commit      string           `json:"commit"`
	Message     string           `json:"message,omitempty"`
	Sender      string           `json:"sender,omitempty"`
	DeliveryID  string           `json:"delivery_id,omitempty"`
	CloneURL    string           `json:"clone_url"`
	State       BuildState       `json:"state"`
	Image       string           `json:"image"`               // repository without tag: registry/owner/name
	ImageRef    string           `json:"image_ref,omitempty"` // image:sha-… once pushed
	IndexDigest string           `json:"index_digest,omitempty"`
	Platforms   []PlatformDigest `json:"platforms"`
	Tests       []TestResult     `json:"tests"`
	Tags        []string         `json:"tags"` // tags added after the tests passed
	// SkippedTags are the tags the build's ref asked for but another ref or a
	// promotion owns (see the README's "Who moves a tag").
	SkippedTags []SkippedTag `json:"skipped_tags,omitempty"`
	Error       string       `json:"error,omitempty"`
	Attempt     int          `json:"attempt"`
	// Attempts lists every attempt, first first; only a single build's answer has it.
	Attempts   []BuildAttempt `json:"attempts,omitempty"`
	CreatedAt  time.Time      `json:"created_at"`
	StartedAt  *time.Time     `json:"started_at,omitempty"`
	FinishedAt *time.Time     `json:"finished_at,omitempty"`
	// TargetPlatforms are the platforms the repository's settings asked for when
	// the build was queued; empty: .slipway.yml decides.
	TargetPlatforms []string `json:"target_platforms,omitempty"`
	// ForgeStatus is how the commit status of the latest state reached the
	// forge; nil before any was queued.
	ForgeStatus *ForgeStatus `json:"forge_status,omitempty"`
	// PullRequest is set for a build of a pull request; Ref is then its
	// pull-request ref (see PullRequestRef).
	PullRequest *PullRequest `json:"pull_request,omitempty"`
	// Approval is "pending" while a fork's pull-request build waits for a
	// developer's approval (no worker takes it), "approved" after, "trusted"
	// when it needed none because the repository trusts its author's
	// association (see ForkTrusted); "" for builds that need none.
	Approval   string     `json:"approval,omitempty"`
	ApprovedBy string     `json:"approved_by,omitempty"`
	ApprovedAt *time.Time `json:"approved_at,omitempty"`
	// VerifyRef is set when a user, not the forge, named Commit together
	// with Ref: the worker then checks that the commit belongs to the ref
	// before it builds anything.
	VerifyRef bool `json:"-"`
}

// APITriggerPlaceholder is the message that builds triggered through the API
// carried before the worker recorded the commit's own subject; the worker
// replaces it as it replaces an empty message.
const APITriggerPlaceholder = "Triggered through the API"

// PlatformDigest is the manifest digest the pushed index holds for one platform.
type PlatformDigest struct {
	Platform string `json:"platform"`
	Digest   string `json:"digest"`
}

// TestResult is the outcome of one integration test on one platform.
type TestResult struct {
	Name       string `json:"name"`
	Platform   string `json:"platform"`
	Passed     bool   `json:"passed"`
	ExitCode   int    `json:"exit_code"`
	DurationMS int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
	// Cases counts the cases of the JUnit report the test's runner wrote
	// (.slipway.yml's junit), nil when it names none or the report could
	// not be read; the cases themselves are at
	// GET /api/v1/builds/{id}/test-cases.
	Cases *TestCaseCounts `json:"cases,omitempty"`
}

// RefName returns the short name of a ref: "main" for refs/heads/main, "v1" for refs/tags/v1.
func RefName(ref string) string {
	if s, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		return s
	}
	if s, ok := strings.CutPrefix(ref, "refs/tags/"); ok {
		return s
	}
	return ref
}

var tagUnsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// TagForRef turns a ref into a valid image tag: the short name with every run of
// characters a tag may not hold replaced by "-", no leading "." or "-", at most
// 128 characters. It returns "" when nothing usable is left.
func TagForRef(ref string) string {
	t := tagUnsafe.ReplaceAllString(RefName(ref), "-")
	t = strings.TrimLeft(t, ".-")
	if len(t) > 128 {
		t = t[:128]
	}
	return t
}

// CommitTag is the tag every build pushes first: "sha-" and the first 12 hex digits of the commit.
func CommitTag(commit string) string {
	if len(commit) > 12 {
		commit = commit[:12]
	}
	return "sha-" + commit
}

// BuildFilter selects builds. Zero fields do not filter.
type BuildFilter struct {
	Repo   string // owner/name
	Ref    string // full ref or short name
	State  BuildState
	Commit string // 40 hex
	// PullRequest, when above 0, selects the builds of that pull request.
	PullRequest int
	Limit       int   // default 50, at most 500
	Before      int64 // only builds with a smaller id (paging)
}

// BuildUpdate changes a build. A nil field is left as is.
type BuildUpdate struct {
	State       *BuildState
	ImageRef    *string
	IndexDigest *string
	Platforms   []PlatformDigest // nil: leave
	Tests       []TestResult     // nil: leave
	Tags        []string         // nil: leave
	SkippedTags []SkippedTag     // nil: leave
	Error       *string
	// Ref and Commit record what the worker resolved for a build queued
	// without a commit: the full ref and its 40-hex commit. They are written
	// only while the build's commit is still "", never over a known one.
	Ref    *string
	Commit *string
	// Message is the commit's subject; it is written only over an empty
	// message or APITriggerPlaceholder, never over a forge's or a user's.
	Message *string
}

// EnqueueResult is what accepting a trigger did.
type EnqueueResult struct {
	BuildID int64  // the build queued, or the one a delivery seen before made
	Build   *Build // that build; nil from EnqueueTriggerID
	Created bool   // false: the delivery was seen before and BuildID names the build it made
}

// BuildService stores builds and their logs. Implementations are safe for
// concurrent use.
type BuildService interface {
	// EnqueueTrigger registers the trigger's repository when it is new (its image is
	// image), records the delivery, and inserts the build and its queue job, all in one
	// transaction. A delivery id seen before returns the build it made, Created false,
	// also when both deliveries race.
	EnqueueTrigger(ctx context.Context, t Trigger, image string) (EnqueueResult, error)
	// EnqueueTriggerID is EnqueueTrigger without reading the build back:
	// Build is nil and BuildID names it. It may commit the trigger together
	// with others that arrive at the same time, each still all or nothing.
	// The webhook, which answers with the id only, uses it.
	EnqueueTriggerID(ctx context.Context, t Trigger, image string) (EnqueueResult, error)
	// FindBuildByID returns ENOTFOUND when there is no such build.
	FindBuildByID(ctx context.Context, id int64) (*Build, error)
	// FindBuilds returns builds newest first.
	FindBuilds(ctx context.Context, f BuildFilter) ([]*Build, error)
	// AppendLog stores lines of a build's log, in order, in one insert, numbers
	// them after the lines stored before, and wakes live readers.
	AppendLog(ctx context.Context, buildID int64, lines []LogLine) error
	// CancelBuild asks a build to stop with reason: a queued one ends canceled at
	// once; a running one ends canceled once its worker has stopped the solve.
	// ENOTFOUND for no such build, ECONFLICT when it is already final or
	// being canceled. It returns the build as it is now.
	CancelBuild(ctx context.Context, buildID int64, reason string) (*Build, error)
	// CancelRefBuilds cancels, as CancelBuild does, every build of ref of the
	// repository forge/owner/name (case-insensitive) still queued or running,
	// e.g. when its pull request was closed. It returns the ids it stopped,
	// none when the repository is unknown.
	CancelRefBuilds(ctx context.Context, forge, owner, name, ref, reason string) ([]int64, error)
	// ApproveBuild lets a fork's pull-request build that waits for approval
	// run, recording who approved it. ENOTFOUND for no such build, ECONFLICT
	// when it waits for no approval (or is no longer queued).
	ApproveBuild(ctx context.Context, buildID int64, actor string) (*Build, error)
	// ReadLog returns up to limit lines of a build's log numbered after after,
	// in order (numbers start at 1 and have no gaps).
	ReadLog(ctx context.Context, buildID int64, after int64, limit int) ([]LogLine, error)
	// WriteLog writes a build's whole log as text to w.
	WriteLog(ctx context.Context, buildID int64, w io.Writer) error
	// FindBuildSteps returns the step each platform of the builds ids is at
	// in their current attempt, as the last stored log line of that platform
	// with a step names it: platforms in order, "" (lines of no platform,
	// such as checkout) first. A build with no step yet has no entry.
	FindBuildSteps(ctx context.Context, ids []int64) (map[int64][]PlatformStep, error)
}

// PlatformStep is the step one platform of a build is at.
type PlatformStep struct {
	Platform string // "" for the steps of no platform
	Step     string
}

// BuildWatcher tells when builds change. Implementations are safe for
// concurrent use.
type BuildWatcher interface {
	// WatchBuilds calls onChange with a build's id whenever the build changed
	// (its row, or a platform's step), and with 0 when changes may have been
	// missed (after a reconnect), until stop. Calls are hints, may come
	// several to one change, must not block, and come one at a time.
	WatchBuilds(onChange func(buildID int64)) (stop func())
}

// LogFollower wakes live log readers. Implementations are safe for concurrent use.
type LogFollower interface {
	// FollowLog returns a channel that receives (coalesced) when the log of
	// buildID may have grown or the build may have ended, and a func that ends
	// the subscription. A wake-up is a hint: readers still read and poll.
	FollowLog(buildID int64) (wake <-chan struct{}, stop func())
}

// LogLine is one line of a build's log.
type LogLine struct {
	No       int64 // position in the build's log, from 1; set when read back
	Time     time.Time
	Platform string // "" when not tied to one platform
	Step     string // "checkout", "build", "verify", "test:<name>", …
	Text     string
}

// Repo is a repository slipway builds, with its settings. Empty lists mean the
// global setting applies.
type Repo struct {
	ID       int64  `json:"id"`
	Forge    string `json:"forge"`
	Owner    string `json:"owner"`
	Name     string `json:"name"`
	CloneURL string `json:"clone_url"`
	Image    string `json:"image"`
	// HasWebhookSecret tells whether the repository has its own webhook secret.
	// The secret itself is never returned.
	HasWebhookSecret bool `json:"has_webhook_secret"`
	// HasCloneToken tells whether the repository has its own clone token
	// (PUT /api/v1/repos/{owner}/{name}/clone-token), never returned itself.
	HasCloneToken bool `json:"has_clone_token"`
	// HasDeployKey tells whether the repository has its own SSH deploy key;
	// DeployKeyFingerprint is its SHA256 fingerprint ("SHA256:…"), "" when none.
	HasDeployKey         bool   `json:"has_deploy_key"`
	DeployKeyFingerprint string `json:"deploy_key_fingerprint"`
	// RegistryAuths are the registry hosts the repository has its own
	// credential for (PUT /api/v1/repos/{owner}/{name}/registry-auth),
	// sorted; neither usernames nor passwords.
	RegistryAuths   []string `json:"registry_auths"`
	Platforms       []string `json:"platforms"`
	AllowedBranches []string `json:"allowed_branches"`
	// PromotionTargets are where builds may be promoted besides their own
	// image (see PromotionTargetAllowed); empty: SLIPWAY_PROMOTION_TARGETS.
	PromotionTargets []string `json:"promotion_targets"`
	// TrustedAssociations are the author associations (TrustableAssociations)
	// whose fork pull requests run without a developer's approval (see
	// ForkTrusted); empty: every fork's pull request waits.
	TrustedAssociations []string  `json:"trusted_associations"`
	MaxRunning          int       `json:"max_running"`
	Supersede           bool      `json:"supersede"`
	DefaultBranch       string    `json:"default_branch"`
	CreatedAt           time.Time `json:"created_at"`
	UpdatedAt           time.Time `json:"updated_at"`
}

// FullName is owner/name.
func (r Repo) FullName() string { return r.Owner + "/" + r.Name }

// Trigger is what a forge's webhook asks slipway to build.
type Trigger struct {
	Forge      string // "github"
	DeliveryID string
	Event      string
	Owner      string
	Name       string
	CloneURL   string
	// Ref is the full ref; a trigger without a commit may carry a short
	// name (the worker resolves it).
	Ref string
	// Commit is 40 hex digits, or "" for the worker to resolve Ref.
	Commit  string
	Message string // head commit message, first line
	Sender  string
	// VerifyRef makes the worker check that Commit belongs to Ref (see
	// Build.VerifyRef): set when a user, not the forge, named the commit.
	VerifyRef bool
	// DefaultBranch is the repository's default branch as the payload names it
	// ("" when it does not).
	DefaultBranch string
	// PullRequest is set for a pull-request event; Ref is then its
	// pull-request ref and Commit its head commit.
	PullRequest *PullRequest
	// RepoID is the registered repository the caller already found (whose
	// settings and webhook secret it used); EnqueueTrigger then neither
	// looks it up by name nor registers it, and answers ECONFLICT if it is
	// gone. 0 registers Forge/Owner/Name on first sight.
	RepoID int64
}

// SkippedTag is a tag a build did not move, and why: "written by build 7 of
// refs/tags/v2" or "written by a promotion (audit row 12)".
type SkippedTag struct {
	Tag    string `json:"tag"`
	Reason string `json:"reason"`
}
