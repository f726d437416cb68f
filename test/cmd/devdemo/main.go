// Command devdemo prepares the demo that `make run` offers: it pushes the
// two-platform busybox base image to the local registry, makes (once) a bare
// git repository whose Dockerfile builds FROM it (and whose .slipway.yml has
// a test), installs a post-receive hook in it that tells slipway about every
// push, as GitHub would, and prints where everything is and how to use the
// CLI and the dashboard. scripts/run.sh serves the repository with git daemon,
// pushes enabled.
//
// The repository lives in STATE/git/demo.git and survives restarts, so every
// commit built before can be built again. `devdemo -hook` is the hook itself:
// it reads git's "OLD NEW REF" lines on stdin and posts one signed GitHub push
// payload per ref to slipway, with the settings devdemo wrote to
// STATE/demo-hook.json.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/slipway-ci/slipway/test/testenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "devdemo:", err)
		os.Exit(1)
	}
}

// hookConfig is STATE/demo-hook.json: what the post-receive hook needs to
// reach slipway. Rewritten on every start (the ports may change).
type hookConfig struct {
	WebhookURL string `json:"webhook_url"`
	Secret     string `json:"secret"`
	CloneURL   string `json:"clone_url"`
	Owner      string `json:"owner"`
	Name       string `json:"name"`
}

// The made-up person the demo's commits and pushes come from.
const (
	demoUser  = "demo-developer"
	demoName  = "Demo Developer"
	demoEmail = "demo-developer@example.invalid"
)

// demoAuthor signs the demo repository's commits.
var demoAuthor = []string{"GIT_AUTHOR_NAME=" + demoName, "GIT_AUTHOR_EMAIL=" + demoEmail,
	"GIT_COMMITTER_NAME=" + demoName, "GIT_COMMITTER_EMAIL=" + demoEmail}

// git runs git in dir as testenv.Git does, committing as the demo author.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	return testenv.Git(ctx, dir, demoAuthor, args...)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devdemo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	state := fs.String("state", ".slipway-dev", "state folder of scripts/services.sh; the demo repository goes to STATE/git/demo.git")
	baseRegistry := fs.String("base-registry", "127.0.0.1:5000", "registry (host:port, plain HTTP) that gets library/busybox:latest")
	gitURL := fs.String("git-url", "git://127.0.0.1:9418/demo.git", "URL under which git daemon serves STATE/git/demo.git")
	owner := fs.String("owner", "demo", "repository owner in the payload")
	repoName := fs.String("name", "hello", "repository name in the payload")
	hook := fs.Bool("hook", false, "run as the repository's post-receive hook: read OLD NEW REF lines on stdin, notify slipway")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	stateDir, err := filepath.Abs(*state)
	if err != nil {
		return err
	}
	if *hook {
		return runHook(ctx, stateDir, stdin, stderr)
	}

	base, err := testenv.PushBaseImage(ctx, *baseRegistry)
	if err != nil {
		return err
	}
	repoDir := filepath.Join(stateDir, "git", "demo.git")
	commit, err := ensureRepo(ctx, repoDir, base)
	if err != nil {
		return err
	}

	env := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	addr := env("SLIPWAY_ADDR", "127.0.0.1:8080")
	localURL, err := dialURL(addr)
	if err != nil {
		return err
	}
	cfg := hookConfig{
		WebhookURL: localURL + "/webhooks/github",
		Secret:     env("SLIPWAY_GITHUB_WEBHOOK_SECRET", "devsecret"),
		CloneURL:   *gitURL,
		Owner:      *owner,
		Name:       *repoName,
	}
	if err := installHook(repoDir, stateDir, cfg); err != nil {
		return err
	}
	token := env("SLIPWAY_ADMIN_TOKEN", "devtoken")
	registry := env("SLIPWAY_REGISTRY", *baseRegistry)

	// The payload of a push of main as it is now, and a script sending it.
	msg, err := git(ctx, repoDir, "log", "-1", "--format=%B", commit)
	if err != nil {
		return err
	}
	payload, err := pushPayload(cfg, "refs/heads/main", zeroSHA, commit, msg)
	if err != nil {
		return err
	}
	payloadPath := filepath.Join(stateDir, "demo-push.json")
	if err := os.WriteFile(payloadPath, payload, 0o644); err != nil {
		return fmt.Errorf("writing the demo payload: %w", err)
	}
	send := sendCommand(cfg.WebhookURL, payloadPath, cfg.Secret)
	// The script sends main as it is when it runs (through the hook, as a
	// push would), not the commit main was at when make run started:
	// demo-push.json would roll the main tag back after a push.
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	sendScript := filepath.Join(stateDir, "send-push.sh")
	script := "#!/usr/bin/env bash\n# Sends a signed push of the demo's main, as it is now, to slipway. Made by make run.\n" +
		"set -euo pipefail\n" +
		"main=$(git -C " + shellQuote(repoDir) + " rev-parse refs/heads/main)\n" +
		"echo \"" + zeroSHA + " $main refs/heads/main\" | GIT_DIR=" + shellQuote(repoDir) + " " + shellQuote(exe) + " -hook -state " + shellQuote(stateDir) + "\n"
	if err := os.WriteFile(sendScript, []byte(script), 0o755); err != nil {
		return fmt.Errorf("writing %s: %w", sendScript, err)
	}

	bin := "bin/slipway"
	if exe, err := os.Executable(); err == nil {
		bin = filepath.Join(filepath.Dir(exe), "slipway")
	}
	logs := filepath.Join(stateDir, "logs")
	fmt.Fprintf(stdout, `
slipway dev
  dashboard    %[1]s/   (sign in at %[1]s/signin with the admin token %[2]s)
  API          %[1]s/api/v1/builds   (Authorization: Bearer %[2]s)
  health       %[1]s/healthz  %[1]s/readyz  %[1]s/metrics
  public URL   %[3]s
  database     %[4]s
  buildkitd    %[5]s
  registry     http://%[6]s  (images: %[6]s/<owner>/<name>)
  base image   %[7]s  (linux/amd64, linux/arm64)
  git          %[8]s  (bare, pushes allowed; main is at %[9]s)
  secrets key  %[15]s/secret-key (SLIPWAY_SECRET_KEY, made for this folder only)
  logs         %[10]s/*.log
  state        %[11]s  (kept across restarts; make clean deletes it)

Build the demo: push to it (the repository's hook tells slipway, as GitHub would)

  git clone %[8]s /tmp/demo && cd /tmp/demo
  echo 'RUN echo hello > /hello' >> Dockerfile && git commit -qam 'Say hello' && git push

or send a push of main as it is (%[12]s; each run is a new delivery).

Use the CLI from another terminal:

  export SLIPWAY_SERVER=%[1]s SLIPWAY_TOKEN=%[2]s
  %[16]s builds list
  %[16]s logs --follow 1
  %[16]s promote 1 v1.0.0

Make more tokens (the CLI's token command talks to the database):

  source %[15]s/env && %[16]s token create --name alice --role developer

Registry tags: curl -sS http://%[6]s/v2/%[14]s/tags/list

`, localURL, token, env("SLIPWAY_PUBLIC_URL", localURL), env("SLIPWAY_DATABASE_URL", "(unset)"),
		env("SLIPWAY_BUILDKIT_ADDR", "(unset)"), registry, base, *gitURL, commit, logs, stateDir,
		sendScript, send, strings.ToLower(*owner+"/"+*repoName), stateDir, bin)
	return nil
}

const zeroSHA = "0000000000000000000000000000000000000000"

// ensureRepo makes the bare demo repository at dir unless it already is one,
// and returns the commit main points at. A non-bare repository left there by
// an older make run is moved aside (to demo.git.old) rather than deleted.
func ensureRepo(ctx context.Context, dir, base string) (string, error) {
	if out, err := git(ctx, dir, "rev-parse", "--is-bare-repository"); err == nil && out == "true" {
		if head, err := git(ctx, dir, "rev-parse", "refs/heads/main"); err == nil {
			return head, nil
		}
	}
	if _, err := os.Stat(dir); err == nil {
		old := dir + ".old"
		_ = os.RemoveAll(old)
		if err := os.Rename(dir, old); err != nil {
			return "", fmt.Errorf("moving the old demo repository aside: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating the demo repository: %w", err)
	}
	for _, a := range [][]string{
		{"init", "-q", "--bare", "-b", "main"},
		// Let slipway fetch any reachable commit by hash, as GitHub does.
		{"config", "uploadpack.allowReachableSHA1InWant", "true"},
	} {
		if _, err := git(ctx, dir, a...); err != nil {
			return "", err
		}
	}
	work, err := os.MkdirTemp("", "devdemo-")
	if err != nil {
		return "", fmt.Errorf("creating the demo repository: %w", err)
	}
	defer os.RemoveAll(work)
	files := map[string]string{
		"Dockerfile": "FROM " + base + "\nRUN uname -m > /arch\n",
		".slipway.yml": `# Run inside the pushed image, once per platform.
tests:
  - name: arch
    run: cat /arch
`,
		"README.md": "A demo repository made by `make run` (test/cmd/devdemo).\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(work, name), []byte(content), 0o644); err != nil {
			return "", fmt.Errorf("writing %s: %w", name, err)
		}
	}
	for _, a := range [][]string{
		{"init", "-q", "-b", "main"},
		{"add", "-A"},
		{"-c", "commit.gpgsign=false", "commit", "-q", "-m", "Initial commit"},
		{"push", "-q", dir, "main"},
	} {
		if _, err := git(ctx, work, a...); err != nil {
			return "", err
		}
	}
	return git(ctx, dir, "rev-parse", "refs/heads/main")
}

// installHook writes cfg to STATE/demo-hook.json (0600: it holds the webhook
// secret) and the repository's hooks/post-receive, which runs this program
// with -hook.
func installHook(repoDir, stateDir string, cfg hookConfig) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("installing the demo hook: %w", err)
	}
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(stateDir, "demo-hook.json"), raw, 0o600); err != nil {
		return fmt.Errorf("writing the demo hook's settings: %w", err)
	}
	script := "#!/bin/sh\n# Tells slipway about the push, as GitHub would. Written by make run (test/cmd/devdemo).\nexec " +
		shellQuote(exe) + " -hook -state " + shellQuote(stateDir) + "\n"
	hookPath := filepath.Join(repoDir, "hooks", "post-receive")
	if err := os.MkdirAll(filepath.Dir(hookPath), 0o755); err != nil {
		return fmt.Errorf("installing the demo hook: %w", err)
	}
	if err := os.WriteFile(hookPath, []byte(script), 0o755); err != nil {
		return fmt.Errorf("installing the demo hook: %w", err)
	}
	return nil
}

// runHook is the post-receive hook: one signed push delivery per updated
// ref. What it prints reaches the pusher as "remote: ..." lines; a failure to
// reach slipway is reported there but never fails the push (it is done).
func runHook(ctx context.Context, stateDir string, stdin io.Reader, stderr io.Writer) error {
	raw, err := os.ReadFile(filepath.Join(stateDir, "demo-hook.json"))
	if err != nil {
		fmt.Fprintf(stderr, "slipway: not notified (%v); is make run running?\n", err)
		return nil
	}
	var cfg hookConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		fmt.Fprintf(stderr, "slipway: not notified: reading demo-hook.json: %v\n", err)
		return nil
	}
	client := &http.Client{Timeout: 15 * time.Second}
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		before, after, ref := f[0], f[1], f[2]
		msg := ""
		if after != zeroSHA {
			// The hook runs in the bare repository (GIT_DIR is set).
			msg, _ = git(ctx, ".", "log", "-1", "--format=%B", after)
		}
		body, err := pushPayload(cfg, ref, before, after, msg)
		if err != nil {
			fmt.Fprintf(stderr, "slipway: %s not notified: %v\n", ref, err)
			continue
		}
		fmt.Fprintf(stderr, "slipway: %s\n", deliver(ctx, client, cfg, body))
	}
	return nil
}

// deliver posts body to slipway as a GitHub push and describes the answer.
func deliver(ctx context.Context, client *http.Client, cfg hookConfig, body []byte) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return "not notified: " + err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("devdemo-%d", time.Now().UnixNano()))
	req.Header.Set("X-Hub-Signature-256", testenv.Sign(cfg.Secret, body))
	resp, err := client.Do(req)
	if err != nil {
		return "not notified: " + err.Error()
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return fmt.Sprintf("%s answered %s: %s", cfg.WebhookURL, resp.Status, bytes.TrimSpace(answer))
}

// pushPayload returns a GitHub push event (the fields of GitHub's documented
// push payload slipway reads, and the usual ones around them) for ref moving
// from before to after. A zero after is a deletion.
func pushPayload(cfg hookConfig, ref, before, after, message string) ([]byte, error) {
	deleted := after == zeroSHA
	full := cfg.Owner + "/" + cfg.Name
	p := map[string]any{
		"ref":         ref,
		"before":      before,
		"after":       after,
		"created":     before == zeroSHA,
		"deleted":     deleted,
		"forced":      false,
		"compare":     cfg.CloneURL,
		"pusher":      map[string]any{"name": demoUser, "email": demoEmail},
		"sender":      map[string]any{"login": demoUser, "id": 1, "type": "User"},
		"commits":     []any{},
		"head_commit": nil,
		"repository": map[string]any{
			"id":             1,
			"name":           cfg.Name,
			"full_name":      full,
			"private":        false,
			"owner":          map[string]any{"login": cfg.Owner, "name": cfg.Owner, "id": 1, "type": "User"},
			"html_url":       cfg.CloneURL,
			"url":            cfg.CloneURL,
			"clone_url":      cfg.CloneURL,
			"git_url":        cfg.CloneURL,
			"ssh_url":        cfg.CloneURL,
			"default_branch": "main",
		},
	}
	if !deleted {
		commit := map[string]any{
			"id":        after,
			"tree_id":   "",
			"distinct":  true,
			"message":   strings.TrimSpace(message),
			"timestamp": time.Now().UTC().Format(time.RFC3339),
			"url":       cfg.CloneURL,
			"author":    map[string]any{"name": demoName, "email": demoEmail, "username": demoUser},
			"committer": map[string]any{"name": demoName, "email": demoEmail, "username": demoUser},
			"added":     []any{},
			"removed":   []any{},
			"modified":  []any{},
		}
		p["head_commit"] = commit
		p["commits"] = []any{commit}
	}
	return json.Marshal(p)
}

// dialURL turns a listen address into a URL a client on this machine can
// reach: ":8080" and "0.0.0.0:8080" become http://127.0.0.1:8080.
func dialURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("reading SLIPWAY_ADDR %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	if port == "" {
		return "", errors.New("reading SLIPWAY_ADDR: no port")
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// sendCommand returns a bash command that posts payloadPath to url as a
// GitHub push, signed with openssl as GitHub signs it.
func sendCommand(url, payloadPath, secret string) string {
	return fmt.Sprintf(`curl -sS -X POST %s \
  -H 'Content-Type: application/json' \
  -H 'X-GitHub-Event: push' \
  -H "X-GitHub-Delivery: $(cat /proc/sys/kernel/random/uuid)" \
  -H "X-Hub-Signature-256: sha256=$(openssl dgst -sha256 -hmac %s -r < %s | cut -d' ' -f1)" \
  --data-binary @%s`, shellQuote(url), shellQuote(secret), shellQuote(payloadPath), shellQuote(payloadPath))
}

// shellQuote quotes s for bash, in single quotes unless it is plainly safe.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@%+,", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
