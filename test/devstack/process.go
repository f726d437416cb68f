package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ProcOptions says how a service process runs.
type ProcOptions struct {
	// Log receives the process's stdout and stderr. An *os.File is handed to
	// the process itself, so the output outlives this program (Detach).
	Log io.Writer
	// Detach starts the process in a session of its own (setsid), to outlive
	// this program and a Ctrl-C in its terminal (`devstack start`). Otherwise
	// it gets a process group of its own and is this program's child (tests).
	Detach bool
	// Timeout bounds the wait until the service answers; 0 means 60 s.
	Timeout time.Duration
	// PidFile, when set, gets the process id as soon as it started, before
	// the wait: whatever happens to this program, a stop finds it.
	PidFile string
}

func (o ProcOptions) timeout() time.Duration {
	if o.Timeout <= 0 {
		return 60 * time.Second
	}
	return o.Timeout
}

// Process is a service process started by StartRegistry or StartBuildkitd.
type Process struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed once the process has ended (as seen by this program).
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Stop sends SIGTERM, waits up to grace for the process to end, then kills it
// and waits.
func (p *Process) Stop(grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// spawn starts bin with args as o says.
func spawn(bin string, args []string, o ProcOptions) (*Process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	if o.Detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	if o.PidFile != "" {
		if err := os.WriteFile(o.PidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
			p.Stop(0)
			return nil, err
		}
	}
	return p, nil
}

// errExited is returned by waitReady when the process ended first.
var errExited = errors.New("exited during start-up")

// waitReady calls ready every 100 ms until it returns nil, and fails when
// exited is closed first or timeout passes; the error names the service and
// the last failed check.
func waitReady(ctx context.Context, name string, exited <-chan struct{}, timeout time.Duration, ready func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := ready(cctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s %w", name, errExited)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", name, ctx.Err())
		// Bounded polling of another process, not synchronisation within ours.
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", name, timeout, err)
		}
	}
}

// tail returns the last n lines of the file at path, indented, or "" when it
// is empty or missing.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}
