package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
)

// benchBuild queues a build on s (no worker runs it) and stores lines log
// lines with steps, platforms and ANSI colours, in batches.
func benchBuild(b *testing.B, s *stack, delivery string, lines int) (int64, *postgres.BuildService) {
	b.Helper()
	id := s.send(delivery, "bench", "app", "git://127.0.0.1:1/bench.git", "refs/heads/main", strings.Repeat("ab", 20))
	builds := postgres.NewBuildService(s.db)
	appendLines(b, builds, id, 0, lines)
	return id, builds
}

func appendLines(b *testing.B, builds *postgres.BuildService, id int64, from, n int) {
	b.Helper()
	const batch = 5000
	for i := 0; i < n; i += batch {
		var ls []slipway.LogLine
		for j := i; j < min(i+batch, n); j++ {
			no := from + j
			platform := []string{"linux/amd64", "linux/arm64"}[no/1000%2]
			ls = append(ls, slipway.LogLine{Time: time.Now(), Platform: platform, Step: "build",
				Text: fmt.Sprintf("#%d [%s 3/7] RUN make -j4 \x1b[32mok\x1b[0m compiling pkg/module%05d.go", no%40, platform, no)})
		}
		require.NoError(b, builds.AppendLog(context.Background(), id, ls))
	}
}

func finishBuild(b *testing.B, s *stack, id int64) {
	b.Helper()
	_, err := s.db.Pool().Exec(context.Background(),
		`UPDATE builds SET state = 'succeeded', started_at = created_at, finished_at = now() WHERE id = $1`, id)
	require.NoError(b, err)
}

// BenchmarkBuildPage50kLines measures the build page of a build with a
// 50,000-line log in headless chromium: time to first byte of the page, and
// full load (every line rendered, the stream ended).
func BenchmarkBuildPage50kLines(b *testing.B) {
	chromiumPath(b)
	s := newStack(b)
	id, _ := benchBuild(b, s, "bench-50k", 50000)
	finishBuild(b, s, id)
	token := s.token("bench-viewer", "viewer")
	ctx := newBrowser(b)
	signIn(b, ctx, s.url, token)
	url := fmt.Sprintf("%s/builds/%d", s.url, id)
	var ttfb, full time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		do(b, ctx, time.Minute, chromedp.Navigate(url))
		wait(b, ctx, 5*time.Minute, `document.getElementById("log").dataset.state === "succeeded"`)
		full += time.Since(start)
		ms := get(b, ctx, chromedp.Evaluate[float64](`(() => { const n = performance.getEntriesByType("navigation")[0]; return n.responseStart - n.requestStart; })()`))
		ttfb += time.Duration(ms * float64(time.Millisecond))
		lines := get(b, ctx, chromedp.Evaluate[int](`Number(document.getElementById("log").dataset.lines)`))
		require.Equal(b, 50000, lines)
	}
	b.StopTimer()
	b.ReportMetric(float64(ttfb.Milliseconds())/float64(b.N), "ttfb-ms")
	b.ReportMetric(float64(full.Milliseconds())/float64(b.N), "full-load-ms")
}

// BenchmarkServerMemoryTenFollowers measures the server's resident memory
// while ten browsers follow the live log of a running build that grows by
// 10,000 lines. Each is a chromium of its own: one profile holds at most six
// HTTP/1.1 connections to a host.
func BenchmarkServerMemoryTenFollowers(b *testing.B) {
	chromiumPath(b)
	s := newStack(b)
	id, builds := benchBuild(b, s, "bench-follow", 1000)
	token := s.token("bench-viewer", "viewer")
	url := fmt.Sprintf("%s/builds/%d", s.url, id)
	before := rssKB(b, s.server.Process.Pid)
	var peak int
	b.ResetTimer()
	for range b.N {
		var tabs []context.Context
		for range 10 {
			tab := newBrowser(b)
			signIn(b, tab, s.url, token)
			do(b, tab, time.Minute, chromedp.Navigate(url))
			wait(b, tab, time.Minute, `document.getElementById("log") && Number(document.getElementById("log").dataset.lines || 0) >= 1000`)
			tabs = append(tabs, tab)
		}
		peak = max(peak, rssKB(b, s.server.Process.Pid))
		for i := range 10 {
			appendLines(b, builds, id, 1000+i*1000, 1000)
			peak = max(peak, rssKB(b, s.server.Process.Pid))
		}
		for _, tab := range tabs {
			wait(b, tab, 2*time.Minute, `Number(document.getElementById("log").dataset.lines) >= 11000`)
		}
		peak = max(peak, rssKB(b, s.server.Process.Pid))
	}
	b.StopTimer()
	b.ReportMetric(float64(before)/1024, "rss-before-MB")
	b.ReportMetric(float64(peak)/1024, "rss-peak-MB")
}

// rssKB reads a process's resident set size from /proc.
func rssKB(b *testing.B, pid int) int {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(b, err)
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.Fields(v)[0])
			require.NoError(b, err)
			return n
		}
	}
	b.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
