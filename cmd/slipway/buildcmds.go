package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/slipway-ci/slipway"
)

// Exit codes of `slipway wait` (and `logs --follow`) for the build's final state.
const (
	exitBuildFailed   = 7 // the build ended failed
	exitBuildCanceled = 8 // the build ended canceled
	exitWaitTimeout   = 9 // --timeout passed before the build finished
)

// parseInterspersed parses fs from args, taking flags before, between and
// after the positional arguments (`promote 1 v1.0.0 --json`); a "--" ends
// the flags. It returns the positional arguments in order.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageErrorf("%v", err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse stops at the first non-flag, or after a "--" it consumed.
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseBuildID reads a build id argument (a positive integer).
func parseBuildID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, usageErrorf("%q is not a build id", s)
	}
	return id, nil
}

// printBuild writes b for a person: one field a line, then its platforms,
// tests and attempts. Times are RFC 3339 in the local time zone.
func printBuild(w io.Writer, b *slipway.Build) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	tm := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.Local().Format(time.RFC3339)
	}
	row("Build", strconv.FormatInt(b.ID, 10))
	row("State", string(b.State))
	row("Repository", b.Repo)
	row("Ref", b.Ref)
	if b.Commit == "" {
		row("Commit", "(not resolved yet: the worker reads it from the ref)")
	} else {
		row("Commit", b.Commit)
	}
	row("Message", firstLine(b.Message))
	row("Sender", b.Sender)
	row("Image", b.Image)
	row("Image ref", b.ImageRef)
	row("Index digest", b.IndexDigest)
	if len(b.Tags) > 0 {
		row("Tags", strings.Join(b.Tags, ", "))
	}
	row("Error", b.Error)
	row("Attempt", strconv.Itoa(b.Attempt))
	row("Created", tm(&b.CreatedAt))
	row("Started", tm(b.StartedAt))
	row("Finished", tm(b.FinishedAt))
	if b.StartedAt != nil && b.FinishedAt != nil {
		row("Duration", b.FinishedAt.Sub(*b.StartedAt).Round(time.Second).String())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(b.Platforms) > 0 {
		fmt.Fprintln(w, "\nPlatforms:")
		for _, p := range b.Platforms {
			fmt.Fprintf(tw, "  %s\t%s\n", p.Platform, p.Digest)
		}
		tw.Flush()
	}
	if len(b.Tests) > 0 {
		fmt.Fprintln(w, "\nTests:")
		for _, t := range b.Tests {
			res := "passed"
			if !t.Passed {
				res = fmt.Sprintf("FAILED (exit %d)", t.ExitCode)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", t.Name, t.Platform, res, (time.Duration(t.DurationMS) * time.Millisecond).String())
		}
		tw.Flush()
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// stateExit is the exit error for a build's final state: nil for succeeded.
func stateExit(id int64, state slipway.BuildState, msg string) error {
	switch state {
	case slipway.BuildSucceeded:
		return nil
	case slipway.BuildCanceled:
		return &exitError{code: exitBuildCanceled, err: fmt.Errorf("build %d was canceled%s", id, suffix(msg))}
	default:
		return &exitError{code: exitBuildFailed, err: fmt.Errorf("build %d %s%s", id, state, suffix(msg))}
	}
}

func suffix(msg string) string {
	if msg == "" {
		return ""
	}
	return ": " + msg
}

// buildCommand parses the flags and the one build id of a client command
// that acts on a build; extra adds the command's own flags.
func buildCommand(name, usage string, args []string, getenv func(string) string, stderr io.Writer, extra func(*flag.FlagSet)) (*apiClient, int64, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	client := clientFlags(fs, getenv)
	if extra != nil {
		extra(fs)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, 0, err
	}
	if len(pos) != 1 {
		fs.Usage()
		return nil, 0, usageErrorf("%s needs one build id", name)
	}
	id, err := parseBuildID(pos[0])
	if err != nil {
		return nil, 0, err
	}
	c, err := client()
	if err != nil {
		return nil, 0, err
	}
	return c, id, nil
}

const logsUsage = `usage: slipway logs BUILD_ID [--follow] [--server URL] [--token T]

Prints the build's log. With --follow it streams new lines until the build
finishes and exits as slipway wait does: 0 succeeded, 7 failed, 8 canceled.
`

// runLogs is `slipway logs`.
func runLogs(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var follow *bool
	c, id, err := buildCommand("logs", logsUsage, args, getenv, stderr, func(fs *flag.FlagSet) {
		follow = fs.Bool("follow", false, "stream new lines until the build finishes")
		fs.BoolVar(follow, "f", false, "short for --follow")
	})
	if err != nil {
		return err
	}
	path := fmt.Sprintf("/api/v1/builds/%d/logs", id)
	if !*follow {
		return c.stream(ctx, path, "text/plain", func(body io.Reader) error {
			_, err := io.Copy(stdout, body)
			return err
		})
	}
	return followLog(ctx, c, id, stdout)
}

// followLog reads the build's Server-Sent Events stream, printing each line
// ("[platform] text" when it has a platform), and reconnects with
// Last-Event-ID when the connection drops before the "end" event.
func followLog(ctx context.Context, c *apiClient, id int64, stdout io.Writer) error {
	var last int64
	for attempt := 0; ; attempt++ {
		var end *struct {
			State slipway.BuildState `json:"state"`
			Error string             `json:"error"`
		}
		err := c.streamFrom(ctx, fmt.Sprintf("/api/v1/builds/%d/logs?follow=1", id), last, func(body io.Reader) error {
			sc := bufio.NewScanner(body)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			var event, data string
			for sc.Scan() {
				line := sc.Text()
				switch {
				case line == "":
					switch event {
					case "line":
						var l logEvent
						if json.Unmarshal([]byte(data), &l) == nil {
							if l.Platform != "" {
								fmt.Fprintf(stdout, "[%s] %s\n", l.Platform, l.Text)
							} else {
								fmt.Fprintln(stdout, l.Text)
							}
							last = l.No
						}
					case "end":
						end = &struct {
							State slipway.BuildState `json:"state"`
							Error string             `json:"error"`
						}{}
						if err := json.Unmarshal([]byte(data), end); err != nil {
							return fmt.Errorf("decoding the end of the log: %w", err)
						}
						return nil
					}
					event, data = "", ""
				case strings.HasPrefix(line, "event: "):
					event = strings.TrimPrefix(line, "event: ")
				case strings.HasPrefix(line, "data: "):
					data += strings.TrimPrefix(line, "data: ")
				}
			}
			return sc.Err()
		})
		if end != nil {
			return stateExit(id, end.State, end.Error)
		}
		var ee *exitError
		if errors.As(err, &ee) || ctx.Err() != nil || attempt >= 5 {
			if err == nil {
				err = errors.New("the log stream ended before the build finished")
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// logEvent is the data of a "line" event (server/api_logs.go).
type logEvent struct {
	No       int64  `json:"no"`
	Platform string `json:"platform"`
	Text     string `json:"text"`
}

// stream sends a GET and hands a 2xx answer's body to read; no timeout
// applies, as a log can be long or live.
func (c *apiClient) stream(ctx context.Context, path, accept string, read func(io.Reader) error) error {
	return c.streamRequest(ctx, path, accept, 0, read)
}

func (c *apiClient) streamFrom(ctx context.Context, path string, after int64, read func(io.Reader) error) error {
	return c.streamRequest(ctx, path, "text/event-stream", after, read)
}

func (c *apiClient) streamRequest(ctx context.Context, path, accept string, after int64, read func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.server+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", accept)
	if after > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(after, 10))
	}
	hc := *c.http
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("calling GET %s: %w", c.server+path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return errorFromAnswer(resp.StatusCode, raw)
	}
	return read(resp.Body)
}

const cancelUsage = `usage: slipway cancel BUILD_ID [--json] [--server URL] [--token T]

Cancels a queued build at once, or tells a running one to stop (developer role).
Exit codes: 0 canceled or stopping, 4 the build had already finished, 5 no such build.
`

// runCancel is `slipway cancel`.
func runCancel(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var asJSON *bool
	c, id, err := buildCommand("cancel", cancelUsage, args, getenv, stderr, func(fs *flag.FlagSet) {
		asJSON = fs.Bool("json", false, "print the server's JSON answer")
	})
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/builds/%d/cancel", id), nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		_, err := fmt.Fprintln(stdout, string(raw))
		return err
	}
	var b slipway.Build
	if err := json.Unmarshal(raw, &b); err != nil {
		return fmt.Errorf("decoding build %d: %w", id, err)
	}
	if b.State.Done() {
		_, err = fmt.Fprintf(stdout, "build %d %s\n", id, b.State)
	} else {
		_, err = fmt.Fprintf(stdout, "build %d is stopping (was %s)\n", id, b.State)
	}
	return err
}

const retryUsage = `usage: slipway retry BUILD_ID [--json] [--server URL] [--token T]

Queues a new build of a finished build's commit (developer role) and prints
the new build's id. Exit codes: 0 queued, 4 the build has not finished, 5 no such build.
`

// runRetry is `slipway retry`.
func runRetry(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var asJSON *bool
	c, id, err := buildCommand("retry", retryUsage, args, getenv, stderr, func(fs *flag.FlagSet) {
		asJSON = fs.Bool("json", false, "print the server's JSON answer")
	})
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/builds/%d/retry", id), nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		_, err := fmt.Fprintln(stdout, string(raw))
		return err
	}
	var out struct {
		BuildID int64  `json:"build_id"`
		URL     string `json:"url"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("decoding the retry answer: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "%d\t%s\n", out.BuildID, out.URL)
	return err
}

const waitUsage = `usage: slipway wait BUILD_ID [--timeout DURATION] [--interval DURATION] [--server URL] [--token T]

Waits until the build finishes and prints its final state.
Exit codes: 0 succeeded, 7 failed, 8 canceled, 9 --timeout passed first,
5 no such build, 3 token problems, 1 anything else.
`

// runWait is `slipway wait`.
func runWait(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var timeout, interval *time.Duration
	c, id, err := buildCommand("wait", waitUsage, args, getenv, stderr, func(fs *flag.FlagSet) {
		timeout = fs.Duration("timeout", 0, "give up after this long (exit 9); 0 waits as long as it takes")
		interval = fs.Duration("interval", 2*time.Second, "how often to ask the server")
	})
	if err != nil {
		return err
	}
	if *interval < 100*time.Millisecond {
		return usageErrorf("--interval must be at least 100ms")
	}
	var deadline <-chan time.Time
	if *timeout > 0 {
		t := time.NewTimer(*timeout)
		defer t.Stop()
		deadline = t.C
	}
	for {
		var b slipway.Build
		if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/builds/%d", id), nil, &b); err != nil {
			return err
		}
		if b.State.Done() {
			fmt.Fprintf(stdout, "build %d %s\n", id, b.State)
			return stateExit(id, b.State, b.Error)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return &exitError{code: exitWaitTimeout, err: fmt.Errorf("build %d is still %s after %s", id, b.State, *timeout)}
		case <-time.After(*interval):
		}
	}
}
