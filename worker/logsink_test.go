package worker

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// memLog is a slipway.BuildService that keeps appended lines; only AppendLog is used.
type memLog struct {
	slipway.BuildService
	mu      sync.Mutex
	batches [][]slipway.LogLine
}

func (m *memLog) AppendLog(_ context.Context, _ int64, lines []slipway.LogLine) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batches = append(m.batches, append([]slipway.LogLine(nil), lines...))
	return nil
}

func (m *memLog) text() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var sb strings.Builder
	for _, b := range m.batches {
		for _, l := range b {
			sb.WriteString(l.Text + "\n")
		}
	}
	return sb.String()
}

func TestLogSinkMasks(t *testing.T) {
	t.Parallel()
	store := &memLog{}
	sink := newLogSink(1, store, zerolog.Nop())
	sink.Mask([][]byte{[]byte("tok-12345"), []byte("tok-12345-longer"), []byte("line-one\nline-two"), []byte("abc")})
	sink.Add("linux/amd64", "build", "token is tok-12345-longer and tok-12345")
	sink.Add("", "build", "multi: line-one\nline-two alone")
	sink.Add("", "build", "short abc stays")
	sink.Add("", "build", "split: line-two")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sink.Run(ctx) }()
	cancel()
	<-done
	got := store.text()
	require.Equal(t, "token is *** and ***\nmulti: *** alone\nshort abc stays\nsplit: ***\n", got)
	require.Equal(t, "failed: ***", sink.mask("failed: tok-12345"))
}

func TestLogSinkBatches(t *testing.T) {
	t.Parallel()
	store := &memLog{}
	sink := newLogSink(1, store, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sink.Run(ctx) }()
	for range 1200 {
		sink.Add("", "build", "x")
	}
	cancel()
	<-done
	n := 0
	for _, b := range store.batches {
		require.LessOrEqual(t, len(b), logBatchLines)
		n += len(b)
	}
	require.Equal(t, 1200, n)
	require.Less(t, len(store.batches), 10, "stored in batches, not line by line")
}

func TestLogSinkMasksEncodings(t *testing.T) {
	t.Parallel()
	// A secret whose encodings all differ from it: '?', '&', ' ' and '/'
	// are URL-escaped, and its base64 holds '+' or '/' in the standard
	// alphabet ('-' or '_' in the URL one).
	const secret = "p?ss&w rd/~>>>?"
	sink := newLogSink(1, &memLog{}, zerolog.Nop())
	sink.Mask([][]byte{[]byte(secret)})

	std := base64.StdEncoding.EncodeToString([]byte(secret))
	forms := map[string]string{
		"base64":            std,
		"base64 unpadded":   base64.RawStdEncoding.EncodeToString([]byte(secret)),
		"base64url":         base64.URLEncoding.EncodeToString([]byte(secret)),
		"base64url nopad":   base64.RawURLEncoding.EncodeToString([]byte(secret)),
		"hex":               hex.EncodeToString([]byte(secret)),
		"HEX":               strings.ToUpper(hex.EncodeToString([]byte(secret))),
		"url.QueryEscape":   url.QueryEscape(secret),
		"url.PathEscape":    url.PathEscape(secret),
		"plain, for parity": secret,
	}
	require.NotEqual(t, forms["base64"], forms["base64url"], "the test secret must tell the alphabets apart")
	require.NotEqual(t, forms["url.QueryEscape"], forms["url.PathEscape"])
	for name, form := range forms {
		t.Run(name, func(t *testing.T) {
			got := sink.mask("value: " + form + " end")
			require.Equal(t, "value: *** end", got)
		})
	}

	t.Run("inside a longer base64 text", func(t *testing.T) {
		// curl -u ci:SECRET sends "Authorization: Basic base64(ci:SECRET)";
		// the secret starts 3 bytes in, and 1 and 2 bytes in for other users.
		for _, user := range []string{"ci", "bob", "root"} {
			enc := base64.StdEncoding.EncodeToString([]byte(user + ":" + secret))
			got := sink.mask("Authorization: Basic " + enc)
			require.Contains(t, got, "***", user)
			rest := strings.TrimPrefix(got, "Authorization: Basic ")
			rest = strings.Replace(rest, "***", "", 1)
			// What stays readable is the user and at most 2 letters around the mask.
			require.LessOrEqual(t, len(rest), len(base64.RawStdEncoding.EncodeToString([]byte(user+":")))+4, "%s: %s", user, got)
		}
	})

	t.Run("wrapped base64 of a long value", func(t *testing.T) {
		long := strings.Repeat("-----KEY material "+secret, 8)
		sink := newLogSink(1, &memLog{}, zerolog.Nop())
		sink.Mask([][]byte{[]byte(long)})
		enc := base64.StdEncoding.EncodeToString([]byte(long))
		for _, width := range []int{64, 76} {
			for i := 0; i < len(enc); i += width {
				line := enc[i:min(i+width, len(enc))]
				require.Equal(t, "***", sink.mask(line), "base64 wrapped at %d, line %d", width, i/width)
			}
		}
	})

	t.Run("short or unrelated text stays", func(t *testing.T) {
		for _, text := range []string{
			"abcd", "p%3F", "70", // pieces of the encodings shorter than 6
			base64.StdEncoding.EncodeToString([]byte("another value")),
			"go build ./... && go test ./...",
		} {
			require.Equal(t, text, sink.mask(text))
		}
	})
}

// flakyLog is a memLog whose AppendLog fails while down is set (or for the
// next failFirst calls), counting the refused calls.
type flakyLog struct {
	memLog
	down      atomic.Bool
	failFirst atomic.Int32
	refused   atomic.Int32
}

func (f *flakyLog) AppendLog(ctx context.Context, id int64, lines []slipway.LogLine) error {
	if f.down.Load() || f.failFirst.Add(-1) >= 0 {
		f.refused.Add(1)
		return errors.New("connection refused")
	}
	return f.memLog.AppendLog(ctx, id, lines)
}

func (m *memLog) lines() []string {
	return strings.Split(strings.TrimSuffix(m.text(), "\n"), "\n")
}

func TestLogSinkRetries(t *testing.T) {
	t.Parallel()

	t.Run("a refused batch is stored on a later flush", func(t *testing.T) {
		t.Parallel()
		store := &flakyLog{}
		store.failFirst.Store(3)
		sink := newLogSink(1, store, zerolog.Nop())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); sink.Run(ctx) }()
		for i := range 10 {
			sink.Add("", "build", fmt.Sprintf("line %d", i))
		}
		require.Eventually(t, func() bool { return strings.Count(store.text(), "\n") == 10 }, 10*time.Second, 20*time.Millisecond)
		sink.Add("", "build", "line 10")
		cancel()
		<-done
		require.EqualValues(t, 3, store.refused.Load())
		want := make([]string, 11)
		for i := range want {
			want[i] = fmt.Sprintf("line %d", i)
		}
		require.Equal(t, want, store.lines())
	})

	t.Run("over the cap the oldest lines give way to one marker", func(t *testing.T) {
		t.Parallel()
		store := &flakyLog{}
		store.down.Store(true)
		sink := newLogSink(1, store, zerolog.Nop())
		sink.maxPending = 1000
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); sink.Run(ctx) }()
		const total = 3000
		for i := range total {
			sink.Add("", "build", fmt.Sprintf("line %d", i))
			if i%1000 == 999 { // let the flusher try (and fail) meanwhile
				before := store.refused.Load()
				require.Eventually(t, func() bool { return store.refused.Load() > before }, 10*time.Second, 10*time.Millisecond)
			}
		}
		require.GreaterOrEqual(t, store.refused.Load(), int32(2), "the flusher kept trying")
		require.LessOrEqual(t, sink.pendingLines(), 1000, "memory stays bounded")
		store.down.Store(false)
		require.Eventually(t, func() bool { return sink.pendingLines() == 0 && store.text() != "" }, 10*time.Second, 20*time.Millisecond)
		cancel()
		<-done

		got := store.lines()
		var lost int
		_, err := fmt.Sscanf(got[0], lostLinesText, &lost)
		require.NoError(t, err, "first line %q is the marker", got[0])
		require.Equal(t, total, lost+len(got)-1, "every line is either stored or counted")
		markers := 0
		for _, l := range got {
			if strings.Contains(l, "were lost") {
				markers++
			}
		}
		require.Equal(t, 1, markers, "one marker for the whole outage")
		for i, l := range got[1:] {
			require.Equal(t, fmt.Sprintf("line %d", lost+i), l, "the newest lines are kept, in order")
		}
	})

	t.Run("the final flush tries again", func(t *testing.T) {
		t.Parallel()
		store := &flakyLog{}
		store.failFirst.Store(2)
		sink := newLogSink(1, store, zerolog.Nop())
		sink.Add("", "build", "last words")
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // the build is over before the first tick
		sink.Run(ctx)
		require.Equal(t, []string{"last words"}, store.lines())
	})

	t.Run("a store that stays away is reported", func(t *testing.T) {
		t.Parallel()
		store := &flakyLog{}
		store.down.Store(true)
		var logs testenv.SyncBuffer
		sink := newLogSink(1, store, zerolog.New(&logs))
		sink.Add("", "build", "one\ntwo")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		sink.Run(ctx)
		require.EqualValues(t, logFinalAttempts, store.refused.Load())
		require.Contains(t, logs.String(), `"lines":2`)
		require.Contains(t, logs.String(), "Build log lines lost")
	})
}
