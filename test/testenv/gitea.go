package testenv

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-ci/slipway/test/devstack"
)

// Gitea is a real Gitea (bin/gitea, built by `make deps` from
// code.gitea.io/gitea) on a loopback port, SQLite-backed, with one admin
// user. It accepts webhooks to loopback targets, so it can call a slipway the
// test runs.
type Gitea struct {
	// URL is the web and git root, "http://127.0.0.1:PORT/".
	URL string
	// User and Password sign in the admin; Token is an access token of the
	// admin with every scope.
	User, Password, Token string

	t   testing.TB
	log *SyncBuffer
}

// StartGitea starts Gitea in a temporary folder and stops it when the test
// ends. It fails the test, naming `make deps`, when bin/gitea is missing.
func StartGitea(t testing.TB) *Gitea {
	t.Helper()
	binDir, err := devstack.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "gitea")
	stamp, err := os.ReadFile(filepath.Join(binDir, ".gitea-version"))
	if _, statErr := os.Stat(bin); statErr != nil || err != nil {
		t.Fatalf("bin/gitea is missing: run `make deps` (it builds Gitea from its Go module)")
	}
	version := strings.Fields(string(stamp))[0]
	// Without the bindata tag Gitea reads its templates and locales from
	// its source folder in the module cache.
	out, err := exec.Command("go", "mod", "download", "-json", "code.gitea.io/gitea@"+version).Output()
	if err != nil {
		t.Fatalf("finding the source of code.gitea.io/gitea@%s: %v", version, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("finding the source of code.gitea.io/gitea@%s: %s", version, out)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	g := &Gitea{URL: fmt.Sprintf("http://127.0.0.1:%d/", port), User: "slipway-admin", Password: "Gitea-test-pw-1", t: t, log: &SyncBuffer{}}
	conf := filepath.Join(dir, "app.ini")
	ini := fmt.Sprintf(`APP_NAME = slipway-test
RUN_MODE = prod
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true
WORK_PATH = %[1]s
[server]
HTTP_ADDR = 127.0.0.1
HTTP_PORT = %[2]d
ROOT_URL = %[3]s
STATIC_ROOT_PATH = %[4]s
DISABLE_SSH = true
OFFLINE_MODE = true
[database]
DB_TYPE = sqlite3
PATH = %[1]s/gitea.db
[security]
INSTALL_LOCK = true
SECRET_KEY = slipway-test-secret-key
ALLOWED_HOST_LIST = loopback
[webhook]
DELIVER_TIMEOUT = 10
[packages]
ENABLED = true
[repository]
ROOT = %[1]s/repos
[log]
MODE = console
LEVEL = warn
[cron.update_checker]
ENABLED = false
`, dir, port, g.URL, mod.Dir)
	if err := os.WriteFile(conf, []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "web", "--config", conf)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "GITEA_WORK_DIR="+dir, "HOME="+dir)
	cmd.Stdout, cmd.Stderr = g.log, g.log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting gitea: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("gitea log:\n%s", g.log.String())
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(g.URL + "api/v1/version")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gitea did not answer on %s within 90 s:\n%s", g.URL, g.log.String())
		}
		time.Sleep(200 * time.Millisecond) // bounded wait for another process
	}
	admin := exec.Command(bin, "admin", "user", "create", "--config", conf, "--username", g.User, "--password", g.Password,
		"--email", "admin@slipway.test", "--admin", "--must-change-password=false")
	admin.Dir, admin.Env = dir, cmd.Env
	if out, err := admin.CombinedOutput(); err != nil {
		t.Fatalf("creating the gitea admin: %v: %s", err, out)
	}
	var tok struct {
		SHA1 string `json:"sha1"`
	}
	g.do(http.MethodPost, "api/v1/users/"+g.User+"/tokens", map[string]any{"name": "slipway-test", "scopes": []string{"all"}}, &tok, true)
	g.Token = tok.SHA1
	return g
}

// do calls Gitea's API as the admin (basic auth when basic, else the token)
// and decodes the answer into out; a non-2xx answer fails the test.
func (g *Gitea) do(method, path string, body, out any, basic bool) {
	g.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			g.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, g.URL+path, rd)
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if basic {
		req.SetBasicAuth(g.User, g.Password)
	} else {
		req.Header.Set("Authorization", "token "+g.Token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatalf("gitea %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		g.t.Fatalf("gitea %s %s: %d %s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			g.t.Fatalf("gitea %s %s: decoding %s: %v", method, path, data, err)
		}
	}
}

// API calls Gitea's REST API (path under /api/v1/) with the admin's token.
func (g *Gitea) API(method, path string, body, out any) {
	g.t.Helper()
	g.do(method, "api/v1/"+strings.TrimPrefix(path, "/"), body, out, false)
}

// CreateRepo creates the admin's repository name (private or not) and
// returns its HTTP clone URL.
func (g *Gitea) CreateRepo(name string, private bool) string {
	g.t.Helper()
	var repo struct {
		CloneURL string `json:"clone_url"`
	}
	g.API(http.MethodPost, "user/repos", map[string]any{"name": name, "private": private, "default_branch": "main"}, &repo)
	return repo.CloneURL
}

// AddWebhook makes Gitea send push events of the admin's repository name to
// target, signed with secret (X-Gitea-Signature).
func (g *Gitea) AddWebhook(name, target, secret string) {
	g.t.Helper()
	g.API(http.MethodPost, "repos/"+g.User+"/"+name+"/hooks", map[string]any{
		"type": "gitea", "active": true, "events": []string{"push"},
		"config": map[string]string{"url": target, "content_type": "json", "secret": secret},
	}, nil)
}

// Push commits files in a new working tree and pushes it to branch of the
// admin's repository name over HTTP, authenticated with the admin's password
// in a header (not the token, which the tests look for elsewhere). It returns
// the commit.
func (g *Gitea) Push(name, branch string, files map[string]string) string {
	g.t.Helper()
	ctx := context.Background()
	work := g.t.TempDir()
	commit, err := CreateGitRepo(ctx, filepath.Join(work, "repo.git"), files)
	if err != nil {
		g.t.Fatal(err)
	}
	push := exec.Command("git", "-C", filepath.Join(work, "repo.git"), "push", "--quiet", g.URL+g.User+"/"+name+".git", "HEAD:refs/heads/"+branch)
	push.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_COUNT=1",
		"GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: Basic "+basicAuth(g.User, g.Password))
	if out, err := push.CombinedOutput(); err != nil {
		g.t.Fatalf("git push to gitea: %v: %s", err, out)
	}
	return commit
}

// Log is what Gitea wrote so far.
func (g *Gitea) Log() string { return g.log.String() }

func basicAuth(user, password string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
}
