package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/test/devstack"
	"github.com/slipway-ci/slipway/test/testenv"
)

// pgCluster is a PostgreSQL cluster of the test's own, which it may restart
// without disturbing the other tests' database.
type pgCluster struct {
	t   *testing.T
	c   *devstack.Cluster
	url string
}

func startPostgres(t *testing.T) *pgCluster {
	t.Helper()
	if _, err := devstack.PostgresBinDir(); err != nil {
		t.Skip(err)
	}
	// Under /var/tmp: the server's user must reach it, which a root-only temp dir forbids.
	dir, err := os.MkdirTemp("/var/tmp", "slipway-e2e-pg-")
	require.NoError(t, err)
	c, err := devstack.NewCluster(dir)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = c.Stop(true)
		_ = os.RemoveAll(dir)
	})
	var out bytes.Buffer
	require.NoError(t, c.Init(&out), "%s", out.String())
	addr := freeAddr(t)
	_, portText, _ := strings.Cut(addr, ":")
	port, _ := strconv.Atoi(portText)
	if err := c.Start(context.Background(), port, "-c fsync=off -c synchronous_commit=off -c max_connections=200", time.Minute, &out); err != nil {
		log, _ := os.ReadFile(c.LogFile())
		t.Fatalf("%v\n%s\n%s", err, out.String(), log)
	}
	return &pgCluster{t: t, c: c, url: devstack.PostgresURL(port, "postgres")}
}

// restart stops the cluster (fast: in-flight transactions are aborted) and starts it again.
func (c *pgCluster) restart() {
	c.t.Helper()
	require.NoError(c.t, c.c.Restart(time.Minute))
}

// TestDeliveriesSurvivePostgresRestart sends 2,000 signed deliveries at once, a
// fifth of them twice, and restarts PostgreSQL in the middle. Whatever the server
// answered, the database must hold no half-written delivery and no delivery id
// may have two builds; every 2xx must have made exactly one build.
func TestDeliveriesSurvivePostgresRestart(t *testing.T) {
	pg := startPostgres(t)
	bin := slipwayBinary(t)
	addr := freeAddr(t)
	env := append(os.Environ(),
		"SLIPWAY_DATABASE_URL="+pg.url,
		"SLIPWAY_ADDR="+addr,
		"SLIPWAY_GITHUB_WEBHOOK_SECRET="+webhookSecret,
		"SLIPWAY_AUTO_REGISTER=true",
		"SLIPWAY_ADMIN_TOKEN="+adminToken,
		"SLIPWAY_REGISTRY=127.0.0.1:1/e2e",
		"SLIPWAY_LOG_LEVEL=warn",
		"SLIPWAY_LOG_FORMAT=json",
	)
	migrate := exec.Command(bin, "migrate")
	migrate.Env = env
	out, err := migrate.CombinedOutput()
	require.NoError(t, err, "migrate: %s", out)
	s := &stack{t: t, bin: bin, env: env, url: "http://" + addr}
	s.start("server")
	s.waitHealthy()

	const (
		deliveries = 2000
		twice      = deliveries / 5
		parallel   = 64
	)
	// Bodies are made first so the load is only the server's. Repositories and
	// branches vary, as on a real installation.
	type request struct {
		delivery string
		body     []byte
		sig      string
	}
	var reqs []request
	for i := range deliveries {
		commit := fmt.Sprintf("%040x", i+1)
		body, err := testenv.GitHubPush(fixture, testenv.PushParams{
			Owner: "acme", Name: fmt.Sprint("repo", i%25), CloneURL: "git://127.0.0.1:1/x.git",
			Ref: fmt.Sprint("refs/heads/b", i), After: commit,
		})
		require.NoError(t, err)
		r := request{delivery: fmt.Sprintf("delivery-%d", i), body: body, sig: testenv.Sign(webhookSecret, body)}
		reqs = append(reqs, r)
		if i < twice {
			reqs = append(reqs, r)
		}
	}
	rand.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })

	type answer struct {
		code    int // 0: no answer
		buildID int64
	}
	var mu sync.Mutex
	answers := map[string][]answer{}
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: parallel}}
	var sent atomic.Int64
	restartAt := int64(len(reqs) / 4)
	restarted := make(chan time.Duration, 1)
	work := make(chan request)
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for r := range work {
				if sent.Add(1) == restartAt {
					go func() {
						start := time.Now()
						pg.restart()
						restarted <- time.Since(start)
					}()
				}
				a := answer{}
				req, _ := http.NewRequest(http.MethodPost, s.url+"/webhooks/github", bytes.NewReader(r.body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-GitHub-Event", "push")
				req.Header.Set("X-GitHub-Delivery", r.delivery)
				req.Header.Set("X-Hub-Signature-256", r.sig)
				if resp, err := client.Do(req); err == nil {
					data, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					a.code = resp.StatusCode
					var v struct {
						BuildID int64 `json:"build_id"`
					}
					if json.Unmarshal(data, &v) == nil {
						a.buildID = v.BuildID
					}
				}
				mu.Lock()
				answers[r.delivery] = append(answers[r.delivery], a)
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	for _, r := range reqs {
		work <- r
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	restartTook := <-restarted

	codes := map[int]int{}
	for _, as := range answers {
		for _, a := range as {
			codes[a.code]++
		}
	}
	t.Logf("MEASURE %d requests in %s with a PostgreSQL restart of %s: answers by status %v", len(reqs), elapsed.Round(time.Millisecond), restartTook.Round(time.Millisecond), codes)
	require.Zero(t, codes[0], "every request got an answer: the server never hangs while the database is down")
	require.Positive(t, codes[http.StatusServiceUnavailable], "the restart fell inside the run and was answered 503")
	for code := range codes {
		require.Contains(t, []int{http.StatusAccepted, http.StatusServiceUnavailable}, code, "only 202 or 503")
	}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	scalar := func(sql string) int {
		var n int
		require.NoError(t, conn.QueryRow(ctx, sql).Scan(&n))
		return n
	}
	// No half-written delivery: each build has its job and its delivery row, and
	// each delivery row its build (a foreign key).
	require.Zero(t, scalar(`SELECT count(*) FROM builds b WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.build_id = b.id)`), "builds without a job")
	require.Zero(t, scalar(`SELECT count(*) FROM builds b WHERE NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.build_id = b.id)`), "builds without a delivery")
	require.Zero(t, scalar(`SELECT count(*) FROM (SELECT delivery_id FROM builds GROUP BY delivery_id HAVING count(*) > 1) x`), "delivery ids with two builds")

	rows, err := conn.Query(ctx, `SELECT delivery_id, id FROM builds`)
	require.NoError(t, err)
	builds := map[string]int64{}
	for rows.Next() {
		var d string
		var id int64
		require.NoError(t, rows.Scan(&d, &id))
		builds[d] = id
	}
	require.NoError(t, rows.Err())
	accepted := 0
	for d, as := range answers {
		for _, a := range as {
			if a.code == http.StatusAccepted {
				accepted++
				require.Equal(t, builds[d], a.buildID, "delivery %s answered 202 with build %d, the database holds %d", d, a.buildID, builds[d])
			}
		}
	}
	t.Logf("MEASURE %d answers 202, %d deliveries have a build", accepted, len(builds))
}

// TestServerShutdownFinishesInFlightRequests sends SIGTERM to a server while a
// delivery is half sent: the server stops accepting connections, yet the
// delivery in flight is still accepted and its build committed.
func TestServerShutdownFinishesInFlightRequests(t *testing.T) {
	s := newStack(t)
	body := push(t, testenv.PushParams{Owner: "acme", Name: "inflight", CloneURL: "git://127.0.0.1:1/x.git", Ref: "refs/heads/main", After: strings.Repeat("a", 40)})
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	head := fmt.Sprintf("POST /webhooks/github HTTP/1.1\r\nHost: slipway\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: inflight-1\r\nX-Hub-Signature-256: %s\r\nContent-Length: %d\r\n\r\n",
		testenv.Sign(webhookSecret, body), len(body))
	_, err = conn.Write(append([]byte(head), body[:len(body)/2]...))
	require.NoError(t, err)

	// Until the server has read what was sent, the connection may still be in the
	// listen backlog or idle, and a shutdown rightly drops those.
	waitUntil(t, 30*time.Second, "the server to read the request's head", func() bool {
		return socketDrained(t, conn)
	})
	require.NoError(t, s.server.Process.Signal(syscall.SIGTERM))
	waitUntil(t, 30*time.Second, "the server to stop accepting connections", func() bool {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(s.url, "http://"), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	_, err = conn.Write(body[len(body)/2:])
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", data)
	require.Equal(t, 1, s.count("builds WHERE delivery_id = 'inflight-1'"))
}

// socketDrained tells whether the server's end of conn (both on loopback) has
// read every byte sent so far: its receive queue in /proc/net/tcp is empty.
func socketDrained(t *testing.T, conn net.Conn) bool {
	t.Helper()
	server, client := conn.RemoteAddr().(*net.TCPAddr), conn.LocalAddr().(*net.TCPAddr)
	data, err := os.ReadFile("/proc/net/tcp")
	require.NoError(t, err)
	local, remote := fmt.Sprintf(":%04X", server.Port), fmt.Sprintf(":%04X", client.Port)
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasSuffix(f[1], local) && strings.HasSuffix(f[2], remote) {
			_, rx, _ := strings.Cut(f[4], ":")
			n, err := strconv.ParseUint(rx, 16, 64)
			return err == nil && n == 0
		}
	}
	return false
}
