package server

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
)

// countingBuilds is the real build store, counting the calls (one SQL
// statement each) the Now page makes: FindBuilds and FindBuildSteps.
type countingBuilds struct {
	slipway.BuildService
	finds, steps atomic.Int64
}

func (c *countingBuilds) FindBuilds(ctx context.Context, f slipway.BuildFilter) ([]*slipway.Build, error) {
	c.finds.Add(1)
	return c.BuildService.FindBuilds(ctx, f)
}

func (c *countingBuilds) FindBuildSteps(ctx context.Context, ids []int64) (map[int64][]slipway.PlatformStep, error) {
	c.steps.Add(1)
	return c.BuildService.FindBuildSteps(ctx, ids)
}

// nowBundle is a public dashboard over a real database whose Now page hears
// of changes from a real Notifier, and its followers of /events/now.
type nowBundle struct {
	srv      *httptest.Server
	db       *postgres.DB
	builds   *countingBuilds
	followed []*nowFollower
	close    func() // stops the server, its followers and the notifier; also at cleanup
}

// nowFollower is one open /events/now: each "now" event's body goes to bodies.
type nowFollower struct {
	bodies chan string
}

func setupNow(tb testing.TB, followers int) *nowBundle {
	tb.Helper()
	db := pgtest.NewDB(tb)
	builds := &countingBuilds{BuildService: postgres.NewBuildService(db)}
	logger := zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.WarnLevel)
	n := postgres.NewNotifier(db, logger)
	// LISTEN on the topics before the page subscribes, so the test knows
	// when every catch-up is over (the page's subscription gets none).
	ready := make(chan struct{}, 2)
	warm := n.WatchBuilds(func(int64) {
		select {
		case ready <- struct{}{}:
		default:
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	for range 2 {
		select {
		case <-ready:
		case <-time.After(15 * time.Second):
			tb.Fatal("the notifier never listened")
		}
	}
	srv := httptest.NewServer(New(logger, Config{DashboardPublic: true, Changes: n, MaxLogFollowers: 1000}, builds, nil, Services{}))
	b := &nowBundle{srv: srv, db: db, builds: builds}
	var wg sync.WaitGroup
	var once sync.Once
	b.close = func() {
		once.Do(func() {
			srv.CloseClientConnections()
			srv.Close()
			wg.Wait()
			warm()
			cancel()
			require.NoError(tb, <-done)
		})
	}
	tb.Cleanup(b.close)
	for range followers {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/events/now", nil)
		require.NoError(tb, err)
		resp, err := srv.Client().Do(req)
		require.NoError(tb, err)
		require.Equal(tb, http.StatusOK, resp.StatusCode)
		f := &nowFollower{bodies: make(chan string, 1000)}
		b.followed = append(b.followed, f)
		wg.Go(func() {
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			var body strings.Builder
			for sc.Scan() {
				line := sc.Text()
				switch {
				case strings.HasPrefix(line, "data: "):
					body.WriteString(strings.TrimPrefix(line, "data: "))
					body.WriteString("\n")
				case line == "" && body.Len() > 0:
					f.bodies <- body.String()
					body.Reset()
				}
			}
		})
	}
	return b
}

// waitAll waits until every follower got a body that contains want.
func (b *nowBundle) waitAll(tb testing.TB, want string) {
	tb.Helper()
	deadline := time.After(20 * time.Second)
	for i, f := range b.followed {
		for found := false; !found; {
			select {
			case body := <-f.bodies:
				found = strings.Contains(body, want)
			case <-deadline:
				tb.Fatalf("follower %d never saw %q", i, want)
			}
		}
	}
}

// renders is how often the Now page's body was loaded (one FindBuildSteps each).
func (b *nowBundle) renders() int64 { return b.builds.steps.Load() }

func (b *nowBundle) queries() int64 { return b.builds.finds.Load() + b.builds.steps.Load() }

func nowTrigger(delivery, ref string) slipway.Trigger {
	return slipway.Trigger{Forge: "github", DeliveryID: delivery, Event: "push", Owner: "acme", Name: "app",
		CloneURL: "https://github.com/acme/app.git", Ref: ref, Commit: strings.Repeat("ab", 20), Sender: "octocat"}
}

// startBuild queues a build and marks it running, as a worker's claim would.
func (b *nowBundle) startBuild(tb testing.TB, delivery string) int64 {
	tb.Helper()
	ctx := context.Background()
	res, err := b.builds.EnqueueTrigger(ctx, nowTrigger(delivery, "refs/heads/"+delivery), "reg/acme/app")
	require.NoError(tb, err)
	b.claim(tb)
	return res.Build.ID
}

// claim claims the next build as a worker would: it is running then.
func (b *nowBundle) claim(tb testing.TB) {
	tb.Helper()
	claimed, err := postgres.NewJobQueue(b.db, zerolog.Nop()).JobClaim(context.Background(), "w1", 1)
	require.NoError(tb, err)
	require.Len(tb, claimed, 1)
}

func TestNowPageOneRenderPerChange(t *testing.T) {
	t.Parallel()
	b := setupNow(t, 100)
	b.waitAll(t, "Nothing is building right now.")
	require.Equal(t, int64(1), b.renders(), "100 viewers share the first render")

	// A queued build: one notification, one render, every viewer sees it.
	ctx := context.Background()
	res, err := b.builds.EnqueueTrigger(ctx, nowTrigger("d-1", "refs/heads/main"), "reg/acme/app")
	require.NoError(t, err)
	b.waitAll(t, fmt.Sprintf("#%d", res.Build.ID))
	require.Equal(t, int64(2), b.renders())
	b.claim(t)
	b.waitAll(t, "build-card running")
	require.Equal(t, int64(3), b.renders())

	// A platform's step, recorded by the log store as the worker's lines
	// come in: the page shows it without reading the log.
	require.NoError(t, b.builds.AppendLog(ctx, res.Build.ID, []slipway.LogLine{
		{Time: time.Now(), Platform: "linux/arm64", Step: "build", Text: "#1 [internal] load build definition"}}))
	b.waitAll(t, "<strong>build</strong>")
	require.Equal(t, int64(4), b.renders())
	// The same step again changes nothing: no render. A later change is the
	// barrier that proves none came in between.
	require.NoError(t, b.builds.AppendLog(ctx, res.Build.ID, []slipway.LogLine{
		{Time: time.Now(), Platform: "linux/arm64", Step: "build", Text: "#2 more"}}))
	require.NoError(t, b.builds.AppendLog(ctx, res.Build.ID, []slipway.LogLine{
		{Time: time.Now(), Platform: "linux/arm64", Step: "test:unit", Text: "ok"}}))
	b.waitAll(t, "<strong>test:unit</strong>")
	require.Equal(t, int64(5), b.renders())
	require.Equal(t, 5*b.renders(), b.queries(), "five queries per render: four lists and the steps")
}

func TestNowHubStopsWithItsLastViewer(t *testing.T) {
	t.Parallel()
	var renders atomic.Int64
	h := newNowHub(func(context.Context) ([]byte, error) {
		return fmt.Appendf(nil, "body %d", renders.Add(1)), nil
	}, nil, zerolog.Nop())
	first, leaveFirst := h.subscribe()
	require.Equal(t, "body 1", string(<-first))
	// A viewer arriving later gets the current body at once, with no render.
	second, leaveSecond := h.subscribe()
	require.Equal(t, "body 1", string(<-second))
	require.Equal(t, int64(1), renders.Load())
	leaveFirst()
	leaveSecond()
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Nil(t, h.stop, "the loop stopped with the last viewer")
	require.Nil(t, h.last)
}

// BenchmarkNowPage follows the Now page with 1 and then with 100 viewers
// while a running build changes step nowBenchChanges times (each change seen
// by every viewer before the next), and reports, on one line so that they
// print side by side, the database queries per minute and per change and
// the process's CPU per minute (server and followers share the process) of
// each: queries-min-1 beside queries-min-100, cpu-s-min-1 beside
// cpu-s-min-100. ns/op is the time of both runs. Before the notifier each
// viewer polled every 2s (4 queries plus one log read per running build):
// the same measurement on that code (commit 2da5095) gave 150 queries/min
// and 0.14 cpu-s/min with 1 viewer, 15,000 queries/min and 2.26 cpu-s/min
// with 100. Now the queries per change are 5 whatever the viewers, and
// renders are at most one a second (nowCoalesce).
func BenchmarkNowPage(b *testing.B) {
	for range b.N {
		for _, followers := range []int{1, 100} {
			queries, changes, cpu, took := nowPageRun(b, followers)
			minutes := took.Minutes()
			b.ReportMetric(float64(queries)/minutes, fmt.Sprintf("queries-min-%d", followers))
			b.ReportMetric(float64(queries)/float64(changes), fmt.Sprintf("queries-change-%d", followers))
			b.ReportMetric(cpu.Seconds()/minutes, fmt.Sprintf("cpu-s-min-%d", followers))
		}
	}
}

// nowBenchChanges is how many step changes one run of BenchmarkNowPage makes
// per number of viewers, at most two a second.
const nowBenchChanges = 12

// nowPageRun is one run of BenchmarkNowPage with followers viewers; it
// returns the queries the page made, the changes, the CPU the process used
// and the time it all took.
func nowPageRun(b *testing.B, followers int) (queries int64, changes int, cpu, took time.Duration) {
	b.StopTimer()
	nb := setupNow(b, followers)
	defer nb.close()
	nb.waitAll(b, "Nothing is building right now.")
	id := nb.startBuild(b, "main")
	nb.waitAll(b, fmt.Sprintf("#%d", id))
	ctx := context.Background()
	q0, c0, t0 := nb.queries(), cpuTime(), time.Now()
	pace := time.NewTicker(500 * time.Millisecond)
	defer pace.Stop()
	b.StartTimer()
	for i := range nowBenchChanges {
		step := fmt.Sprintf("step-%d", i)
		require.NoError(b, nb.builds.AppendLog(ctx, id, []slipway.LogLine{
			{Time: time.Now(), Platform: "linux/amd64", Step: step, Text: "x"}}))
		nb.waitAll(b, "<strong>"+step+"</strong>")
		<-pace.C
	}
	return nb.queries() - q0, nowBenchChanges, cpuTime() - c0, time.Since(t0)
}

// cpuTime is the user and system CPU the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// kickWatcher is a slipway.BuildWatcher the test fires by hand.
type kickWatcher struct {
	mu sync.Mutex
	fn func(int64)
}

func (k *kickWatcher) WatchBuilds(fn func(int64)) func() {
	k.mu.Lock()
	k.fn = fn
	k.mu.Unlock()
	return func() { k.mu.Lock(); k.fn = nil; k.mu.Unlock() }
}

func (k *kickWatcher) fire() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fn != nil {
		k.fn(1)
	}
}

func TestNowHubSlowViewer(t *testing.T) {
	t.Parallel()
	var renders atomic.Int64
	w := &kickWatcher{}
	h := newNowHub(func(context.Context) ([]byte, error) {
		return fmt.Appendf(nil, "body %d", renders.Add(1)), nil
	}, w, zerolog.Nop())
	slow, leaveSlow := h.subscribe()
	defer leaveSlow()
	fast, leaveFast := h.subscribe()
	defer leaveFast()
	require.Equal(t, "body 1", string(<-fast))
	// The slow viewer reads nothing while the page changes twice: the fast
	// one is not held up, and the slow one finds only the newest body.
	for _, want := range []string{"body 2", "body 3"} {
		w.fire()
		select {
		case got := <-fast:
			require.Equal(t, want, string(got))
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s", want)
		}
	}
	require.Equal(t, "body 3", string(<-slow))
	select {
	case got := <-slow:
		t.Fatalf("an old body was kept: %s", got)
	default:
	}
}
