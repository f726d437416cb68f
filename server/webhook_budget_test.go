package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// gatedBody is a request body of n bytes that sends all but its last byte at
// once, then waits for gate to close before the last one.
type gatedBody struct {
	n    int
	sent int
	gate <-chan struct{}
}

func (g *gatedBody) Read(p []byte) (int, error) {
	switch {
	case g.sent == g.n:
		return 0, io.EOF
	case g.sent == g.n-1:
		<-g.gate
		p[0] = 'x'
		g.sent++
		return 1, nil
	}
	k := min(len(p), g.n-1-g.sent)
	for i := range k {
		p[i] = 'x'
	}
	g.sent += k
	return k, nil
}

func TestWebhookMemoryBudget(t *testing.T) {
	t.Parallel()
	const maxBody = 1 << 20

	t.Run("OverBudgetAnswers503AndFittingDeliveryIsAccepted", func(t *testing.T) {
		t.Parallel()
		waiting := make(chan struct{}, 16)
		b := setup(t, &setupOpts{config: func(c *Config) {
			c.MaxWebhookBytes = maxBody
			c.WebhookMemory = 2 * maxBody // two of the attacker's bodies at once
			c.webhookBudgetWait = time.Second
			c.webhookOnWait = func() {
				select {
				case waiting <- struct{}{}:
				default:
				}
			}
		}})
		gate := make(chan struct{})
		released := false
		release := func() {
			if !released {
				released = true
				close(gate)
			}
		}
		t.Cleanup(release)

		// The attack: unsigned bodies just under the cap, sent at once and held
		// open (their last byte waits for the gate).
		const attackers = 6
		type answer struct {
			status     int
			retryAfter string
			body       string
		}
		answers := make(chan answer, attackers)
		client := &http.Client{Transport: &http.Transport{}}
		t.Cleanup(client.CloseIdleConnections)
		for range attackers {
			go func() {
				req, err := http.NewRequest(http.MethodPost, b.srv.URL+"/webhooks/github", &gatedBody{n: maxBody, gate: gate})
				if err != nil {
					answers <- answer{body: err.Error()}
					return
				}
				req.ContentLength = maxBody
				req.Header.Set("X-GitHub-Event", "push")
				req.Header.Set("X-GitHub-Delivery", "attack")
				req.Header.Set("X-Hub-Signature-256", "sha256=00")
				resp, err := client.Do(req)
				if err != nil {
					answers <- answer{body: err.Error()}
					return
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				answers <- answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: string(raw)}
			}()
		}
		// Two hold the whole budget and cannot finish; the other four wait
		// a second for room and are turned away.
		for range attackers - 2 {
			select {
			case a := <-answers:
				require.Equal(t, http.StatusServiceUnavailable, a.status, a.body)
				require.Equal(t, "5", a.retryAfter)
				require.Contains(t, a.body, "send this one again in a few seconds")
			case <-time.After(10 * time.Second):
				t.Fatal("no 503 for a delivery over the budget")
			}
		}
		select {
		case a := <-answers:
			t.Fatalf("a delivery beyond the budget was read: %d %s", a.status, a.body)
		default:
		}

		// A real delivery arriving now waits for room, and is accepted once
		// the held bodies give theirs back.
		for len(waiting) > 0 {
			<-waiting
		}
		b2Done := make(chan struct{})
		var (
			status int
			raw    any
		)
		go func() {
			defer close(b2Done)
			resp, out := b.post(t, delivery{event: "push", id: "d-real", body: readFixture(t, "push-branch.json")})
			status, raw = resp.StatusCode, out["_raw"]
		}()
		select {
		case <-waiting:
		case <-time.After(10 * time.Second):
			t.Fatal("the real delivery did not wait for room")
		}
		release()
		for range 2 {
			a := <-answers
			require.Equal(t, http.StatusUnauthorized, a.status, "the held bodies are read, then refused for their signature: %s", a.body)
		}
		<-b2Done
		require.Equal(t, http.StatusAccepted, status, raw)
		require.Equal(t, 1, b.count(t, "builds"))
	})
}

func TestWebhookSlowBody(t *testing.T) {
	t.Parallel()
	b := setup(t, &setupOpts{config: func(c *Config) { c.webhookReadTimeout = time.Second }})
	conn, err := net.Dial("tcp", b.srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	// The attack: a body announced at 1000 bytes, sent one byte at a time.
	_, err = fmt.Fprintf(conn, "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"X-GitHub-Event: push\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 1000\r\n\r\n{")
	require.NoError(t, err)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	start := time.Now()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err, "the server answers and does not wait for the whole body")
	defer resp.Body.Close()
	elapsed := time.Since(start)
	raw, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(raw))
	require.Contains(t, string(raw), "did not arrive within 1s")
	require.Less(t, elapsed, 3*time.Second, "cut off after the read timeout")
	require.GreaterOrEqual(t, elapsed, 900*time.Millisecond)
	require.True(t, resp.Close || strings.EqualFold(resp.Header.Get("Connection"), "close"), "the connection is closed after a cut-off body")
	b.requireNoRows(t)

	// The next request on a fresh connection is not affected.
	resp2, out := b.post(t, delivery{event: "push", id: "d-after", body: readFixture(t, "push-branch.json")})
	require.Equal(t, http.StatusAccepted, resp2.StatusCode, out["_raw"])
}
