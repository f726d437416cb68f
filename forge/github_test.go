package forge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// corpusDir is one forge's folder of the third-party webhook corpus: payloads
// other projects captured from the forges, kept outside slipway in
// ../shared/fixtures/webhooks (CI has it) or $SLIPWAY_WEBHOOK_CORPUS. Only the
// conformance tests read it, and they skip, saying so, when it is absent.
func corpusDir(t testing.TB, forge string) string {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "fixtures", "webhooks")
	if env := os.Getenv("SLIPWAY_WEBHOOK_CORPUS"); env != "" {
		dir = env
	}
	dir = filepath.Join(dir, forge)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Skipf("conformance check against the third-party %s webhook corpus skipped: %s is not a folder (set SLIPWAY_WEBHOOK_CORPUS to run it)", forge, dir)
	}
	return dir
}

// sampleDir is one forge's folder of slipway's own webhook samples, written
// after each forge's documented payload format.
func sampleDir(forge string) string {
	return filepath.Join("testdata", "webhooks", forge)
}

// readFixture returns the bytes of one of slipway's own GitHub samples.
func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	return readForgeFixture(t, "github", name)
}

// TestParseGitHubFixtures is the conformance check: every payload of the
// third-party GitHub corpus through the parser with the event header it was
// sent with (SOURCES.md). A fixture without a row here fails the test, so a
// new payload cannot go unchecked.
func TestParseGitHubFixtures(t *testing.T) {
	t.Parallel()

	const delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
	trigger := func(owner, name, cloneURL, ref, commit, message, sender string) *slipway.Trigger {
		return &slipway.Trigger{
			Forge: "github", DeliveryID: delivery, Event: "push",
			Owner: owner, Name: name, CloneURL: cloneURL,
			Ref: ref, Commit: commit, Message: message, Sender: sender,
			DefaultBranch: "master", // every GitHub fixture names it
		}
	}
	const zen = "Anything added dilutes everything else."

	tests := map[string]fixtureCase{
		"create-tag.json":             {event: "create", ignored: `event "create" does not start builds`},
		"ping-default.json":           {event: "ping", zen: zen},
		"ping-with-app_id.json":       {event: "ping", zen: zen},
		"ping-with-organization.json": {event: "ping", zen: zen},
		// The shared corpus's pull request, as a conformance check of the
		// pull-request parser (testdata/webhooks holds slipway's own samples).
		"pull_request-opened.json": {event: "pull_request", trigger: &slipway.Trigger{
			Forge: "github", DeliveryID: delivery, Event: "pull_request", Owner: "Codertocat", Name: "Hello-World",
			CloneURL: "https://github.com/Codertocat/Hello-World.git", Ref: "refs/pull/2/head",
			Commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821", Message: "Update the README with new information.",
			Sender: "Codertocat", DefaultBranch: "master",
			PullRequest: &slipway.PullRequest{Number: 2, Title: "Update the README with new information.", Author: "Codertocat",
				URL: "https://github.com/Codertocat/Hello-World/pull/2", Base: "master", AuthorAssociation: "OWNER"}}},
		"push-branch-commits-goplayground.json": {event: "push", trigger: trigger(
			"binkkatal", "sample_app", "https://github.com/binkkatal/sample_app.git",
			"refs/heads/master", "fd489864e7642b48eaad6e3f155c10e46810ec72", "test a push event", "binkkatal")},
		"push-branch-commits-goscm.json": {event: "push", trigger: trigger(
			"Codertocat", "Hello-World", "https://github.com/Codertocat/Hello-World.git",
			"refs/heads/master", "199eddf46df50de8d02e99bf1c5fdb4101338224", "Update README", "Codertocat")},
		"push-branch-created-goscm.json": {event: "push", trigger: trigger(
			"bradrydzewski", "drone-test-go", "https://github.com/bradrydzewski/drone-test-go.git",
			"refs/heads/feature-branch", "d2b75aa7797ec26b088fa2dd527e9d2c052fcedd", "Update .drone.yml", "bradrydzewski")},
		"push-branch-created-no-username-committer.json": {event: "push", trigger: trigger(
			"Codertocat", "Hello-World", "https://github.com/Codertocat/Hello-World.git",
			"refs/heads/master", "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "Initial commit", "Codertocat")},
		"push-branch-created.json": {event: "push", trigger: trigger(
			"Codertocat", "Hello-World", "https://github.com/Codertocat/Hello-World.git",
			"refs/heads/master", "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "Initial commit", "Codertocat")},
		"push-branch-deleted-goscm.json": {event: "push", ignored: `branch "feature-branch" was deleted`},
		"push-tag-created-ghes34.json": {event: "push", trigger: trigger(
			"Codertocat", "Hello-World", "https://octocoders.github.io/Codertocat/Hello-World.git",
			"refs/tags/simple-tag", "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "Adding a .gitignore file", "Codertocat")},
		"push-tag-created-goscm.json": {event: "push", trigger: trigger(
			"bradrydzewski", "drone-test-go", "https://github.com/bradrydzewski/drone-test-go.git",
			"refs/tags/v0.0.1", "d2b75aa7797ec26b088fa2dd527e9d2c052fcedd", "Update .drone.yml", "bradrydzewski")},
		"push-tag-deleted-1.json":                 {event: "push", ignored: `tag "simple-tag" was deleted`},
		"push-tag-deleted-goscm.json":             {event: "push", ignored: `tag "v0.0.1" was deleted`},
		"push-tag-deleted-with-installation.json": {event: "push", ignored: `tag "simple-tag" was deleted`},
		"push-tag-deleted-with-organization.json": {event: "push", ignored: `tag "simple-tag" was deleted`},
		"push-tag-deleted.json":                   {event: "push", ignored: `tag "simple-tag" was deleted`},
	}

	runFixtureTable(t, corpusDir(t, "github"), "*.json", delivery, parseGitHubEvent, tests)
}

// TestParseGitHubEvent covers what the fixtures do not show: edited copies of an
// ordinary push, and bodies that are not JSON.
func TestParseGitHubEvent(t *testing.T) {
	t.Parallel()

	base := string(readFixture(t, "push-branch.json"))
	const after = `"after": "3f1c9a7e5b2d4c6e8f0a1b2c3d4e5f60718293a4"`
	require.Contains(t, base, after)
	edit := func(old, new string) string {
		require.Contains(t, base, old)
		return strings.Replace(base, old, new, 1)
	}
	// The head commit comes after the commits list, which repeats its message.
	editHeadMessage := func(msg string) string {
		const old = `"message": "Add the release notes\n\nLonger body of the commit."`
		i := strings.LastIndex(base, old)
		require.Greater(t, i, strings.Index(base, `"head_commit"`))
		return base[:i] + `"message": ` + msg + base[i+len(old):]
	}

	tests := []struct {
		name    string
		event   string
		payload string
		// One of:
		errContains string
		ignored     string
		check       func(t *testing.T, tr *slipway.Trigger)
	}{
		{name: "truncated JSON", event: "push", payload: base[:len(base)/2], errContains: "Malformed JSON payload: unexpected end of JSON input"},
		{name: "not JSON", event: "push", payload: "payload=%7B%7D", errContains: "Malformed JSON payload: invalid character"},
		{name: "wrong type", event: "push", payload: `{"ref": 1}`, errContains: "Malformed JSON payload"},
		{name: "malformed ping", event: "ping", payload: `{"zen":`, errContains: "Malformed JSON payload"},
		{name: "malformed other event", event: "issues", payload: `{`, errContains: "Malformed JSON payload"},
		{name: "empty object", event: "push", payload: `{}`, errContains: "no ref"},
		{name: "null", event: "push", payload: `null`, errContains: "no ref"},
		{name: "forced push builds", event: "push", payload: edit(`"forced": false`, `"forced": true`),
			check: func(t *testing.T, tr *slipway.Trigger) {
				require.Equal(t, "3f1c9a7e5b2d4c6e8f0a1b2c3d4e5f60718293a4", tr.Commit)
			}},
		{name: "zero after without deleted flag", event: "push",
			payload: edit(after, `"after": "0000000000000000000000000000000000000000"`), ignored: `branch "main" was deleted`},
		{name: "pull request ref", event: "push",
			payload: edit(`"ref": "refs/heads/main"`, `"ref": "refs/pull/1/merge"`), ignored: `ref "refs/pull/1/merge" is neither a branch nor a tag`},
		{name: "notes ref", event: "push",
			payload: edit(`"ref": "refs/heads/main"`, `"ref": "refs/notes/commits"`), ignored: `ref "refs/notes/commits" is neither a branch nor a tag`},
		{name: "branch prefix alone", event: "push",
			payload: edit(`"ref": "refs/heads/main"`, `"ref": "refs/heads/"`), errContains: "names no branch"},
		{name: "short after", event: "push", payload: edit(after, `"after": "3f1c9a7"`), errContains: "not a 40-digit hex commit"},
		{name: "non-hex after", event: "push", payload: edit(after, `"after": "zf1c9a7e5b2d4c6e8f0a1b2c3d4e5f60718293a4"`), errContains: "not a 40-digit hex commit"},
		{name: "missing after", event: "push", payload: edit(after, `"after_": ""`), errContains: "not a 40-digit hex commit"},
		{name: "upper-case after is lowered", event: "push", payload: edit(after, `"after": "3F1C9A7E5B2D4C6E8F0A1B2C3D4E5F60718293A4"`),
			check: func(t *testing.T, tr *slipway.Trigger) {
				require.Equal(t, "3f1c9a7e5b2d4c6e8f0a1b2c3d4e5f60718293a4", tr.Commit)
			}},
		{name: "missing clone_url", event: "push",
			payload: edit(`"clone_url": "https://github.com/octo-org/hello-app.git"`, `"clone_url": ""`), errContains: "no repository.clone_url"},
		{name: "clone_url like an option", event: "push",
			payload: edit(`"clone_url": "https://github.com/octo-org/hello-app.git"`, `"clone_url": "--upload-pack=touch /tmp/x"`), errContains: "not a URL"},
		{name: "clone_url with ext transport", event: "push",
			payload: edit(`"clone_url": "https://github.com/octo-org/hello-app.git"`, `"clone_url": "ext::sh -c touch% /tmp/x"`), errContains: "unsupported scheme"},
		{name: "git daemon clone_url", event: "push",
			payload: edit(`"clone_url": "https://github.com/octo-org/hello-app.git"`, `"clone_url": "git://127.0.0.1:9418/repo.git"`),
			check: func(t *testing.T, tr *slipway.Trigger) {
				require.Equal(t, "git://127.0.0.1:9418/repo.git", tr.CloneURL)
			}},
		{name: "owner falls back to owner.name", event: "push", payload: edit(`"login": "octo-org",
      "id": 6811672,`, `"id": 6811672,`),
			check: func(t *testing.T, tr *slipway.Trigger) { require.Equal(t, "octo-org", tr.Owner) }},
		{name: "path in repository name", event: "push",
			payload: edit(`"name": "hello-app"`, `"name": "../etc"`), errContains: "repository.name"},
		{name: "dot-dot repository name", event: "push",
			payload: edit(`"name": "hello-app"`, `"name": ".."`), errContains: "repository.name"},
		{name: "no repository", event: "push", payload: `{"ref":"refs/heads/main","after":"3f1c9a7e5b2d4c6e8f0a1b2c3d4e5f60718293a4"}`, errContains: "no repository"},
		{name: "multi-line message keeps the subject", event: "push",
			payload: editHeadMessage(`"Fix the build\r\n\nLonger text.\u0000"`),
			check:   func(t *testing.T, tr *slipway.Trigger) { require.Equal(t, "Fix the build", tr.Message) }},
		{name: "NUL in subject is dropped", event: "push",
			payload: editHeadMessage(`"Up\u0000date"`),
			check:   func(t *testing.T, tr *slipway.Trigger) { require.Equal(t, "Update", tr.Message) }},
		{name: "control character in ref", event: "push",
			payload: edit(`"ref": "refs/heads/main"`, `"ref": "refs/heads/ma\nster"`), errContains: "is not a ref name git accepts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev, err := parseGitHubEvent(tt.event, "d-1", []byte(tt.payload))
			if tt.errContains != "" {
				require.Error(t, err)
				require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err))
				require.Contains(t, slipway.ErrorMessage(err), tt.errContains)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.ignored, ev.Ignored)
			if tt.check != nil {
				require.NotNil(t, ev.Trigger)
				tt.check(t, ev.Trigger)
			} else {
				require.Nil(t, ev.Trigger)
			}
		})
	}
}

// TestVerifyGitHubSignature uses the test vector from GitHub's docs
// ("Validating webhook deliveries", see the fixtures' SOURCES.md).
func TestVerifyGitHubSignature(t *testing.T) {
	t.Parallel()

	secret := []byte("It's a Secret to Everybody")
	body := []byte("Hello, World!")
	const sig = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

	changed := []byte("Hello, World!")
	changed[5] ^= 1 // one bit of one byte

	tests := []struct {
		name   string
		secret []byte
		header string
		body   []byte
		ok     bool
	}{
		{name: "valid (GitHub docs vector)", secret: secret, header: "sha256=" + sig, body: body, ok: true},
		{name: "upper-case hex", secret: secret, header: "sha256=" + strings.ToUpper(sig), body: body, ok: true},
		{name: "wrong secret", secret: []byte("It's a Secret to Everybody!"), header: "sha256=" + sig, body: body},
		{name: "wrong signature", secret: secret, header: "sha256=" + strings.Repeat("0", 64), body: body},
		{name: "missing", secret: secret, header: "", body: body},
		{name: "wrong prefix", secret: secret, header: "sha1=" + sig, body: body},
		{name: "no prefix", secret: secret, header: sig, body: body},
		{name: "not hex", secret: secret, header: "sha256=" + strings.Repeat("zz", 32), body: body},
		{name: "truncated", secret: secret, header: "sha256=" + sig[:62], body: body},
		{name: "body changed by one byte", secret: secret, header: "sha256=" + sig, body: changed},
		{name: "body with a trailing newline", secret: secret, header: "sha256=" + sig, body: append(append([]byte{}, body...), '\n')},
		{name: "empty body", secret: secret, header: "sha256=" + sig, body: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := verifyGitHubSignature(tt.secret, tt.header, tt.body)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Equal(t, slipway.EUNAUTHORIZED, slipway.ErrorCode(err))
			if tt.name == "wrong secret" {
				// The answer says which secret to set.
				require.Contains(t, slipway.ErrorMessage(err), "slipway repo add")
			}
		})
	}
}

func TestSubject(t *testing.T) {
	t.Parallel()
	require.Equal(t, "subject", subject("subject\r\nbody"))
}
