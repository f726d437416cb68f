package worker

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
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
//
// A batch the store refuses stays queued and is tried again, with a growing
// pause (logFlushEvery doubling up to logRetryMax). While the store stays away
// at most maxPending lines wait in memory; beyond that the oldest are dropped,
// and one line saying how many (lostLinesText) takes their place in the log.
type logSink struct {
	buildID    int64
	store      slipway.BuildService
	logger     zerolog.Logger
	maxPending int

	mu        sync.Mutex
	pending   []slipway.LogLine
	lost      int       // lines dropped since the last stored lostLinesText line
	lostAt    time.Time // time of the last dropped line
	kick      chan struct{}
	masker    *strings.Replacer // nil: nothing to mask
	maskPairs []string          // old, new pairs of masker, longest old first
}

const (
	logFlushEvery = 250 * time.Millisecond
	logBatchLines = 500
	// logMaxPending bounds the lines (about 200 bytes each) a build keeps in
	// memory while the log store is unavailable: 20,000 is a few MB.
	logMaxPending = 20_000
	logRetryMax   = 5 * time.Second
	// logFinalAttempts is how many times the last flush, at the end of the
	// build, is tried (pausing logFlushEvery, doubling) before lines are lost.
	logFinalAttempts = 5
	logFinalTimeout  = 10 * time.Second
)

// lostLinesText is the log line that stands where lines were dropped.
const lostLinesText = "[slipway] %d log lines were lost: the log store was unavailable"

func newLogSink(buildID int64, store slipway.BuildService, logger zerolog.Logger) *logSink {
	return &logSink{buildID: buildID, store: store, logger: logger, maxPending: logMaxPending, kick: make(chan struct{}, 1)}
}

// Mask makes every later line show "***" where it holds one of values (or one
// line of a multi-line value), besides the values of earlier calls. The common
// encodings of each are masked too (see maskForms). Values shorter than
// slipway.MinSecretLen are not masked: the secrets API refuses them.
func (s *logSink) Mask(values [][]byte) {
	s.mu.Lock()
	pairs := slices.Clone(s.maskPairs)
	s.mu.Unlock()
	seen := make(map[string]bool, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		seen[pairs[i]] = true
	}
	for _, v := range values {
		for _, part := range append([]string{string(v)}, strings.Split(string(v), "\n")...) {
			part = strings.TrimRight(part, "\r")
			if len(part) < slipway.MinSecretLen {
				continue
			}
			for _, f := range maskForms(part) {
				if !seen[f] {
					seen[f] = true
					pairs = append(pairs, f, "***")
				}
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

// minEncodedMaskLen is the shortest encoded form (or piece of one) that is
// masked: shorter runs of base64 or hex letters turn up in logs by chance.
const minEncodedMaskLen = 6

// maskForms returns value and the encoded forms of it that a build's tools
// commonly print: base64 (standard and URL alphabets, padded and not, also as
// it reads inside a longer base64 text, such as "user:secret" in a Basic
// authorization header, and as the 64- and 76-character lines that base64,
// openssl and PEM wrap it in), hex (lower and upper case), and URL escaping
// (query and path). Forms shorter than minEncodedMaskLen are left out.
func maskForms(value string) []string {
	forms := []string{value}
	add := func(f string) {
		if len(f) >= minEncodedMaskLen && f != value {
			forms = append(forms, f)
		}
	}
	b := []byte(value)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		padded := enc.EncodeToString(b)
		add(padded)
		add(strings.TrimRight(padded, "="))
		for _, width := range []int{64, 76} {
			if len(padded) <= width {
				continue
			}
			for i := 0; i < len(padded); i += width {
				add(padded[i:min(i+width, len(padded))])
			}
		}
		// Inside a longer text the value starts 0, 1 or 2 bytes into a group
		// of three; keep only the letters that its own bits alone decide.
		raw := enc.WithPadding(base64.NoPadding)
		for shift := range 3 {
			e := raw.EncodeToString(append(make([]byte, shift), b...))
			from := (8*shift + 5) / 6
			to := (8*shift + 8*len(b)) / 6
			add(e[from:to])
		}
	}
	h := hex.EncodeToString(b)
	add(h)
	add(strings.ToUpper(h))
	add(url.QueryEscape(value))
	add(url.PathEscape(value))
	return forms
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
	s.dropOverflowLocked()
	full := len(s.pending) >= logBatchLines
	s.mu.Unlock()
	if full {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// dropOverflowLocked drops the oldest pending lines beyond maxPending (at
// least a batch at once, so a full queue is not copied on every line) and
// counts them in lost. The caller holds mu.
func (s *logSink) dropOverflowLocked() {
	over := len(s.pending) - s.maxPending
	if over <= 0 {
		return
	}
	n := min(max(over, logBatchLines), len(s.pending))
	s.lost += n
	s.lostAt = s.pending[n-1].Time
	s.pending = slices.Delete(s.pending, 0, n)
}

// Run flushes every logFlushEvery until ctx ends, then flushes what is left
// (trying logFinalAttempts times). A failed flush is retried after a pause
// that doubles up to logRetryMax; lines added meanwhile wait with it.
func (s *logSink) Run(ctx context.Context) {
	t := time.NewTicker(logFlushEvery)
	defer t.Stop()
	var (
		pause   time.Duration // zero while the store answers
		retryAt time.Time
	)
	for {
		select {
		case <-ctx.Done():
			s.finalFlush(context.WithoutCancel(ctx))
			return
		case <-t.C:
		case <-s.kick:
		}
		if time.Now().Before(retryAt) {
			continue
		}
		err := s.flush(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			if pause == 0 {
				s.logger.Error().Err(err).Int("pending_lines", s.pendingLines()).Msg("Storing build log lines; retrying")
			}
			pause = min(max(2*pause, logFlushEvery), logRetryMax)
			retryAt = time.Now().Add(pause)
		case err == nil && pause != 0:
			s.logger.Info().Msg("Build log lines stored again")
			pause, retryAt = 0, time.Time{}
		}
	}
}

// finalFlush stores what is left at the end of the build, trying a few times.
func (s *logSink) finalFlush(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, logFinalTimeout)
	defer cancel()
	pause := logFlushEvery
	var err error
	for attempt := 1; ; attempt++ {
		if err = s.flush(ctx); err == nil {
			return
		}
		if attempt == logFinalAttempts || sleepCtx(ctx, pause) != nil {
			break
		}
		pause *= 2
	}
	s.mu.Lock()
	lost := s.lost + len(s.pending)
	s.mu.Unlock()
	s.logger.Error().Err(err).Int("lines", lost).Msg("Build log lines lost: the log store stayed unavailable")
}

func (s *logSink) pendingLines() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// flush stores the pending lines, led by a lostLinesText line if lines were
// dropped. Lines the store refuses go back to the front of the queue.
func (s *logSink) flush(ctx context.Context) error {
	s.mu.Lock()
	lines := s.pending
	s.pending = nil
	lost := s.lost
	if lost > 0 {
		lines = append([]slipway.LogLine{{Time: s.lostAt, Text: fmt.Sprintf(lostLinesText, lost)}}, lines...)
	}
	s.mu.Unlock()
	for len(lines) > 0 {
		n := min(len(lines), logBatchLines)
		if err := s.store.AppendLog(ctx, s.buildID, lines[:n]); err != nil {
			if lost > 0 {
				lines = lines[1:] // the marker is made again, with the new count
			}
			s.mu.Lock()
			s.pending = append(lines, s.pending...)
			s.dropOverflowLocked()
			s.mu.Unlock()
			return err
		}
		if lost > 0 {
			s.mu.Lock()
			s.lost -= lost
			s.mu.Unlock()
			lost = 0
		}
		lines = lines[n:]
	}
	return nil
}
