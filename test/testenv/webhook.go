package testenv

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// PushParams says what GitHubPush changes in a push fixture. An empty field
// leaves the fixture's value as it is.
type PushParams struct {
	// Owner and Name are the repository's owner login and name; full_name
	// follows them.
	Owner, Name string
	// CloneURL replaces clone_url, git_url and ssh_url: what slipway clones.
	CloneURL string
	// HTMLURL replaces html_url and url; it defaults to CloneURL when that is
	// set, so no link in the payload leads to the fixture's repository.
	HTMLURL string
	// Ref is the full ref pushed, e.g. "refs/heads/main".
	Ref string
	// Before and After are the commits the ref moved between. A non-empty
	// After also becomes the id of head_commit and of the last commit listed.
	Before, After string
	// HeadCommit, when set, is the id of head_commit instead of After: the
	// commit an annotated tag points at, After being the tag object.
	HeadCommit string
	// Message replaces the head commit's message.
	Message string
	// Deleted makes the push a deletion of Ref, as GitHub sends it: deleted
	// true, created false, no head commit and no commits. Set After to 40
	// zeros with it.
	Deleted bool
}

// GitHubPush reads a real GitHub push event and returns it rewritten by p,
// every other field kept: what GitHub would send for that push to the
// rewritten repository. Sign the result with Sign. fixture is a file name in
// the fixtures' github folder ("push-branch.json") or a path.
func GitHubPush(fixture string, p PushParams) ([]byte, error) {
	fixturePath := fixture
	if filepath.Base(fixture) == fixture {
		var err error
		if fixturePath, err = FixturePath("github", fixture); err != nil {
			return nil, err
		}
	}
	raw, err := os.ReadFile(fixturePath)
	if err != nil {
		return nil, fmt.Errorf("reading push fixture: %w", err)
	}
	// UseNumber keeps ids such as 63933911 exactly as they were.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var payload map[string]any
	if err := dec.Decode(&payload); err != nil {
		return nil, fmt.Errorf("decoding push fixture %s: %w", fixturePath, err)
	}
	repo, ok := payload["repository"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("rewriting push fixture %s: no repository object", fixturePath)
	}
	owner, _ := repo["owner"].(map[string]any)
	if owner == nil {
		owner = map[string]any{}
		repo["owner"] = owner
	}

	ownerLogin, _ := owner["login"].(string)
	if ownerLogin == "" {
		ownerLogin, _ = owner["name"].(string)
	}
	if p.Owner != "" {
		ownerLogin = p.Owner
		owner["login"] = p.Owner
		if _, ok := owner["name"]; ok {
			owner["name"] = p.Owner
		}
	}
	repoName, _ := repo["name"].(string)
	if p.Name != "" {
		repoName = p.Name
		repo["name"] = p.Name
	}
	if p.Owner != "" || p.Name != "" {
		repo["full_name"] = ownerLogin + "/" + repoName
	}
	if p.CloneURL != "" {
		repo["clone_url"] = p.CloneURL
		repo["git_url"] = p.CloneURL
		repo["ssh_url"] = p.CloneURL
	}
	htmlURL := p.HTMLURL
	if htmlURL == "" {
		htmlURL = p.CloneURL
	}
	if htmlURL != "" {
		repo["html_url"] = htmlURL
		repo["url"] = htmlURL
	}

	if p.Ref != "" {
		payload["ref"] = p.Ref
	}
	if p.Before != "" {
		payload["before"] = p.Before
	}
	if p.After != "" {
		payload["after"] = p.After
	}
	commitID := p.After
	if p.HeadCommit != "" {
		commitID = p.HeadCommit
	}
	rewriteCommit := func(c map[string]any) {
		if commitID != "" {
			c["id"] = commitID
			if htmlURL != "" {
				c["url"] = htmlURL + "/commit/" + commitID
			}
		}
		if p.Message != "" {
			c["message"] = p.Message
		}
	}
	if p.Deleted {
		payload["deleted"] = true
		payload["created"] = false
		payload["head_commit"] = nil
		payload["commits"] = []any{}
	}
	if head, ok := payload["head_commit"].(map[string]any); ok {
		rewriteCommit(head)
	}
	if commits, ok := payload["commits"].([]any); ok && len(commits) > 0 {
		if last, ok := commits[len(commits)-1].(map[string]any); ok {
			rewriteCommit(last)
		}
	}

	out, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encoding push payload: %w", err)
	}
	return out, nil
}

// Sign returns the X-Hub-Signature-256 header value GitHub sends with body
// for a webhook whose secret is secret: "sha256=" and the hex HMAC-SHA256.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}
