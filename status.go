package slipway

import (
	"context"
	"time"
)

// StatusOutcome is where a commit status stands in the outbox. The values mirror
// the CHECK constraint on forge_statuses.outcome.
type StatusOutcome string

// Status outcomes.
const (
	StatusPending    StatusOutcome = "pending"    // to send, or waiting for a retry
	StatusSent       StatusOutcome = "sent"       // the forge accepted it
	StatusSuperseded StatusOutcome = "superseded" // a newer state of the build went out instead
	StatusFailed     StatusOutcome = "failed"     // given up after the last attempt
	StatusSkipped    StatusOutcome = "skipped"    // no API token for the forge
)

// ForgeStatus is how telling the forge about a build's latest state went; it is
// shown on the build so a forge that refuses is visible.
type ForgeStatus struct {
	State     BuildState    `json:"state"`
	Outcome   StatusOutcome `json:"outcome"`
	Attempts  int           `json:"attempts"`
	Error     string        `json:"error,omitempty"`
	UpdatedAt time.Time     `json:"updated_at"`
}

// StatusEvent is one commit status to send: a build's state, with what the
// forge's API needs to address the commit.
type StatusEvent struct {
	ID       int64
	BuildID  int64
	State    BuildState
	Attempts int // including this one
	Forge    string
	Owner    string
	Name     string
	Ref      string
	Commit   string
	Error    string // the build's error, for failed builds
}

// StatusOutbox is the queue of commit statuses. Rows are added by the store in
// the transaction that changes a build's state; a sender claims, posts and
// settles them. Implementations are safe for concurrent use by several senders.
type StatusOutbox interface {
	// StatusClaim leases up to limit statuses due now, at most one per build and
	// only the newest state of each (older pending ones become superseded), for
	// lease. A build whose status is leased elsewhere is skipped.
	StatusClaim(ctx context.Context, limit int, lease time.Duration) ([]*StatusEvent, error)
	// StatusSettle ends a claimed status with outcome, or, for StatusPending,
	// schedules another attempt at retryAt. errText is shown on the build.
	StatusSettle(ctx context.Context, id int64, outcome StatusOutcome, errText string, retryAt time.Time) error
}
