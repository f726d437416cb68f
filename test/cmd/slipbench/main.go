// Command slipbench measures slipway's intake and queue against real services
// (`make bench` starts PostgreSQL and buildkitd and runs it):
//
//   - webhook intake: signed GitHub push deliveries sent by concurrent clients to
//     the real server handler over loopback HTTP, each answered 202 only after its
//     build and queue job were committed; deliveries per second and p50/p99 answer
//     time, and the CPU time per delivery of the machine and of this process
//     (the rest is PostgreSQL's), beside a do-nothing chi handler measured in
//     the same run.
//   - pickup latency: webhook received (the build's created_at) → build running
//     (started_at), with idle workers waiting on LISTEN/NOTIFY.
//
// It prints the figures, then one table of every figure beside its baseline
// measured in the same run and its target (issues 3 and 11): its own, and
// with -gobench FILE those of the Go benchmarks whose `go test -bench`
// output FILE holds (`make bench` passes it; see goFigures for the rows).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/slipway-ci/slipway/buildkit"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/registry"
	"github.com/slipway-ci/slipway/server"
	"github.com/slipway-ci/slipway/test/testenv"
	"github.com/slipway-ci/slipway/worker"
)

const secret = "bench-secret"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "slipbench:", err)
		os.Exit(1)
	}
}

type options struct {
	deliveries, clients, pickups, workers, concurrency int
}

func run(ctx context.Context, args []string, getenv func(string) string, out io.Writer) error {
	fs := flag.NewFlagSet("slipbench", flag.ContinueOnError)
	var o options
	fs.IntVar(&o.deliveries, "deliveries", 6000, "deliveries sent in the intake run")
	fs.IntVar(&o.clients, "clients", 16, "concurrent clients in the intake run")
	fs.IntVar(&o.pickups, "pickups", 200, "builds queued one by one in the pickup run")
	fs.IntVar(&o.workers, "workers", 2, "workers in the pickup run")
	fs.IntVar(&o.concurrency, "concurrency", 4, "builds each worker runs at once in the pickup run")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the intake run to this file")
	goBench := fs.String("gobench", "", "`go test -bench` output whose figures join the closing table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var goRows []figure
	if *goBench != "" {
		f, err := os.Open(*goBench)
		if err != nil {
			return fmt.Errorf("reading the Go benchmarks' output: %w", err)
		}
		results, err := parseGoBench(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("reading %s: %w", *goBench, err)
		}
		goRows = goBenchFigures(results)
	}
	baseURL := getenv("TEST_DATABASE_URL")
	bkAddr := getenv("BUILDKIT_HOST")
	if baseURL == "" || bkAddr == "" {
		return errors.New("TEST_DATABASE_URL and BUILDKIT_HOST must be set: run `make bench`")
	}

	db, drop, err := freshDatabase(ctx, baseURL)
	if err != nil {
		return err
	}
	defer drop()
	defer db.Close()
	logger := zerolog.New(io.Discard).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	builds := postgres.NewBuildService(db)
	handler := server.New(logger, server.Config{GitHubWebhookSecret: secret, Registry: "127.0.0.1:1/bench", AdminToken: "bench-token", AutoRegister: true,
		// The payloads name their clone URLs, as the tests' do.
		CloneURLFromPayload: true}, builds, nil,
		server.Services{Repos: postgres.NewRepoService(db, nil)})

	fmt.Fprintf(out, "slipbench: %d deliveries from %d clients; %d pickups with %d workers × %d\n\n", o.deliveries, o.clients, o.pickups, o.workers, o.concurrency)

	// Webhook intake, and the do-nothing chi handler in the same run.
	noop := chi.NewRouter()
	noop.Post("/webhooks/github", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})
	bodies, err := deliveries(o.deliveries, "intake")
	if err != nil {
		return err
	}
	base, err := load(ctx, noop, bodies, o.clients)
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	intake, err := load(ctx, handler, bodies, o.clients)
	pprof.StopCPUProfile()
	if err != nil {
		return err
	}
	var committed int
	if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM builds b JOIN jobs j ON j.build_id = b.id`).Scan(&committed); err != nil {
		return err
	}
	fmt.Fprintf(out, "webhook intake (%d deliveries, %d clients)\n", o.deliveries, o.clients)
	fmt.Fprintf(out, "  %-22s %9.0f/s  p50 %7s  p99 %7s  (%d answered 202)\n", "do-nothing chi handler", base.rate, ms(base.p50), ms(base.p99), base.accepted)
	fmt.Fprintf(out, "  %-22s %9.0f/s  p50 %7s  p99 %7s  (%d answered 202, %d builds with their job committed)\n", "slipway /webhooks/github", intake.rate, ms(intake.p50), ms(intake.p99), intake.accepted, committed)
	fmt.Fprintf(out, "  ratio slipway / chi:    throughput %.3f  p50 %.1f×  p99 %.1f×\n", intake.rate/base.rate, ratio(intake.p50, base.p50), ratio(intake.p99, base.p99))
	// CPU per delivery says where a delivery's cost is: the database (with
	// any other process that ran meanwhile) is the machine's time less this
	// process's. On a shared machine it varies from run to run as much as
	// the rate does; compare medians of alternating runs.
	fmt.Fprintf(out, "  CPU per delivery:       machine %.3f ms (chi %.3f), of it slipbench (server and clients) %.3f ms (chi %.3f), the rest (mostly PostgreSQL) %.3f ms\n\n",
		intake.machineCPU, base.machineCPU, intake.selfCPU, base.selfCPU, intake.machineCPU-intake.selfCPU)
	// Met only when every delivery was answered 202 and is in the database
	// with its job: a fast intake that loses deliveries meets nothing.
	allAccepted := intake.accepted == o.deliveries && committed == o.deliveries
	rows := []figure{
		{name: "webhook intake, durable: deliveries/s", value: intake.rate, unit: "/s", baseline: base.rate, baseName: "chi do-nothing",
			target: atLeast(2000, "/s"), extraOK: &allAccepted},
		{name: "webhook intake, durable: p99 answer", value: msf(intake.p99), unit: " ms", baseline: msf(base.p99), baseName: "chi do-nothing",
			target: atMost(25, " ms"), extraOK: &allAccepted},
		{name: "webhook intake, durable: p50 answer", value: msf(intake.p50), unit: " ms", baseline: msf(base.p50), baseName: "chi do-nothing"},
		{name: "webhook intake: machine CPU per delivery", value: intake.machineCPU, unit: " ms", baseline: base.machineCPU, baseName: "chi do-nothing",
			missing: intake.machineCPU == 0},
		{name: "webhook intake: PostgreSQL CPU per delivery", value: intake.machineCPU - intake.selfCPU, unit: " ms",
			missing: intake.machineCPU == 0},
	}

	// The pickup run starts from an empty queue.
	if _, err := db.Pool().Exec(ctx, `TRUNCATE repos CASCADE`); err != nil {
		return err
	}
	p50, p99, err := pickup(ctx, db, handler, logger, bkAddr, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "pickup latency, webhook received → build running (%d builds, idle workers)\n", o.pickups)
	fmt.Fprintf(out, "  p50 %s  p99 %s\n\n", ms(p50), ms(p99))
	rows = append(rows,
		figure{name: "pickup, webhook → running: p50", value: msf(p50), unit: " ms", target: atMost(50, " ms")},
		figure{name: "pickup, webhook → running: p99", value: msf(p99), unit: " ms", target: atMost(250, " ms")},
	)
	fmt.Fprintf(out, "every figure (%d deliveries from %d clients, %d pickups; Go benchmarks from %s)\n", o.deliveries, o.clients, o.pickups, or(*goBench, "nowhere: no -gobench"))
	return printTable(out, append(rows, goRows...))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

func ratio(a, b time.Duration) float64 { return float64(a) / float64(max(b, 1)) }

// msf is d in milliseconds.
func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// freshDatabase makes and migrates a database of its own next to base's, and
// returns a func that drops it.
func freshDatabase(ctx context.Context, base string) (*postgres.DB, func(), error) {
	name := fmt.Sprintf("slipway_bench_%d", time.Now().UnixNano())
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting: %w", err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close(ctx)
		return nil, nil, err
	}
	drop := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = admin.Exec(cctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close(cctx)
	}
	u, err := url.Parse(base)
	if err != nil {
		drop()
		return nil, nil, err
	}
	u.Path = "/" + name
	q := u.Query()
	q.Set("pool_max_conns", "32")
	u.RawQuery = q.Encode()
	db, err := postgres.Open(ctx, u.String())
	if err != nil {
		drop()
		return nil, nil, err
	}
	if _, err := db.Migrate(ctx); err != nil {
		db.Close()
		drop()
		return nil, nil, err
	}
	return db, drop, nil
}

type delivery struct {
	id        string
	body, sig []byte
}

// deliveries makes n signed push deliveries from a real GitHub payload: 50
// repositories, a branch each, so no push supersedes another.
func deliveries(n int, prefix string) ([]delivery, error) {
	out := make([]delivery, n)
	for i := range n {
		body, err := testenv.GitHubPush("push-branch.json", testenv.PushParams{
			Owner: "bench", Name: fmt.Sprint("repo", i%50), CloneURL: "git://127.0.0.1:1/none.git",
			Ref: fmt.Sprintf("refs/heads/%s-%d", prefix, i), After: fmt.Sprintf("%040x", i+1),
		})
		if err != nil {
			return nil, err
		}
		out[i] = delivery{id: fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), i), body: body, sig: []byte(testenv.Sign(secret, body))}
	}
	return out, nil
}

type result struct {
	rate     float64
	p50, p99 time.Duration
	accepted int
	// CPU time per accepted delivery, in milliseconds: of the whole machine
	// (every process: the database, this one) and of this process alone
	// (the server and the clients). Zero where /proc/stat is not readable.
	machineCPU, selfCPU float64
}

// cpuTimes returns the machine's busy CPU time (user, nice, system, irq,
// softirq and steal over every core, from the first line of /proc/stat, in
// clock ticks of 1/100 s as Linux reports them on every architecture) and
// this process's user and system time. ok is false off Linux.
func cpuTimes() (machine, self time.Duration, ok bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, self, false
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, self, false
	}
	var ticks int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, self, false
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, self, true
}

// load serves h on a loopback port and sends every delivery from clients
// concurrent clients, each over a kept-alive connection.
func load(ctx context.Context, h http.Handler, ds []delivery, clients int) (result, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	target := "http://" + ln.Addr().String() + "/webhooks/github"
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}}

	lat := make([]time.Duration, len(ds))
	codes := make([]int, len(ds))
	next := make(chan int)
	var wg sync.WaitGroup
	machine0, self0, cpuOK := cpuTimes()
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for i := range next {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(ds[i].body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-GitHub-Event", "push")
				req.Header.Set("X-GitHub-Delivery", ds[i].id)
				req.Header.Set("X-Hub-Signature-256", string(ds[i].sig))
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					codes[i] = resp.StatusCode
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	for i := range ds {
		next <- i
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start)
	machine1, self1, cpuOK1 := cpuTimes()
	res := result{}
	for _, c := range codes {
		if c == http.StatusAccepted {
			res.accepted++
		}
	}
	if cpuOK && cpuOK1 && res.accepted > 0 {
		res.machineCPU = msf(machine1-machine0) / float64(res.accepted)
		res.selfCPU = msf(self1-self0) / float64(res.accepted)
	}
	res.rate = float64(res.accepted) / elapsed.Seconds()
	res.p50, res.p99 = percentiles(lat)
	return res, ctx.Err()
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)*50/100], s[min(len(s)-1, len(s)*99/100)]
}

// pickup runs idle workers (real ones, on buildkitd) and queues builds one at a
// time through the webhook, each once the previous one is running, and returns
// the p50 and p99 of started_at − created_at. The builds then fail at once at
// checkout (their clone URL refuses connections), which keeps the workers idle.
func pickup(ctx context.Context, db *postgres.DB, handler http.Handler, logger zerolog.Logger, bkAddr string, o options) (time.Duration, time.Duration, error) {
	bk, err := buildkit.New(ctx, buildkit.Config{Addr: bkAddr})
	if err != nil {
		return 0, 0, err
	}
	defer bk.Close()
	jobs := postgres.NewJobQueue(db, logger)
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	wg.Go(func() { _ = jobs.Listen(wctx) })
	work, err := os.MkdirTemp("", "slipbench-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(work)
	for i := range o.workers {
		w, err := worker.New(logger, worker.Config{ID: fmt.Sprint("bench-", i), Concurrency: o.concurrency,
			PollInterval: 5 * time.Second, WorkspaceDir: work, ShutdownGrace: time.Second},
			postgres.NewBuildService(db), jobs, bk, registry.New())
		if err != nil {
			return 0, 0, err
		}
		wg.Go(func() { _ = w.Run(wctx) })
	}
	// Let the workers reach their first wait: the first claims find nothing.
	if err := waitListening(ctx, db); err != nil {
		return 0, 0, err
	}

	ds, err := deliveries(o.pickups, "pickup")
	if err != nil {
		return 0, 0, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	target := "http://" + ln.Addr().String() + "/webhooks/github"
	for _, d := range ds {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(d.body))
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", d.id)
		req.Header.Set("X-Hub-Signature-256", string(d.sig))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, 0, err
		}
		answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return 0, 0, fmt.Errorf("pickup delivery answered %d: %s", resp.StatusCode, answer)
		}
		// Idle workers: wait until this build has left the queue before the next.
		if err := waitStarted(ctx, db, d.id); err != nil {
			return 0, 0, err
		}
	}
	rows, err := db.Pool().Query(ctx, `SELECT started_at - created_at FROM builds WHERE delivery_id LIKE 'pickup-%'`)
	if err != nil {
		return 0, 0, err
	}
	lat, err := pgx.CollectRows(rows, pgx.RowTo[time.Duration])
	if err != nil {
		return 0, 0, err
	}
	p50, p99 := percentiles(lat)
	return p50, p99, nil
}

func waitListening(ctx context.Context, db *postgres.DB) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			time.Sleep(200 * time.Millisecond) // let the workers' first empty claims pass
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the workers' listener did not start in 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitStarted(ctx context.Context, db *postgres.DB, delivery string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var started bool
		if err := db.Pool().QueryRow(ctx, `SELECT started_at IS NOT NULL FROM builds WHERE delivery_id = $1`, delivery).Scan(&started); err != nil {
			return err
		}
		if started {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("build of delivery %s not started after 30s", delivery)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
