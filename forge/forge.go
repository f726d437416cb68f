// Package forge sends commit statuses to GitHub, GitLab and Gitea/Forgejo, and
// runs the Sender that drains the status outbox in the background.
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

// GitHub sets statuses with "Create a commit status":
// POST {BaseURL}/repos/{owner}/{repo}/statuses/{sha}
// (https://docs.github.com/en/rest/commits/statuses#create-a-commit-status).
type GitHub struct {
	BaseURL string // https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server
	Token   string
	// App, when Token is empty, gives an installation token per repository.
	App  *GitHubApp
	HTTP *http.Client // nil: a default with a 30 s timeout
}

// githubStates maps build states to GitHub's: error, failure, pending, success.
var githubStates = map[slipway.BuildState]string{
	slipway.BuildQueued: "pending", slipway.BuildRunning: "pending", slipway.BuildTesting: "pending",
	slipway.BuildSucceeded: "success", slipway.BuildFailed: "failure", slipway.BuildCanceled: "error",
}

// SetStatus implements Client.
func (g *GitHub) SetStatus(ctx context.Context, s Status) error {
	u := repoStatusesURL(g.BaseURL, s)
	token := g.Token
	if token == "" && g.App != nil {
		var err error
		if token, err = g.App.Token(ctx, s.Owner, s.Name); err != nil {
			return err
		}
	}
	h := http.Header{}
	h.Set("Accept", "application/vnd.github+json")
	h.Set("Authorization", "Bearer "+token)
	h.Set("X-GitHub-Api-Version", "2022-11-28")
	return post(ctx, g.HTTP, "GitHub", u, h, map[string]string{
		"state": githubStates[s.State], "target_url": s.TargetURL,
		"description": slipway.Truncate(s.Description, 140), "context": StatusContext,
	})
}

// GitLab sets statuses with "Set the pipeline status of a commit":
// POST {BaseURL}/projects/:id/statuses/:sha, :id being the URL-encoded
// "namespace/project" (https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit).
type GitLab struct {
	BaseURL string // https://gitlab.com/api/v4, or https://HOST/api/v4
	Token   string // sent as PRIVATE-TOKEN
	HTTP    *http.Client
}

// gitlabStates maps build states to GitLab's: pending, running, success, failed, canceled.
var gitlabStates = map[slipway.BuildState]string{
	slipway.BuildQueued: "pending", slipway.BuildRunning: "running", slipway.BuildTesting: "running",
	slipway.BuildSucceeded: "success", slipway.BuildFailed: "failed", slipway.BuildCanceled: "canceled",
}

// SetStatus implements Client.
func (g *GitLab) SetStatus(ctx context.Context, s Status) error {
	u := strings.TrimRight(g.BaseURL, "/") + "/projects/" + url.PathEscape(s.Owner+"/"+s.Name) + "/statuses/" + url.PathEscape(s.Commit)
	h := http.Header{}
	h.Set("PRIVATE-TOKEN", g.Token)
	return post(ctx, g.HTTP, "GitLab", u, h, map[string]string{
		"state": gitlabStates[s.State], "ref": slipway.RefName(s.Ref), "name": StatusContext,
		"target_url": s.TargetURL, "description": slipway.Truncate(s.Description, 255),
	})
}

// Gitea sets statuses on Gitea and Forgejo with
// POST {BaseURL}/repos/{owner}/{repo}/statuses/{sha} (operation repoCreateStatus,
// body CreateStatusOption).
type Gitea struct {
	BaseURL string // https://HOST/api/v1
	Token   string // sent as "Authorization: token <Token>"
	HTTP    *http.Client
}

// giteaStates maps build states to Gitea's: pending, success, error, failure, warning.
var giteaStates = map[slipway.BuildState]string{
	slipway.BuildQueued: "pending", slipway.BuildRunning: "pending", slipway.BuildTesting: "pending",
	slipway.BuildSucceeded: "success", slipway.BuildFailed: "failure", slipway.BuildCanceled: "error",
}

// SetStatus implements Client.
func (g *Gitea) SetStatus(ctx context.Context, s Status) error {
	u := repoStatusesURL(g.BaseURL, s)
	h := http.Header{}
	h.Set("Accept", "application/json")
	h.Set("Authorization", "token "+g.Token)
	return post(ctx, g.HTTP, "Gitea", u, h, map[string]string{
		"state": giteaStates[s.State], "target_url": s.TargetURL,
		"description": slipway.Truncate(s.Description, 255), "context": StatusContext,
	})
}
