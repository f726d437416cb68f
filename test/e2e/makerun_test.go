package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/test/testenv"
)

// devRun is one `scripts/run.sh` (what `make run` runs) in its own process
// group, its output in a file.
type devRun struct {
	cmd     *exec.Cmd
	outPath string
	done    chan struct{}
	err     error
}

// output is what run.sh printed so far.
func (r *devRun) output() string {
	b, _ := os.ReadFile(r.outPath)
	return string(b)
}

func startDevRun(t *testing.T, root string, env []string) *devRun {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "run-*.log")
	require.NoError(t, err)
	defer out.Close() // the child has its own copy
	r := &devRun{outPath: out.Name(), done: make(chan struct{})}
	r.cmd = exec.Command("bash", filepath.Join(root, "scripts", "run.sh"))
	r.cmd.Dir = root
	r.cmd.Env = env
	r.cmd.Stdout = out
	r.cmd.Stderr = out
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, r.cmd.Start())
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop sends SIGTERM as `kill` of make would, and waits for run.sh's clean-up.
func (r *devRun) stop(t *testing.T) {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(90 * time.Second):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
		t.Errorf("run.sh did not stop in 90s; output:\n%s", r.output())
	}
}

func (r *devRun) waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-r.done:
			t.Fatalf("run.sh ended early (%v):\n%s", r.err, r.output())
		default:
		}
		if resp, err := http.Get(url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("slipway dev not ready in time:\n%s", r.output())
}

func loopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestMakeRun is a newcomer's `make run`, twice: the second start is refused
// and leaves the first stack running; a git push to the demo repository
// builds; after a restart the same commit builds again, and repository
// secrets work with the development key.
func TestMakeRun(t *testing.T) {
	if testing.Short() {
		t.Skip("make run: skipped with -short")
	}
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	// run.sh runs bin/slipway, as make run builds it first.
	build := exec.Command("go", "build", "-o", filepath.Join(root, "bin", "slipway"), "./cmd/slipway")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	state := t.TempDir()
	// Fixed ports, as make run's defaults: the demo's Dockerfile names the
	// registry's, so a restart must keep it.
	gitPort, httpPort, pgPort, regPort := loopbackPort(t), loopbackPort(t), loopbackPort(t), loopbackPort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLIPWAY_") && !strings.HasPrefix(kv, "TEST_") && !strings.HasPrefix(kv, "BUILDKIT_") {
			env = append(env, kv)
		}
	}
	env = append(env, "SLIPWAY_DEV_STATE="+state, "SLIPWAY_PG_PORT="+strconv.Itoa(pgPort), "SLIPWAY_REGISTRY_PORT="+strconv.Itoa(regPort),
		"SLIPWAY_GIT_PORT="+strconv.Itoa(gitPort), fmt.Sprintf("SLIPWAY_ADDR=127.0.0.1:%d", httpPort))
	t.Cleanup(func() {
		_ = exec.Command("bash", filepath.Join(root, "scripts", "services.sh"), "purge", state).Run()
	})

	first := startDevRun(t, root, env)
	first.waitReady(t, url)
	banner := first.output()
	require.Contains(t, banner, "SLIPWAY_SERVER="+url)
	require.Contains(t, banner, "SLIPWAY_TOKEN=")
	require.Contains(t, banner, "token create")
	require.Contains(t, banner, url+"/signin")
	key, err := os.ReadFile(filepath.Join(state, "secret-key"))
	require.NoError(t, err)
	require.Regexp(t, "^[0-9a-f]{64}$", string(key))

	// The second make run: refused, plainly, and the first keeps running.
	second := exec.Command("bash", filepath.Join(root, "scripts", "run.sh"))
	second.Dir = root
	second.Env = env
	secondOut, err := second.CombinedOutput()
	require.Error(t, err, "a second make run on the same state folder must fail:\n%s", secondOut)
	require.Contains(t, string(secondOut), "make run already runs under "+state)
	require.Contains(t, string(secondOut), "left alone")
	require.NotContains(t, string(secondOut), "stopped")
	resp, err := http.Get(url + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the first stack must be unharmed")

	api := func(method, path string, body any) (int, map[string]any) {
		t.Helper()
		var rd *bytes.Reader
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
		req, err := http.NewRequest(method, url+path, rd)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer devtoken")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var v map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	waitSucceeded := func(id int) map[string]any {
		t.Helper()
		deadline := time.Now().Add(5 * time.Minute)
		for time.Now().Before(deadline) {
			code, b := api("GET", fmt.Sprintf("/api/v1/builds/%d", id), nil)
			require.Equal(t, http.StatusOK, code)
			switch b["state"] {
			case "succeeded":
				return b
			case "failed", "canceled":
				t.Fatalf("build %d ended %v: %v", id, b["state"], b)
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Fatalf("build %d did not finish", id)
		return nil
	}

	// A push over git to the demo repository builds.
	ctx := context.Background()
	clone := filepath.Join(t.TempDir(), "demo")
	gitURL := fmt.Sprintf("git://127.0.0.1:%d/demo.git", gitPort)
	runGit := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_AUTHOR_NAME=Test Person", "GIT_AUTHOR_EMAIL=t@example.invalid",
			"GIT_COMMITTER_NAME=Test Person", "GIT_COMMITTER_EMAIL=t@example.invalid")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "git %v: %s", args, out)
		return string(out)
	}
	runGit(filepath.Dir(clone), "clone", "-q", gitURL, clone)
	require.NoError(t, os.WriteFile(filepath.Join(clone, "hello.txt"), []byte("hello\n"), 0o644))
	runGit(clone, "add", "hello.txt")
	runGit(clone, "commit", "-qm", "Say hello")
	pushOut := runGit(clone, "push", "origin", "main")
	m := regexp.MustCompile(`"build_id":(\d+)`).FindStringSubmatch(pushOut)
	require.NotNil(t, m, "the push's hook must report the queued build:\n%s", pushOut)
	id, _ := strconv.Atoi(m[1])
	b := waitSucceeded(id)
	commit := strings.TrimSpace(runGit(clone, "rev-parse", "HEAD"))
	require.Equal(t, commit, b["commit"])
	require.Equal(t, "Say hello", b["message"])

	// send-push.sh sends main as it is now, after that push, not the commit
	// main was at when make run started.
	send := exec.CommandContext(ctx, filepath.Join(state, "send-push.sh"))
	sendOut, err := send.CombinedOutput()
	require.NoError(t, err, "%s", sendOut)
	m = regexp.MustCompile(`"build_id":(\d+)`).FindStringSubmatch(string(sendOut))
	require.NotNil(t, m, "send-push.sh must report the queued build:\n%s", sendOut)
	sentID, _ := strconv.Atoi(m[1])
	sb := waitSucceeded(sentID)
	require.Equal(t, commit, sb["commit"], "send-push.sh sends main as it is")
	require.Equal(t, "Say hello", sb["message"])

	// The development secret key makes repository secrets work.
	code, body := api("PUT", "/api/v1/repos/demo/hello/secrets/NPM_TOKEN", map[string]string{"value": "s3cr3t"})
	require.Less(t, code, 300, "setting a repository secret: %v", body)

	// Restart: the earlier commit is still there to build again.
	first.stop(t)
	require.Contains(t, first.output(), "stopping the services under "+state)
	third := startDevRun(t, root, env)
	third.waitReady(t, url)
	require.Contains(t, third.output(), "main is at "+commit)
	code, body = api("POST", fmt.Sprintf("/api/v1/builds/%d/retry", id), nil)
	require.Less(t, code, 300, "retrying build %d: %v", id, body)
	retryID := int(body["build_id"].(float64))
	rb := waitSucceeded(retryID)
	require.Equal(t, commit, rb["commit"])
	// Reproducible: the rebuild made the same image on every platform (the
	// demo keeps the default provenance, which records each build's times).
	require.Equal(t, b["platforms"], rb["platforms"], "the same image per platform")
	req, err := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/builds/%d/logs", url, retryID), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer devtoken")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	logText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(logText), fmt.Sprintf("The rebuild produced the same image as build %d", sentID), "compared with the newest earlier build of the commit")
}
