package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
	"github.com/slipway-ci/slipway/worker"
)

const integrationSecret = "e2e-integration-secret"

// integrationServer is the external test system: it checks the signature of
// each call and answers the callback of builds whose repo is in pass.
type integrationServer struct {
	t    *testing.T
	url  string
	pass map[string]bool // repo → call back passed

	mu       sync.Mutex
	calls    []worker.IntegrationRequest
	badSigs  int
	callback chan error
}

func newIntegrationServer(t *testing.T, pass map[string]bool) *integrationServer {
	s := &integrationServer{t: t, pass: pass, callback: make(chan error, 10)}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
	s.url = srv.URL + "/hook"
	return s
}

func (s *integrationServer) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	want := worker.SignIntegration(integrationSecret, body)
	if !hmac.Equal([]byte(want), []byte(r.Header.Get(worker.SignatureHeader))) {
		s.mu.Lock()
		s.badSigs++
		s.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var req worker.IntegrationRequest
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.calls = append(s.calls, req)
	s.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
	if !s.pass[req.Repo] {
		return // never calls back
	}
	// Call back after answering, as a real system would.
	go func() {
		res, _ := json.Marshal(slipway.IntegrationResult{Passed: true, Message: "smoke suite green",
			Tests: []slipway.TestResult{{Name: "smoke", Platform: "linux/arm64", Passed: true, DurationMS: 12}}})
		cb, err := http.NewRequest(http.MethodPost, req.Callback.URL, bytes.NewReader(res))
		if err != nil {
			s.callback <- err
			return
		}
		cb.Header.Set("Authorization", "Bearer "+req.Callback.Token)
		resp, err := http.DefaultClient.Do(cb)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("callback answered %s", resp.Status)
			}
		}
		s.callback <- err
	}()
}

func (s *integrationServer) requests() []worker.IntegrationRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]worker.IntegrationRequest(nil), s.calls...)
}

// post sends a JSON API request with token.
func (s *stack) post(path, token string, body any) (int, map[string]any) {
	s.t.Helper()
	return s.sendJSON(http.MethodPost, path, token, body)
}

// sendJSON sends body as JSON to path under /api/v1 with token and returns
// the status and the decoded answer, its raw text under "_raw".
func (s *stack) sendJSON(method, path, token string, body any) (int, map[string]any) {
	s.t.Helper()
	data, err := json.Marshal(body)
	require.NoError(s.t, err)
	req, err := http.NewRequest(method, s.url+"/api/v1"+path, bytes.NewReader(data))
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	out := map[string]any{"_raw": string(raw)}
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// TestIntegrationGatesRelease: per-platform tests, the external trigger and
// promotion, with real builds on both platforms.
func TestIntegrationGatesRelease(t *testing.T) {
	ctx := context.Background()
	base, err := testenv.PushBaseImage(ctx, requireEnv(t, "TEST_REGISTRY"))
	require.NoError(t, err)

	ext := newIntegrationServer(t, map[string]bool{"acme/extpass": true})
	s := newStack(t, "SLIPWAY_INTEGRATION_SECRET="+integrationSecret)
	s.start("worker", "SLIPWAY_WORKER_CONCURRENCY=3", "SLIPWAY_WORKER_ID=e2e-release")
	r := newRepos(t)

	withHook := func(timeout string) string {
		return fmt.Sprintf("tests:\n  - name: amd64-only\n    run: 'test \"$(uname -m)\" = x86_64'\n    platforms: [linux/amd64]\n"+
			"integration:\n  webhook: %s\n  timeout: %s\n", ext.url, timeout)
	}
	passURL, passCommit := r.add("extpass", map[string]string{"Dockerfile": dockerfile(base, ""), ".slipway.yml": withHook("5m")})
	silentURL, silentCommit := r.add("extsilent", map[string]string{"Dockerfile": dockerfile(base, ""), ".slipway.yml": withHook("4s")})
	armURL, armCommit := r.add("armfail", map[string]string{
		"Dockerfile":   dockerfile(base, ""),
		".slipway.yml": "tests:\n  - name: wants-x86\n    run: 'test \"$(uname -m)\" = x86_64'\n",
	})
	send := func(name, url, commit string) int64 {
		body := push(t, testenv.PushParams{Owner: "acme", Name: name, CloneURL: url, Ref: "refs/heads/main", After: commit})
		code, resp := s.webhook("push", name+"-1", body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", resp)
		return int64(resp["build_id"].(float64))
	}
	passID := send("extpass", passURL, passCommit)
	silentID := send("extsilent", silentURL, silentCommit)
	armID := send("armfail", armURL, armCommit)

	t.Run("ExternalPassSucceeds", func(t *testing.T) {
		b := s.waitDone(passID)
		require.Equal(t, slipway.BuildSucceeded, b.State, "error: %s\nlog:\n%s", b.Error, s.logs(passID))
		require.NoError(t, <-ext.callback)
		var req *worker.IntegrationRequest
		for _, c := range ext.requests() {
			if c.BuildID == passID {
				req = &c
			}
		}
		require.NotNil(t, req, "the webhook was called")
		require.Equal(t, b.IndexDigest, req.IndexDigest)
		require.Equal(t, b.Platforms, req.Platforms)
		require.Equal(t, fmt.Sprintf("%s/api/v1/builds/%d/tests", s.url, passID), req.Callback.URL)
		require.Zero(t, ext.badSigs)

		names := map[string]string{}
		for _, tr := range b.Tests {
			require.True(t, tr.Passed, "%+v", tr)
			names[tr.Name+"@"+tr.Platform] = tr.Name
		}
		require.Contains(t, names, "amd64-only@linux/amd64")
		require.NotContains(t, names, "amd64-only@linux/arm64", "a test limited to amd64 does not run on arm64")
		require.Contains(t, names, "integration:smoke@linux/arm64")

		// The one-time token works once.
		code, out := s.post(fmt.Sprintf("/builds/%d/tests", passID), req.Callback.Token, slipway.IntegrationResult{Passed: false})
		require.Equal(t, http.StatusConflict, code, out["_raw"])
		code, out = s.post(fmt.Sprintf("/builds/%d/tests", passID), "slw_forged", slipway.IntegrationResult{Passed: true})
		require.Equal(t, http.StatusUnauthorized, code, out["_raw"])

		// A succeeded build can be promoted, here by a release manager's
		// script: the tag is the build's digest.
		stdout, stderr, exit := s.cli(nil, "token", "create", "--name", "release-bot", "--role", "release-manager")
		require.Equal(t, 0, exit, stderr)
		rmToken := strings.TrimSpace(stdout)
		stdout, stderr, exit = s.cli([]string{"SLIPWAY_SERVER=" + s.url, "SLIPWAY_TOKEN=" + rmToken}, "promote", fmt.Sprint(passID), "v1.0.0", "stable")
		require.Equal(t, 0, exit, stderr)
		require.Contains(t, stdout, b.Image+":v1.0.0\t"+b.IndexDigest+"\tpromoted (new tag)")
		for _, tag := range []string{"v1.0.0", "stable"} {
			d, err := remote.Head(mustRef(t, b.Image+":"+tag))
			require.NoError(t, err)
			require.Equal(t, b.IndexDigest, d.Digest.String())
		}
	})

	t.Run("ExternalSilenceFailsAtTimeout", func(t *testing.T) {
		b := s.waitDone(silentID)
		require.Equal(t, slipway.BuildFailed, b.State)
		require.Contains(t, b.Error, "no result")
		require.Contains(t, b.Error, "4s")
		require.Contains(t, s.logs(silentID), "Integration tests failed")
		code, out := s.post(fmt.Sprintf("/builds/%d/promote", silentID), adminToken, map[string]any{"tags": []string{"v9"}})
		require.Equal(t, http.StatusConflict, code, out["_raw"])
	})

	t.Run("ArmTestFailureBlocksPromotion", func(t *testing.T) {
		b := s.waitDone(armID)
		require.Equal(t, slipway.BuildFailed, b.State)
		var failed []string
		for _, tr := range b.Tests {
			if !tr.Passed {
				failed = append(failed, tr.Platform)
			}
		}
		require.Equal(t, []string{"linux/arm64"}, failed, "the result names the platform")
		code, out := s.post(fmt.Sprintf("/builds/%d/promote", armID), adminToken, map[string]any{"tags": []string{"v1.0.0"}})
		require.Equal(t, http.StatusConflict, code, out["_raw"])
		msg := out["error"].(map[string]any)["message"].(string)
		_, stderr, exit := s.cli([]string{"SLIPWAY_SERVER=" + s.url, "SLIPWAY_TOKEN=" + adminToken}, "promote", fmt.Sprint(armID), "v1.0.0")
		require.Equal(t, 4, exit, "exit code 4: refused")
		require.Contains(t, stderr, "linux/arm64")
		require.Contains(t, msg, "linux/arm64")
		require.True(t, strings.Contains(msg, "succeeded"), msg)

		var rows int
		require.NoError(t, s.db.Pool().QueryRow(ctx, `SELECT count(*) FROM promotions WHERE build_id = $1 AND outcome = 'refused'`, armID).Scan(&rows))
		require.Equal(t, 2, rows, "both refusals are audited")
	})
}

// cli runs the slipway binary with the stack's environment plus env and
// returns its output and exit code.
func (s *stack) cli(env []string, args ...string) (stdout, stderr string, code int) {
	s.t.Helper()
	cmd := exec.Command(s.bin, args...)
	cmd.Env = append(append([]string{}, s.env...), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		s.t.Fatalf("running slipway %v: %v", args, err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}
