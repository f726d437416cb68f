package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/slipway-ci/slipway"
)

// ReadLog implements slipway.BuildService.
func (s *BuildService) ReadLog(ctx context.Context, buildID int64, after int64, limit int) ([]slipway.LogLine, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.db.pool.Query(ctx, `-- ReadLog
SELECT first_line, lines FROM build_log_chunks
WHERE build_id = $1 AND first_line + line_count - 1 > $2
ORDER BY first_line LIMIT $3`, buildID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("reading log of build %d: %w", buildID, unavailable(err))
	}
	defer rows.Close()
	var out []slipway.LogLine
	for rows.Next() && len(out) < limit {
		var (
			first int64
			data  []byte
			lines []logLine
		)
		if err := rows.Scan(&first, &data); err != nil {
			return nil, fmt.Errorf("reading log of build %d: %w", buildID, unavailable(err))
		}
		if err := json.Unmarshal(data, &lines); err != nil {
			return nil, fmt.Errorf("decoding log of build %d: %w", buildID, unavailable(err))
		}
		for i, l := range lines {
			no := first + int64(i)
			if no <= after || len(out) >= limit {
				continue
			}
			out = append(out, slipway.LogLine{No: no, Time: l.Time.UTC(), Platform: l.Platform, Step: l.Step, Text: l.Text})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading log of build %d: %w", buildID, unavailable(err))
	}
	return out, nil
}

// LogHub holds one connection that LISTENs on the log channel and wakes the
// live log readers of each build: one connection per process, whatever the
// number of readers. It implements slipway.LogFollower.
type LogHub struct {
	db     *DB
	logger zerolog.Logger

	mu   sync.Mutex
	subs map[int64]map[chan struct{}]struct{}
}

var _ slipway.LogFollower = (*LogHub)(nil)

// NewLogHub returns a LogHub; call Run to start listening.
func NewLogHub(db *DB, logger zerolog.Logger) *LogHub {
	return &LogHub{db: db, logger: logger, subs: map[int64]map[chan struct{}]struct{}{}}
}

// FollowLog implements slipway.LogFollower.
func (h *LogHub) FollowLog(buildID int64) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.subs[buildID] == nil {
		h.subs[buildID] = map[chan struct{}]struct{}{}
	}
	h.subs[buildID][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs[buildID], ch)
		if len(h.subs[buildID]) == 0 {
			delete(h.subs, buildID)
		}
		h.mu.Unlock()
	}
}

// wake wakes the readers of buildID, or all readers when buildID is 0.
func (h *LogHub) wake(buildID int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, set := range h.subs {
		if buildID != 0 && id != buildID {
			continue
		}
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// ListenOn wakes the readers from n's notifications on ChannelLogs, and
// every reader on a catch-up (lines may have arrived while nobody listened),
// until stop.
func (h *LogHub) ListenOn(n *Notifier) (stop func()) {
	sub := n.Listen(ChannelLogs, func(m Notification) {
		if m.CatchUp {
			h.wake(0)
			return
		}
		idStr, _, _ := strings.Cut(m.Payload, " ")
		if id, err := strconv.ParseInt(idStr, 10, 64); err == nil {
			h.wake(id)
		}
	})
	return sub.Unlisten
}

// Run listens on a Notifier of its own until ctx ends (see ListenOn); a
// process that has a Notifier calls ListenOn instead, and so keeps to one
// listening connection.
func (h *LogHub) Run(ctx context.Context) error {
	n := NewNotifier(h.db, h.logger)
	defer h.ListenOn(n)()
	return n.Run(ctx)
}
