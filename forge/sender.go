package forge

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-ci/slipway"
)

// SenderConfig configures a Sender. Zero fields take their defaults.
type SenderConfig struct {
	// Clients holds the client of each forge ("github", "gitlab", "gitea"). A
	// status for a forge without one is settled as skipped.
	Clients map[string]Client
	// PublicURL is SLIPWAY_PUBLIC_URL; a status links to the build under it.
	PublicURL string
	// Changes wakes the sender when a build changes (a state change adds its
	// status to the outbox in the same transaction); nil: it polls only.
	Changes slipway.BuildWatcher
	// PollInterval is how often the outbox is read without a wake-up: the
	// safety net for a missed notification and the clock of retries.
	// Default 1s, or 5s with Changes.
	PollInterval time.Duration
	// MaxAttempts is how often one status is tried before it is given up; default 10.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait before a retry, which doubles with
	// each attempt; defaults 2s and 5m.
	MinBackoff, MaxBackoff time.Duration
	// Batch is how many statuses are claimed and posted at once; default 8.
	Batch int
}

func (c *SenderConfig) setDefaults() {
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
		if c.Changes != nil {
			c.PollInterval = 5 * time.Second
		}
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 10
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 2 * time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(5*time.Minute, c.MinBackoff)
	}
	if c.Batch <= 0 {
		c.Batch = 8
	}
}

// requestTimeout bounds one post; the lease outlasts it so no other sender
// takes the status over while it is in flight.
const requestTimeout = 20 * time.Second

// Sender posts the statuses of the outbox to the forges, retrying with
// exponential backoff. Builds never wait for it: a state change only adds a row
// to the outbox. Several Senders (one per server) may run against one database.
type Sender struct {
	cfg    SenderConfig
	outbox slipway.StatusOutbox
	logger zerolog.Logger
}

// NewSender returns a Sender; call Run.
func NewSender(logger zerolog.Logger, cfg SenderConfig, outbox slipway.StatusOutbox) *Sender {
	cfg.setDefaults()
	return &Sender{cfg: cfg, outbox: outbox, logger: logger.With().Str("component", "forge_status").Logger()}
}

// BuildURL is the build's page under publicURL, the target_url of its statuses.
func BuildURL(publicURL string, buildID int64) string {
	return publicURL + "/builds/" + strconv.FormatInt(buildID, 10)
}

// Run sends statuses until ctx ends: at once when Changes tells of a build
// change, else every PollInterval. Database errors are logged and retried at
// the next tick; Run only returns nil, when ctx ends.
func (s *Sender) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	wake := make(chan struct{}, 1)
	if s.cfg.Changes != nil {
		defer s.cfg.Changes.WatchBuilds(func(int64) {
			select {
			case wake <- struct{}{}:
			default:
			}
		})()
	}
	failing := false
	for {
		n, err := s.SendDue(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && !failing:
			s.logger.Warn().Err(err).Msg("Reading the status outbox")
			failing = true
		case err == nil:
			failing = false
		}
		if n == s.cfg.Batch {
			continue // more may be due
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-wake:
		}
	}
}

// SendDue claims the statuses due now, posts them side by side and settles
// each; it returns how many it claimed.
func (s *Sender) SendDue(ctx context.Context) (int, error) {
	events, err := s.outbox.StatusClaim(ctx, s.cfg.Batch, requestTimeout+10*time.Second)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(events))
	for i, ev := range events {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.send(ctx, ev)
		}()
	}
	wg.Wait()
	return len(events), errors.Join(errs...)
}

// send posts one status and settles it.
func (s *Sender) send(ctx context.Context, ev *slipway.StatusEvent) error {
	log := s.logger.With().Int64("build_id", ev.BuildID).Str("repo", ev.Owner+"/"+ev.Name).
		Str("forge", ev.Forge).Str("state", string(ev.State)).Int("attempt", ev.Attempts).Logger()
	// Settling must happen even when ctx ended mid-post, or the status waits for
	// its lease to run out.
	settle := func(outcome slipway.StatusOutcome, errText string, retryAt time.Time) error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return s.outbox.StatusSettle(sctx, ev.ID, outcome, errText, retryAt)
	}
	c := s.cfg.Clients[ev.Forge]
	if c == nil {
		return settle(slipway.StatusSkipped, "no API token is set for "+ev.Forge+" (SLIPWAY_"+strings.ToUpper(ev.Forge)+"_TOKEN)", time.Time{})
	}
	pctx, cancel := context.WithTimeout(ctx, requestTimeout)
	err := c.SetStatus(pctx, Status{
		Owner: ev.Owner, Name: ev.Name, Commit: ev.Commit, Ref: ev.Ref, State: ev.State,
		TargetURL: BuildURL(s.cfg.PublicURL, ev.BuildID), Description: description(ev),
	})
	cancel()
	if err == nil {
		log.Debug().Msg("Commit status sent")
		return settle(slipway.StatusSent, "", time.Time{})
	}
	if ctx.Err() != nil {
		// Shutting down: hand the status back at once, for the next sender.
		return settle(slipway.StatusPending, "", time.Now())
	}
	if ev.Attempts >= s.cfg.MaxAttempts {
		log.Warn().Err(err).Msg("Giving up on a commit status")
		return settle(slipway.StatusFailed, fmt.Sprintf("gave up after %d attempts: %v", ev.Attempts, err), time.Time{})
	}
	wait := s.backoff(ev.Attempts)
	log.Info().Err(err).Dur("retry_in", wait).Msg("Commit status not sent; retrying")
	return settle(slipway.StatusPending, err.Error(), time.Now().Add(wait))
}

// backoff is MinBackoff doubled per attempt up to MaxBackoff, with up to 20% jitter.
func (s *Sender) backoff(attempt int) time.Duration {
	d := s.cfg.MinBackoff << min(attempt-1, 20)
	if d <= 0 || d > s.cfg.MaxBackoff {
		d = s.cfg.MaxBackoff
	}
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

func description(ev *slipway.StatusEvent) string {
	id := strconv.FormatInt(ev.BuildID, 10)
	switch ev.State {
	case slipway.BuildQueued:
		return "Build " + id + " is queued"
	case slipway.BuildRunning:
		return "Build " + id + " is running"
	case slipway.BuildSucceeded:
		return "Build " + id + " succeeded"
	case slipway.BuildFailed:
		if ev.Error != "" {
			return "Build " + id + " failed: " + ev.Error
		}
		return "Build " + id + " failed"
	case slipway.BuildCanceled:
		return "Build " + id + " was canceled"
	}
	return "Build " + id + " is " + string(ev.State)
}
