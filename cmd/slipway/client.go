package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/slipway-ci/slipway"
)

// Exit codes of the client commands (promote, builds, logs, cancel, retry, wait; see buildcmds.go for the build states), for scripts.
const (
	exitFailure   = 1 // the server or the network failed
	exitUsage     = 2 // bad arguments or settings
	exitAuth      = 3 // 401 or 403: no token, unknown token, role too low
	exitRefused   = 4 // 409: a rule refused it (build not succeeded, immutable tag)
	exitNotFound  = 5 // 404: no such build
	exitBadInput  = 6 // 400: the server rejected the input
	clientTimeout = 5 * time.Minute
)

// exitError is an error that asks main for a particular exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// exitCode returns the process exit code for err.
func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return exitFailure
}

// apiClient talks to slipway's REST API.
type apiClient struct {
	server string
	token  string
	http   *http.Client
}

// clientFlags adds --server and --token to fs; the environment's
// SLIPWAY_SERVER and SLIPWAY_TOKEN are their defaults.
func clientFlags(fs *flag.FlagSet, getenv func(string) string) func() (*apiClient, error) {
	server := fs.String("server", getenv("SLIPWAY_SERVER"), "slipway's URL, e.g. https://ci.example.com (default $SLIPWAY_SERVER)")
	token := fs.String("token", "", "API token (default $SLIPWAY_TOKEN; prefer the variable: flags show in ps)")
	return func() (*apiClient, error) {
		s := strings.TrimRight(strings.TrimSpace(*server), "/")
		if s == "" {
			return nil, usageErrorf("no server: pass --server URL or set SLIPWAY_SERVER")
		}
		if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usageErrorf("--server %q is not an http(s) URL", s)
		}
		t := *token
		if t == "" {
			t = strings.TrimSpace(getenv("SLIPWAY_TOKEN"))
		}
		if t == "" {
			return nil, usageErrorf("no token: set SLIPWAY_TOKEN or pass --token (make one with `slipway token create`)")
		}
		return &apiClient{server: s, token: t, http: &http.Client{Timeout: clientTimeout}}, nil
	}
}

// do sends a request and decodes a 2xx JSON answer into out. An error answer
// becomes an *exitError with the server's message and a code by status.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("calling %s %s: %w", method, c.server+path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading the answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return errorFromAnswer(resp.StatusCode, raw)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decoding the answer of %s %s: %w", method, path, err)
	}
	return nil
}

// errorFromAnswer turns an error answer into an *exitError with the server's
// message and an exit code by status.
func errorFromAnswer(status int, raw []byte) error {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	msg := strings.TrimSpace(string(raw))
	if json.Unmarshal(raw, &e) == nil && e.Error.Message != "" {
		msg = e.Error.Message
	}
	code := exitFailure
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		code = exitAuth
	case http.StatusConflict:
		code = exitRefused
	case http.StatusNotFound:
		code = exitNotFound
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		code = exitBadInput
	}
	return &exitError{code: code, err: fmt.Errorf("%s (HTTP %d)", msg, status)}
}

const promoteUsage = `usage: slipway promote BUILD_ID TAG... [--server URL] [--token T] [--repository REPO] [--force] [--json]

Points each TAG at the index digest of build BUILD_ID (it must have succeeded).
Exit codes: 0 promoted, 2 usage, 3 token missing/unknown or role too low,
4 refused (build not succeeded, version tag points elsewhere), 5 no such build,
6 rejected input, 1 anything else.
`

// runPromote is `slipway promote`.
func runPromote(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("promote", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, promoteUsage); fs.PrintDefaults() }
	client := clientFlags(fs, getenv)
	repository := fs.String("repository", "", "another repository to promote to, with its registry (default: the build's)")
	force := fs.Bool("force", false, "move version tags that point at another image (admin role)")
	asJSON := fs.Bool("json", false, "print the server's JSON answer")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		fs.Usage()
		return usageErrorf("promote needs a build id and at least one tag")
	}
	id, err := parseBuildID(pos[0])
	if err != nil {
		return err
	}
	c, err := client()
	if err != nil {
		return err
	}
	var out struct {
		Digest     string `json:"digest"`
		Repository string `json:"repository"`
		Tags       []struct {
			Tag            string `json:"tag"`
			PreviousDigest string `json:"previous_digest"`
			Outcome        string `json:"outcome"`
		} `json:"tags"`
	}
	var raw json.RawMessage
	dst := any(&out)
	if *asJSON {
		dst = &raw
	}
	body := map[string]any{"tags": pos[1:], "force": *force}
	if *repository != "" {
		body["repository"] = *repository
	}
	if err := c.do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/builds/%d/promote", id), body, dst); err != nil {
		return err
	}
	if *asJSON {
		_, err := fmt.Fprintln(stdout, string(raw))
		return err
	}
	for _, t := range out.Tags {
		was := "new tag"
		if t.PreviousDigest != "" {
			was = "was " + t.PreviousDigest
		}
		fmt.Fprintf(stdout, "%s:%s\t%s\t%s (%s)\n", out.Repository, t.Tag, out.Digest, t.Outcome, was)
	}
	return nil
}

const buildsUsage = `usage: slipway builds list [--repo OWNER/NAME] [--ref REF] [--state STATE] [--limit N] [--json]
       slipway builds get ID [--json]
`

// runBuilds is `slipway builds list|get`.
func runBuilds(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "get") {
		fmt.Fprint(stderr, buildsUsage)
		return usageErrorf("builds needs list or get")
	}
	fs := flag.NewFlagSet("builds "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, buildsUsage); fs.PrintDefaults() }
	client := clientFlags(fs, getenv)
	asJSON := fs.Bool("json", false, "print JSON")
	var repo, ref, state *string
	var limit *int
	if args[0] == "list" {
		repo = fs.String("repo", "", "only builds of owner/name")
		ref = fs.String("ref", "", "only builds of this ref (refs/heads/main or main)")
		state = fs.String("state", "", "only builds in this state")
		limit = fs.Int("limit", 0, "at most this many (server default 50)")
	}
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if args[0] == "get" {
		if len(pos) != 1 {
			return usageErrorf("builds get needs one build id")
		}
		id, err := parseBuildID(pos[0])
		if err != nil {
			return err
		}
		c, err := client()
		if err != nil {
			return err
		}
		var raw json.RawMessage
		if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/builds/%d", id), nil, &raw); err != nil {
			return err
		}
		if *asJSON {
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, raw, "", "  "); err != nil {
				return err
			}
			_, err = fmt.Fprintln(stdout, pretty.String())
			return err
		}
		var b slipway.Build
		if err := json.Unmarshal(raw, &b); err != nil {
			return fmt.Errorf("decoding build %d: %w", id, err)
		}
		return printBuild(stdout, &b)
	}
	if len(pos) != 0 {
		return usageErrorf("builds list takes no arguments, got %q", pos)
	}
	c, err := client()
	if err != nil {
		return err
	}
	q := url.Values{}
	for k, v := range map[string]string{"repo": *repo, "ref": *ref, "state": *state} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if *limit != 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	path := "/api/v1/builds"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out struct {
		Builds []*slipway.Build `json:"builds"`
	}
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tREPO\tREF\tCOMMIT\tSTATE\tDIGEST\tCREATED")
	for _, b := range out.Builds {
		digest := b.IndexDigest
		if digest == "" {
			digest = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", b.ID, b.Repo, slipway.RefName(b.Ref), shortCommit(b.Commit), b.State, digest, b.CreatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

// shortCommit is the first 12 digits of c, or "(resolving)" for a build
// whose commit the worker has not resolved yet.
func shortCommit(c string) string {
	if c == "" {
		return "(resolving)"
	}
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
