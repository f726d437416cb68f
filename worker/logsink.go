package worker

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-ci/slipway"
)

// logSink batches a build's log lines and stores them a batch at a time, so a
// chatty build costs one insert per flush instead of one per line. Safe for
// concurrent use; Run owns the flushing goroutine.
type logSink struct {
	buildID int64
	store   slipway.BuildService
	logger  zerolog.Logger

	mu      sync.Mutex
	pending []slipway.LogLine
	kick    chan struct{}
}

const (
	logFlushEvery = 250 * time.Millisecond
	logBatchLines = 500
)

func newLogSink(buildID int64, store slipway.BuildService, logger zerolog.Logger) *logSink {
	return &logSink{buildID: buildID, store: store, logger: logger, kick: make(chan struct{}, 1)}
}

// Add queues one or more lines (text is split on newlines).
func (s *logSink) Add(platform, step, text string) {
	now := time.Now()
	text = strings.TrimRight(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	s.mu.Lock()
	for _, l := range strings.Split(text, "\n") {
		s.pending = append(s.pending, slipway.LogLine{Time: now, Platform: platform, Step: step, Text: l})
	}
	full := len(s.pending) >= logBatchLines
	s.mu.Unlock()
	if full {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// Run flushes every logFlushEvery until ctx ends, then flushes what is left.
func (s *logSink) Run(ctx context.Context) {
	t := time.NewTicker(logFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// The build is over (or the worker stops): store the tail anyway.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			s.flush(fctx)
			cancel()
			return
		case <-t.C:
		case <-s.kick:
		}
		s.flush(ctx)
	}
}

func (s *logSink) flush(ctx context.Context) {
	s.mu.Lock()
	lines := s.pending
	s.pending = nil
	s.mu.Unlock()
	for len(lines) > 0 {
		n := min(len(lines), logBatchLines)
		if err := s.store.AppendLog(ctx, s.buildID, lines[:n]); err != nil {
			if ctx.Err() == nil {
				s.logger.Error().Err(err).Int("lines", n).Msg("Storing build log lines")
			}
			return
		}
		lines = lines[n:]
	}
}
