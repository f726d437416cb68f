package forge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// readForgeFixture returns the bytes of one of slipway's own samples of forge.
func readForgeFixture(t testing.TB, forge, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sampleDir(forge), name))
	require.NoError(t, err)
	return b
}

// fixtureCase is the expected outcome of one shared fixture: a ping (its zen),
// a build (its trigger) or the reason it is ignored.
type fixtureCase struct {
	event   string
	trigger *slipway.Trigger
	ignored string
	zen     string
}

// runFixtureTable parses every file of dir matching glob with parse, as
// delivery; a file without a row, or a row without a file, fails the test.
func runFixtureTable(t *testing.T, dir, glob, delivery string, parse func(event, delivery string, payload []byte) (Event, error), tests map[string]fixtureCase) {
	files, err := filepath.Glob(filepath.Join(dir, glob))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	seen := map[string]bool{}
	for _, path := range files {
		name := filepath.Base(path)
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tt, ok := tests[name]
			require.True(t, ok, "fixture %s has no expectation in this table", name)
			payload, err := os.ReadFile(path)
			require.NoError(t, err)
			ev, err := parse(tt.event, delivery, payload)
			require.NoError(t, err)
			require.Equal(t, tt.event == "ping", ev.Ping, "ping")
			require.Equal(t, tt.zen, ev.Zen)
			require.Equal(t, tt.ignored, ev.Ignored)
			require.Equal(t, tt.trigger, ev.Trigger)
		})
	}
	for name := range tests {
		require.True(t, seen[name], "table names %s, which is not among the fixtures", name)
	}
}

func TestParseGitLabFixtures(t *testing.T) {
	t.Parallel()
	runFixtureTable(t, corpusDir(t, "gitlab"), "*.json", "d-1", parseGitLabEvent, map[string]fixtureCase{
		"push-branch.json": {event: "Push Hook", trigger: &slipway.Trigger{
			Forge: "gitlab", DeliveryID: "d-1", Event: "push", Owner: "mike", Name: "diaspora",
			CloneURL: "http://example.com/mike/diaspora.git", Ref: "refs/heads/master",
			Commit: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", Message: "fixed readme", Sender: "jsmith", DefaultBranch: "master"}},
		"tag_push-created.json": {event: "Tag Push Hook", trigger: &slipway.Trigger{
			Forge: "gitlab", DeliveryID: "d-1", Event: "push", Owner: "jsmith", Name: "example",
			CloneURL: "http://example.com/jsmith/example.git", Ref: "refs/tags/v1.0.0",
			Commit: "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7", Message: "Merge branch 'some-feature' into 'master'",
			Sender: "jsmith", DefaultBranch: "master"}},
		"push-branch-deleted-goscm.json": {event: "Push Hook", ignored: `branch "feature" was deleted`},
		"tag_push-deleted-goscm.json":    {event: "Tag Push Hook", ignored: `tag "v1.0.0" was deleted`},
	})
}

func TestParseGiteaFixtures(t *testing.T) {
	t.Parallel()
	runFixtureTable(t, corpusDir(t, "gitea"), "*.json", "d-1", parseGiteaEvent, map[string]fixtureCase{
		"create-tag-goscm.json": {event: "create", ignored: `event "create" does not start builds`},
		"push-branch-docs.json": {event: "push", trigger: &slipway.Trigger{
			Forge: "gitea", DeliveryID: "d-1", Event: "push", Owner: "gitea", Name: "webhooks",
			CloneURL: "http://localhost:3000/gitea/webhooks.git", Ref: "refs/heads/develop",
			Commit: "bffeb74224043ba2feb48d137756c8a9331c449a", Message: "Webhooks Yay!", Sender: "gitea", DefaultBranch: "main"}},
		"push-branch-goscm.json": {event: "push", trigger: &slipway.Trigger{
			Forge: "gitea", DeliveryID: "d-1", Event: "push", Owner: "gogits", Name: "hello-world",
			CloneURL: "http://try.gitea.io/gogits/hello-world.git", Ref: "refs/heads/master",
			Commit: "4522cbcefc20728a5b72b3a86af35e608622c514", Message: "Updated readme", Sender: "unknwon", DefaultBranch: "master"}},
		"push-branch-new-goplayground.json": {event: "push", trigger: &slipway.Trigger{
			Forge: "gitea", DeliveryID: "d-1", Event: "push", Owner: "example", Name: "example",
			CloneURL: "http://localhost:3000/example/example.git", Ref: "refs/heads/master",
			Commit: "67b56589a45103f891bdee7c0546e5d40bc02001", Message: "example", Sender: "example", DefaultBranch: "master"}},
	})
}

// TestSkipCI edits the head commit message of one push per forge: either
// marker, in any case, anywhere in the message, means no build.
func TestSkipCI(t *testing.T) {
	t.Parallel()
	type forgeCase struct {
		forge, file, event, message string
		parse                       func(event, delivery string, payload []byte) (Event, error)
	}
	forges := []forgeCase{
		{"github", "push-branch.json", "push", `"message": "Add the release notes\n\nLonger body of the commit."`, parseGitHubEvent},
		{"gitlab", "push-branch.json", "Push Hook", `"message": "Add the release notes\n"`, parseGitLabEvent},
		{"gitea", "push-branch.json", "push", `"message": "Add the release notes\n"`, parseGiteaEvent},
	}
	messages := map[string]string{
		`Fix typo [skip ci]`:                 "[skip ci]",
		`[ci skip] docs only`:                "[ci skip]",
		`Docs\n\nNothing to build [SKIP CI]`: "[SKIP CI]",
		`Mention skip ci without brackets`:   "",
		`[skip-ci] is not a marker`:          "",
	}
	for _, f := range forges {
		base := string(readForgeFixture(t, f.forge, f.file))
		// The head commit's message is the last occurrence (GitHub repeats it
		// in head_commit after the commits list).
		i := strings.LastIndex(base, f.message)
		require.GreaterOrEqual(t, i, 0, "%s: %s not in %s", f.forge, f.message, f.file)
		for msg, marker := range messages {
			t.Run(f.forge+"/"+msg, func(t *testing.T) {
				t.Parallel()
				payload := base[:i] + `"message": "` + msg + `"` + base[i+len(f.message):]
				ev, err := f.parse(f.event, "d-1", []byte(payload))
				require.NoError(t, err)
				if marker == "" {
					require.Empty(t, ev.Ignored)
					require.NotNil(t, ev.Trigger)
					return
				}
				require.Nil(t, ev.Trigger)
				require.Equal(t, "the head commit message contains "+marker, ev.Ignored)
			})
		}
	}
}

// TestParseGitLabEvent covers edits of the fixtures the table does not show.
func TestParseGitLabEvent(t *testing.T) {
	t.Parallel()
	base := string(readForgeFixture(t, "gitlab", "push-branch.json"))
	edit := func(old, new string) string {
		require.Contains(t, base, old)
		return strings.Replace(base, old, new, 1)
	}
	tests := []struct {
		name, event, payload string
		errContains, ignored string
		commit               string
	}{
		{name: "other event", event: "Note Hook", payload: `{}`, ignored: `event "Note Hook" does not start builds`},
		{name: "other event, not JSON", event: "Issue Hook", payload: `{`, errContains: "Malformed JSON payload"},
		{name: "truncated", event: "Push Hook", payload: base[:len(base)/2], errContains: "Malformed JSON payload"},
		{name: "empty object", event: "Push Hook", payload: `{}`, errContains: "no ref"},
		{name: "no project", event: "Push Hook",
			payload: `{"ref":"refs/heads/main","after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}`, errContains: "no project"},
		{name: "subgroup", event: "Push Hook",
			payload: edit(`"path_with_namespace": "platform/web-app"`, `"path_with_namespace": "group/sub/web-app"`), commit: sampleHead},
		{name: "bad clone url", event: "Push Hook",
			payload: edit(`"git_http_url": "https://gitlab.example.com/platform/web-app.git"`, `"git_http_url": "--upload-pack=x"`), errContains: "project.git_http_url is not a URL"},
		{name: "checkout_sha wins over after (annotated tag)", event: "Tag Push Hook",
			payload: edit(`"after": "3f1c9a7e5b2d4c6e8f0a1b2c3d4e5f60718293a4"`, `"after": "1111111111111111111111111111111111111111"`),
			commit:  "3f1c9a7e5b2d4c6e8f0a1b2c3d4e5f60718293a4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev, err := parseGitLabEvent(tt.event, "d-1", []byte(tt.payload))
			if tt.errContains != "" {
				require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err), "err: %v", err)
				require.Contains(t, slipway.ErrorMessage(err), tt.errContains)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.ignored, ev.Ignored)
			if tt.commit != "" {
				require.Equal(t, tt.commit, ev.Trigger.Commit)
			}
		})
	}
}

func TestVerifyGitLabToken(t *testing.T) {
	t.Parallel()
	require.NoError(t, verifyGitLabToken([]byte("s3cret-token"), "s3cret-token"))
	for name, header := range map[string]string{"missing": "", "wrong": "s3cret-tokem", "prefix": "s3cret", "longer": "s3cret-token "} {
		err := verifyGitLabToken([]byte("s3cret-token"), header)
		require.Equal(t, slipway.EUNAUTHORIZED, slipway.ErrorCode(err), name)
	}
}

// TestVerifyGiteaSignature uses GitHub's documented vector: Gitea computes the
// same HMAC-SHA256 and sends it as bare hex.
func TestVerifyGiteaSignature(t *testing.T) {
	t.Parallel()
	secret, body := []byte("It's a Secret to Everybody"), []byte("Hello, World!")
	const sig = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	ok := []http.Header{
		h("X-Gitea-Signature", sig),
		h("X-Forgejo-Signature", sig),
		h("X-Hub-Signature-256", "sha256="+sig),
		h("X-Forgejo-Signature", sig, "X-Gitea-Signature", sig),
	}
	for _, hd := range ok {
		require.NoError(t, verifyGiteaSignature(secret, hd, body), "%v", hd)
	}
	bad := []http.Header{
		h(),
		h("X-Gitea-Signature", "sha256="+sig),
		h("X-Gitea-Signature", strings.Repeat("0", 64)),
		h("X-Gitea-Signature", "zz"),
		h("X-Hub-Signature-256", sig),
		// The first header present is the one checked: a good one behind a bad
		// one does not help.
		h("X-Forgejo-Signature", strings.Repeat("0", 64), "X-Gitea-Signature", sig),
	}
	for _, hd := range bad {
		require.Equal(t, slipway.EUNAUTHORIZED, slipway.ErrorCode(verifyGiteaSignature(secret, hd, body)), "%v", hd)
	}
}

func signHex(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// signGitHub is the X-Hub-Signature-256 of body keyed with secret.
func signGitHub(secret string, body []byte) string { return "sha256=" + signHex(secret, body) }
