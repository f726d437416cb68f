// Package forge holds each forge whole: GitHub, GitLab and Gitea/Forgejo.
// Each is one type implementing Forge: as a Hook it parses and verifies the
// webhook deliveries the forge sends (push, tag push, pull or merge request,
// ping); as a Client it sets commit statuses on it. The package also holds
// the clone credentials of the forges and the Sender that drains the status
// outbox in the background. A new forge, a new forge event or a new forge
// credential is a change to this package only; package server keeps the
// HTTP plumbing around it.
//
// The clients speak each forge's documented REST API with net/http: one POST
// each, so a whole SDK per forge (go-github, client-go, the Gitea SDK) would
// add three dependency trees for three requests.
package forge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/slipway-ci/slipway"
)

// StatusContext names slipway's statuses on the forge (GitHub's context,
// GitLab's name), so a new state replaces the previous one.
const StatusContext = "slipway/build"

// Status is one commit status for one commit.
type Status struct {
	Owner       string
	Name        string
	Commit      string
	Ref         string // full ref; GitLab files the status under its short name
	State       slipway.BuildState
	TargetURL   string
	Description string
}

// Client sets commit statuses on one forge. Implementations are safe for
// concurrent use. SetStatus returns an *APIError when the forge answered with
// a non-2xx status; no error text holds the token.
type Client interface {
	SetStatus(ctx context.Context, s Status) error
}

// APIError is a forge's refusal.
type APIError struct {
	Forge      string
	StatusCode int
	Message    string // the start of the forge's answer
}

// Error implements error.
func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s answered %d", e.Forge, e.StatusCode)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// httpClient is the default client: a forge that hangs must not hold a sender.
var httpClient = &http.Client{Timeout: 30 * time.Second}

// post sends body as JSON to u with header and turns a non-2xx answer into an *APIError.
func post(ctx context.Context, hc *http.Client, forge, u string, header http.Header, body any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encoding %s status: %w", forge, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("making %s status request: %w", forge, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "slipway")
	if hc == nil {
		hc = httpClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		// url.Error holds the URL, never a header: the token stays out.
		return fmt.Errorf("posting %s status: %w", forge, err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return &APIError{Forge: forge, StatusCode: resp.StatusCode, Message: slipway.Truncate(slipway.OneLine(string(snippet)), 200)}
	}
	return nil
}

// repoStatusesURL is {base}/repos/{owner}/{repo}/statuses/{sha}, the path
// GitHub and Gitea share.
func repoStatusesURL(base string, s Status) string {
	return strings.TrimRight(base, "/") + "/repos/" + url.PathEscape(s.Owner) + "/" + url.PathEscape(s.Name) + "/statuses/" + url.PathEscape(s.Commit)
}
