package worker

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
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
