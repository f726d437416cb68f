package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// memoryServerEnv, set to a budget in bytes, makes TestWebhookMemoryServer
// serve webhooks for BenchmarkWebhookMemoryUnderAttack in a process of its own.
const memoryServerEnv = "SLIPWAY_BENCH_WEBHOOK_MEMORY_SERVER"

// BenchmarkWebhookMemoryUnderAttack measures what issue 12 saw: 40 concurrent
// unsigned 24 MB webhook bodies. Each round starts a fresh server process
// (this test binary, running TestWebhookMemoryServer) twice: with the default
// budget (SLIPWAY_WEBHOOK_MEMORY, 64 MiB) and with a budget so large it
// bounds nothing, the baseline; once with bodies that give their
// Content-Length and once with chunked ones (whose buffer grows). It reports the peak resident memory of each
// (VmHWM of /proc/PID/status, so everything the process touched, not only
// the heap), their ratio and the answers the attacker got.
func BenchmarkWebhookMemoryUnderAttack(b *testing.B) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		b.Skip("needs /proc to read a process's peak memory")
	}
	const (
		attackers = 40
		bodySize  = 24 << 20
	)
	for i := 0; i < b.N; i++ {
		fmt.Printf("webhook memory under %d concurrent unsigned %d MB bodies (peak RSS of the server process):\n", attackers, bodySize>>20)
		for _, chunked := range []bool{false, true} {
			budget := attackMemoryServer(b, DefaultWebhookMemory, attackers, bodySize, chunked)
			baseline := attackMemoryServer(b, 1<<40, attackers, bodySize, chunked)
			ratio := float64(baseline.peak) / float64(budget.peak)
			kind := "content-length"
			if chunked {
				kind = "chunked"
			}
			b.ReportMetric(float64(budget.peak)/(1<<20), "peak-MiB-budget-"+kind)
			b.ReportMetric(float64(baseline.peak)/(1<<20), "peak-MiB-baseline-"+kind)
			fmt.Printf("  %s bodies:\n", kind)
			fmt.Printf("    budget 64 MiB (default): idle %4d MiB, peak %5d MiB, answers %s\n", budget.idle>>20, budget.peak>>20, budget.answers)
			fmt.Printf("    no budget (baseline):    idle %4d MiB, peak %5d MiB, answers %s\n", baseline.idle>>20, baseline.peak>>20, baseline.answers)
			fmt.Printf("    baseline/budget: %.1fx\n", ratio)
		}
	}
}

type attackResult struct {
	idle, peak int64  // resident bytes before the attack, and at most
	answers    string // "401×38 503×2"
}

// attackMemoryServer starts a server process with budget, sends it attackers
// concurrent unsigned bodies of size bytes (with a Content-Length, or chunked
// without one), and reads its peak memory.
func attackMemoryServer(b *testing.B, budget int64, attackers, size int, chunked bool) attackResult {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWebhookMemoryServer$", "-test.count=1")
	cmd.Env = append(os.Environ(), memoryServerEnv+"="+strconv.FormatInt(budget, 10))
	stdin, err := cmd.StdinPipe()
	require.NoError(b, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(b, err)
	cmd.Stderr = os.Stderr
	require.NoError(b, cmd.Start())
	defer func() {
		stdin.Close() // the server's signal to stop
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(b, err)
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	require.True(b, ok, "server said %q", line)
	go io.Copy(io.Discard, stdout) //nolint:errcheck // the test binary's own PASS line

	res := attackResult{idle: procStatusBytes(b, cmd.Process.Pid, "VmRSS")}
	tr := &http.Transport{MaxConnsPerHost: 0, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		wg     sync.WaitGroup
	)
	for range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/webhooks/github", io.LimitReader(filler{}, int64(size)))
			if err != nil {
				panic(err)
			}
			req.ContentLength = int64(size)
			if chunked {
				req.ContentLength = -1
			}
			req.Header.Set("X-GitHub-Event", "push")
			req.Header.Set("X-GitHub-Delivery", "attack")
			req.Header.Set("X-Hub-Signature-256", "sha256=00")
			answer := "error"
			if resp, err := client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				answer = strconv.Itoa(resp.StatusCode)
			}
			mu.Lock()
			counts[answer]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.peak = procStatusBytes(b, cmd.Process.Pid, "VmHWM")
	var parts []string
	for _, k := range []string{"401", "503", "error"} {
		if counts[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s×%d", k, counts[k]))
			delete(counts, k)
		}
	}
	for k, n := range counts {
		parts = append(parts, fmt.Sprintf("%s×%d", k, n))
	}
	res.answers = strings.Join(parts, " ")
	return res
}

// filler is an endless reader of 'x' bytes, so the attacker's bodies cost the
// benchmark no memory.
type filler struct{}

func (filler) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// procStatusBytes reads a "kB" field of /proc/PID/status.
func procStatusBytes(b *testing.B, pid int, field string) int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(b, err)
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(b, err)
			return kb << 10
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestWebhookMemoryServer is the server process of
// BenchmarkWebhookMemoryUnderAttack: New with a GitHub secret and no database
// (an unsigned delivery never reaches one), served as slipway server serves it
// (cmd/slipway listenAndServe's timeouts), until stdin closes.
func TestWebhookMemoryServer(t *testing.T) {
	v := os.Getenv(memoryServerEnv)
	if v == "" {
		t.Skip("run by BenchmarkWebhookMemoryUnderAttack")
	}
	budget, err := strconv.ParseInt(v, 10, 64)
	require.NoError(t, err)
	h := New(zerolog.Nop(), Config{GitHubWebhookSecret: testSecret, AdminToken: testToken, WebhookMemory: budget}, nil, nil, Services{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	fmt.Printf("listening %s\n", ln.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	require.NoError(t, srv.Shutdown(context.Background()))
	require.ErrorIs(t, <-done, http.ErrServerClosed)
}
