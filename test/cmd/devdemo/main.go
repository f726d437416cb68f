// Command devdemo prepares the demo that `make run` offers: it pushes the
// two-platform busybox base image to the local registry, makes a git
// repository whose Dockerfile builds FROM it (and whose .slipway.yml has a
// test), writes a push payload made from a real GitHub fixture for that
// commit, and prints where everything is and a curl command that sends the
// push, signed. scripts/run.sh serves the repository with git daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/slipway-ci/slipway/test/testenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "devdemo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devdemo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	state := fs.String("state", ".slipway-dev", "state folder of scripts/services.sh; the demo repository goes to STATE/git/demo.git")
	baseRegistry := fs.String("base-registry", "127.0.0.1:5000", "registry (host:port, plain HTTP) that gets library/busybox:latest")
	gitURL := fs.String("git-url", "git://127.0.0.1:9418/demo.git", "URL under which git daemon serves STATE/git/demo.git")
	fixture := fs.String("fixture", "push-branch.json", "GitHub push fixture the payload is made from (name in the fixtures' github folder, or a path)")
	owner := fs.String("owner", "demo", "repository owner in the payload")
	repoName := fs.String("name", "hello", "repository name in the payload")
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

	base, err := testenv.PushBaseImage(ctx, *baseRegistry)
	if err != nil {
		return err
	}

	// A new repository each time: its commit is what the payload names.
	repoDir := filepath.Join(stateDir, "git", "demo.git")
	if err := os.RemoveAll(repoDir); err != nil {
		return fmt.Errorf("removing the previous demo repository: %w", err)
	}
	commit, err := testenv.CreateGitRepo(ctx, repoDir, map[string]string{
		"Dockerfile": "FROM " + base + "\nRUN uname -m > /arch\n",
		".slipway.yml": `# Run inside the pushed image, once per platform.
tests:
  - name: arch
    run: cat /arch
`,
		"README.md": "A demo repository made by `make run` (test/cmd/devdemo).\n",
	})
	if err != nil {
		return err
	}

	payload, err := testenv.GitHubPush(*fixture, testenv.PushParams{
		Owner:    *owner,
		Name:     *repoName,
		CloneURL: *gitURL,
		Ref:      "refs/heads/main",
		After:    commit,
		Message:  "Initial commit",
	})
	if err != nil {
		return err
	}
	payloadPath := filepath.Join(stateDir, "demo-push.json")
	if err := os.WriteFile(payloadPath, payload, 0o644); err != nil {
		return fmt.Errorf("writing the demo payload: %w", err)
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
	secret := env("SLIPWAY_GITHUB_WEBHOOK_SECRET", "devsecret")
	token := env("SLIPWAY_ADMIN_TOKEN", "devtoken")
	registry := env("SLIPWAY_REGISTRY", *baseRegistry)

	send := sendCommand(localURL+"/webhooks/github", payloadPath, secret)
	sendScript := filepath.Join(stateDir, "send-push.sh")
	if err := os.WriteFile(sendScript, []byte("#!/usr/bin/env bash\n# Sends the demo push to slipway, signed. Made by make run.\nset -euo pipefail\n"+send+"\n"), 0o755); err != nil {
		return fmt.Errorf("writing %s: %w", sendScript, err)
	}

	logs := filepath.Join(stateDir, "logs")
	fmt.Fprintf(stdout, `
slipway dev
  dashboard    %[1]s/
  API          %[1]s/api/v1/builds   (Authorization: Bearer %[2]s)
  health       %[1]s/healthz  %[1]s/readyz  %[1]s/metrics
  public URL   %[3]s
  database     %[4]s
  buildkitd    %[5]s
  registry     http://%[6]s  (images: %[6]s/<owner>/<name>)
  base image   %[7]s  (linux/amd64, linux/arm64)
  git daemon   %[8]s  (commit %[9]s)
  logs         %[10]s/*.log
  state        %[11]s

Send the demo push (or run %[12]s); each run is a new delivery:

%[13]s

Then follow it:
  curl -sS -H 'Authorization: Bearer %[2]s' %[1]s/api/v1/builds
  curl -sS http://%[6]s/v2/%[14]s/tags/list

`, localURL, token, env("SLIPWAY_PUBLIC_URL", localURL), env("SLIPWAY_DATABASE_URL", "(unset)"),
		env("SLIPWAY_BUILDKIT_ADDR", "(unset)"), registry, base, *gitURL, commit, logs, stateDir,
		sendScript, send, strings.ToLower(*owner+"/"+*repoName))
	return nil
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
