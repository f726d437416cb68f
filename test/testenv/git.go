package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// gitEnv keeps the machine's and the user's git configuration out of the
// repositories the tests make, so they look the same everywhere.
var gitEnv = []string{"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0"}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	return Git(ctx, dir, nil, args...)
}

// Git runs git with args in dir, without the machine's and the user's git
// configuration, env added to its environment (author names, say), and
// returns its trimmed standard output; the error holds its standard error.
func Git(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), gitEnv...), env...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("running git %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// CreateGitRepo makes a git repository in dir (created when missing) on
// branch main, with one commit holding files (slash-separated path to
// content), and returns the commit's hash. The repository lets clients fetch
// any reachable commit by hash, as GitHub does.
func CreateGitRepo(ctx context.Context, dir string, files map[string]string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating git repository %s: %w", dir, err)
	}
	if _, err := git(ctx, dir, "init", "-q", "-b", "main"); err != nil {
		return "", err
	}
	if _, err := git(ctx, dir, "config", "uploadpack.allowReachableSHA1InWant", "true"); err != nil {
		return "", err
	}
	return CommitFiles(ctx, dir, files, "Initial commit")
}

// CommitFiles writes files (slash-separated path to content) into the git
// repository at dir, commits them on the current branch with message and
// returns the new commit's hash.
func CommitFiles(ctx context.Context, dir string, files map[string]string, message string) (string, error) {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return "", fmt.Errorf("writing %s: %w", p, err)
		}
		if err := os.WriteFile(full, []byte(files[p]), 0o644); err != nil {
			return "", fmt.Errorf("writing %s: %w", p, err)
		}
	}
	if _, err := git(ctx, dir, "add", "-A"); err != nil {
		return "", err
	}
	if _, err := git(ctx, dir,
		"-c", "user.name=slipway test", "-c", "user.email=test@slipway.invalid", "-c", "commit.gpgsign=false",
		"commit", "-q", "--allow-empty", "-m", message); err != nil {
		return "", err
	}
	return git(ctx, dir, "rev-parse", "HEAD")
}

// NewGitRepo makes a git repository at dir (created when missing) with one
// commit holding files, and returns the commit's hash. Name dir
// <base>/<name>.git and ServeGit(tb, base) serves it at the URL + "<name>.git".
func NewGitRepo(tb testing.TB, dir string, files map[string]string) (commit string) {
	tb.Helper()
	commit, err := CreateGitRepo(context.Background(), dir, files)
	if err != nil {
		tb.Fatal(err)
	}
	return commit
}

// GitDaemon is a running `git daemon` serving every repository under one
// folder over git:// on a loopback port.
type GitDaemon struct {
	// URL is the git:// prefix of the served repositories, ending in "/":
	// URL + "repo.git" clones <base>/repo.git.
	URL string

	cmd  *exec.Cmd
	done chan struct{} // closed when the daemon has exited
	err  error         // the daemon's exit error, set before done closes
	log  *SyncBuffer
}

// StartGitDaemon starts git daemon over the repositories under baseDir on a
// free port of 127.0.0.1, and returns once it accepts connections (or ctx
// ends). Close stops it.
func StartGitDaemon(ctx context.Context, baseDir string) (*GitDaemon, error) {
	baseDir, err := filepath.Abs(baseDir)
	if err != nil {
		return nil, fmt.Errorf("starting git daemon: %w", err)
	}
	// The port is free when picked but another process may take it before
	// git daemon binds it; then the daemon exits and another port is tried.
	for attempt := 1; ; attempt++ {
		d, err := startGitDaemon(ctx, baseDir)
		if err == nil || attempt == 3 || ctx.Err() != nil {
			return d, err
		}
	}
}

func startGitDaemon(ctx context.Context, baseDir string) (*GitDaemon, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("starting git daemon: %w", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	d := &GitDaemon{
		URL:  "git://" + addr + "/",
		done: make(chan struct{}),
		log:  &SyncBuffer{},
	}
	d.cmd = exec.Command("git", "daemon", "--export-all", "--base-path="+baseDir, "--reuseaddr",
		"--informative-errors", "--listen=127.0.0.1", "--port="+strconv.Itoa(port), baseDir)
	d.cmd.Env = append(os.Environ(), gitEnv...)
	d.cmd.Stdout = d.log
	d.cmd.Stderr = d.log
	// Its own process group: Close stops the upload-pack children too.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting git daemon: %w", err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()

	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			select {
			case <-d.done: // Someone else answered on the port.
			default:
				return d, nil
			}
		}
		select {
		case <-d.done:
			return nil, fmt.Errorf("starting git daemon on %s: it exited (%v): %s", addr, d.err, d.log.String())
		case <-ctx.Done():
			d.Close()
			return nil, fmt.Errorf("starting git daemon on %s: %w", addr, ctx.Err())
		case <-deadline.C:
			d.Close()
			return nil, fmt.Errorf("starting git daemon on %s: no connection accepted in 10s: %s", addr, d.log.String())
		case <-tick.C:
		}
	}
}

// Close stops the daemon and its children and waits for it to exit.
func (d *GitDaemon) Close() error {
	select {
	case <-d.done:
		return nil
	default:
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
	return nil
}

// Log returns what the daemon has written so far.
func (d *GitDaemon) Log() string { return d.log.String() }

// ServeGit serves the repositories under baseDir with git daemon until the
// test ends, and returns the git:// URL prefix ending in "/". The daemon's
// log is printed when the test fails.
func ServeGit(tb testing.TB, baseDir string) string {
	tb.Helper()
	d, err := StartGitDaemon(context.Background(), baseDir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		d.Close()
		if tb.Failed() {
			if log := d.Log(); log != "" {
				tb.Logf("git daemon log:\n%s", log)
			}
		}
	})
	return d.URL
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("listener has no TCP address")
	}
	return addr.Port, nil
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes (a child
// process's output copier, a logger) and reads.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
