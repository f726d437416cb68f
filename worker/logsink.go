package worker

import (
	"context"
	"slices"
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

	mu        sync.Mutex
	pending   []slipway.LogLine
	kick      chan struct{}
	masker    *strings.Replacer // nil: nothing to mask
	maskPairs []string          // old, new pairs of masker, longest old first
}

const (
	logFlushEvery = 250 * time.Millisecond
	logBatchLines = 500
)

func newLogSink(buildID int64, store slipway.BuildService, logger zerolog.Logger) *logSink {
	return &logSink{buildID: buildID, store: store, logger: logger, kick: make(chan struct{}, 1)}
}

// Mask makes every later line show "***" where it holds one of values (or one
// line of a multi-line value), besides the values of earlier calls. Values
// shorter than slipway.MinSecretLen are not masked: the secrets API refuses
// them.
func (s *logSink) Mask(values [][]byte) {
	s.mu.Lock()
	pairs := slices.Clone(s.maskPairs)
	s.mu.Unlock()
	for _, v := range values {
		for _, part := range append([]string{string(v)}, strings.Split(string(v), "\n")...) {
			part = strings.TrimRight(part, "\r")
			if len(part) >= slipway.MinSecretLen {
				pairs = append(pairs, part, "***")
			}
		}
	}
	if len(pairs) == 0 {
		return
	}
	// Longest first, so a value that contains another is masked whole.
	sortPairsByLength(pairs)
	s.mu.Lock()
	s.maskPairs = pairs
	s.masker = strings.NewReplacer(pairs...)
	s.mu.Unlock()
}

// mask hides the masked values in text.
func (s *logSink) mask(text string) string {
	s.mu.Lock()
	m := s.masker
	s.mu.Unlock()
	if m == nil {
		return text
	}
	return m.Replace(text)
}

func sortPairsByLength(pairs []string) {
	type pair struct{ old, new string }
	ps := make([]pair, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		ps = append(ps, pair{pairs[i], pairs[i+1]})
	}
	slices.SortStableFunc(ps, func(a, b pair) int { return len(b.old) - len(a.old) })
	for i, p := range ps {
		pairs[2*i], pairs[2*i+1] = p.old, p.new
	}
}

// Add queues one or more lines (text is split on newlines), with masked
// values hidden (see Mask).
func (s *logSink) Add(platform, step, text string) {
	now := time.Now()
	text = strings.TrimRight(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	text = s.mask(text)
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
