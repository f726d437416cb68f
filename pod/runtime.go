package pod

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// LogFunc receives one line of a container's output (stdout and stderr
// together), without its newline. It is called from several goroutines, one
// per container, and must be safe for that.
type LogFunc func(container, line string)

// Info is a Pod a Runtime holds.
type Info struct {
	Name   string
	Labels map[string]string
}

// Runtime runs test Pods. Implementations are safe for concurrent use by
// several builds; Pods of different names do not interfere.
//
// Run is not idempotent (a second Run of the same name fails while the first
// Pod exists); Remove is, and is safe after a failed or canceled Run.
type Runtime interface {
	// Run runs pod (as Spec.Pod makes it): it pulls every image, starts the
	// services in order, waits for each one's startup probe, then starts the
	// runner (RunnerAnnotation) and returns its exit code. Every
	// container's output goes to log while it runs. The Pod is always
	// removed before Run returns, whatever the outcome.
	//
	// When the Pod names a report (ReportAnnotation), Run copies that file
	// out of the runner container once the runner has exited, whatever its
	// exit code, before the Pod is removed: Result.Report, at most
	// MaxReportSize bytes. A report that cannot be read (missing, too big,
	// not a regular file) is Result.ReportErr, not an error of Run.
	//
	// A runner that exits non-zero is not an error. A service whose
	// readiness never comes, or that exits before it is ready, is a
	// *NotReadyError. Canceling ctx stops everything and returns an error
	// matching ctx's cause. Anything else (an image that cannot be pulled,
	// the runtime gone) is an error with a one-line message.
	Run(ctx context.Context, pod *corev1.Pod, log LogFunc) (Result, error)
	// Remove removes the Pod name and its containers, killing them; a Pod
	// that does not exist is no error.
	Remove(ctx context.Context, name string) error
	// List returns the Pods slipway made (LabelManaged) that carry every
	// label of selector.
	List(ctx context.Context, selector map[string]string) ([]Info, error)
}

// MaxReportSize bounds the report file Run copies out of the runner (4 MiB).
const MaxReportSize = 4 << 20

// Result is how a Pod's runner ended.
type Result struct {
	// ExitCode is the runner's exit code.
	ExitCode int
	// Report is the content of the file ReportAnnotation names, read from
	// inside the runner container (a symlink there resolves inside the
	// container, never to a file of the host); nil when the Pod names none
	// or it could not be read.
	Report []byte
	// ReportErr says why a named report could not be read, in one line
	// ("… does not exist", "… is larger than 4 MiB").
	ReportErr error
}

// NotReadyError is a service that did not become ready: its readiness
// timed out, or it exited first. Last holds its last lines of output.
type NotReadyError struct {
	Service string
	Timeout time.Duration
	// Exited is set when the container ended before it was ready, with its
	// exit code.
	Exited   bool
	ExitCode int
	Last     []string
}

func (e *NotReadyError) Error() string {
	what := fmt.Sprintf("service %s was not ready within %s", e.Service, e.Timeout)
	if e.Exited {
		what = fmt.Sprintf("service %s exited with code %d before it was ready", e.Service, e.ExitCode)
	}
	if len(e.Last) == 0 {
		return what + "; it wrote no output"
	}
	return what + "; its last lines: " + strings.Join(e.Last, " | ")
}

// tail keeps the last n lines written to it.
type tail struct {
	n     int
	lines []string
}

func (t *tail) add(line string) {
	t.lines = append(t.lines, line)
	if len(t.lines) > t.n {
		t.lines = t.lines[len(t.lines)-t.n:]
	}
}
