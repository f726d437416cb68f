package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
	"github.com/slipway-ci/slipway/promote"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testSecret   = "webhook-secret-for-tests"
	testToken    = "admin-token-for-tests"
	testRegistry = "registry.test:5000/ci"
	testPublic   = "http://slipway.test:8080"
	// testSecretKey seals per-repository secrets (SLIPWAY_SECRET_KEY).
	testSecretKey = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
)

// testBundle is what a handler test works with.
type testBundle struct {
	srv    *httptest.Server
	db     *postgres.DB
	builds *postgres.BuildService
	repos  *postgres.RepoService
	logs   *syncBuffer
}

// setupOpts changes a test's server.
type setupOpts struct {
	config func(*Config)
	// withDB changes the config with the test's database at hand.
	withDB   func(*postgres.DB, *Config)
	checks   []Check
	registry promote.Registry // nil: promotion answers 503
}

// setup starts the handler from New over a fresh, migrated database.
func setup(t testing.TB, opts *setupOpts) *testBundle {
	t.Helper()
	if opts == nil {
		opts = &setupOpts{}
	}
	db := pgtest.NewDB(t)
	builds := postgres.NewBuildService(db)
	sealer, err := slipway.NewSealer(testSecretKey)
	require.NoError(t, err)
	repos := postgres.NewRepoService(db, sealer)
	cfg := Config{
		GitHubWebhookSecret: testSecret,
		// Most tests send deliveries of repositories they never registered.
		AutoRegister: true,
		GitHubURL:    "https://github.com",
		GitLabURL:    "https://gitlab.example.com",
		GiteaURL:     "https://git.example.com",
		Registry:     testRegistry,
		AdminToken:   testToken,
		PublicURL:    testPublic + "/",
	}
	if opts.config != nil {
		opts.config(&cfg)
	}
	if opts.withDB != nil {
		opts.withDB(db, &cfg)
	}
	logs := &syncBuffer{}
	logger := zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logs))
	srv := httptest.NewServer(New(logger, cfg, builds, opts.checks, Services{
		Repos:        repos,
		Tokens:       postgres.NewTokenService(db),
		Sessions:     postgres.NewSessionService(db),
		Promotions:   postgres.NewPromotionService(db),
		Releases:     postgres.NewReleaseService(db),
		Integrations: postgres.NewIntegrationService(db),
		TestCases:    postgres.NewTestCaseService(db),
		Registry:     opts.registry,
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		// Whatever a test did, no secret may reach the log.
		require.NotContains(t, logs.String(), testSecret)
		require.NotContains(t, logs.String(), testToken)
	})
	return &testBundle{srv: srv, db: db, builds: builds, repos: repos, logs: logs}
}

// delivery is one webhook request.
type delivery struct {
	event    string
	id       string
	body     []byte
	sign     func(body []byte) string // nil: sign with testSecret
	header   http.Header
	chunked  bool // send without Content-Length
	noHeader []string
}

func (b *testBundle) post(t *testing.T, d delivery) (*http.Response, map[string]any) {
	t.Helper()
	var body io.Reader = bytes.NewReader(d.body)
	if d.chunked {
		body = io.MultiReader(body) // hides the length from net/http
	}
	req, err := http.NewRequest(http.MethodPost, b.srv.URL+"/webhooks/github", body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/test")
	req.Header.Set("X-GitHub-Event", d.event)
	req.Header.Set("X-GitHub-Delivery", d.id)
	sign := d.sign
	if sign == nil {
		sign = func(body []byte) string { return signGitHub(testSecret, body) }
	}
	req.Header.Set("X-Hub-Signature-256", sign(d.body))
	for k, v := range d.header {
		req.Header[k] = v
	}
	for _, k := range d.noHeader {
		req.Header.Del(k)
	}
	return do(t, b.srv.Client(), req)
}

// get sends an API request with the admin token, or with auth when it is set.
func (b *testBundle) get(t *testing.T, path string, auth ...string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.srv.URL+path, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testToken)
	if len(auth) > 0 {
		req.Header.Set("Authorization", auth[0])
	}
	return do(t, b.srv.Client(), req)
}

// do sends req and decodes a JSON answer; the raw body is under "_raw".
func do(t testing.TB, c *http.Client, req *http.Request) (*http.Response, map[string]any) {
	t.Helper()
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	out := map[string]any{"_raw": string(raw)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		require.NoError(t, json.Unmarshal(raw, &out), "answer is not JSON: %s", raw)
		out["_raw"] = string(raw)
	}
	return resp, out
}

func signGitHub(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// signHex is the bare hex HMAC-SHA256 that Gitea and Forgejo send.
func signHex(secret string, body []byte) string {
	return strings.TrimPrefix(signGitHub(secret, body), "sha256=")
}

// requireError checks a JSON error answer.
func requireError(t *testing.T, resp *http.Response, out map[string]any, status int, code string) string {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, "answer: %s", out["_raw"])
	e, ok := out["error"].(map[string]any)
	require.True(t, ok, "no error object in %s", out["_raw"])
	require.Equal(t, code, e["code"])
	msg, _ := e["message"].(string)
	require.NotEmpty(t, msg)
	return msg
}

// requireNoRows checks that nothing was written: no repository, build, job or
// delivery.
func (b *testBundle) requireNoRows(t *testing.T) {
	t.Helper()
	for _, table := range []string{"repos", "builds", "jobs", "webhook_deliveries", "forge_statuses"} {
		require.Equal(t, 0, b.count(t, table), "rows in %s", table)
	}
}

func (b *testBundle) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	require.NoError(t, b.db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n))
	return n
}

func buildIDOf(t *testing.T, out map[string]any) int64 {
	t.Helper()
	f, ok := out["build_id"].(float64)
	require.True(t, ok, "no build_id in %s", out["_raw"])
	return int64(f)
}

// syncBuffer is a bytes.Buffer that handlers may log into concurrently.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func TestGitHubWebhook(t *testing.T) {
	t.Parallel()

	t.Run("BadSignatureWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		body := readFixture(t, "push-branch.json")
		changed := bytes.Clone(body)
		changed[len(changed)/2] ^= 1

		for name, d := range map[string]delivery{
			"wrong secret":  {sign: func(b []byte) string { return signGitHub("other", b) }},
			"missing":       {noHeader: []string{"X-Hub-Signature-256"}},
			"sha1 prefix":   {sign: func(b []byte) string { return "sha1=" + strings.TrimPrefix(signGitHub(testSecret, b), "sha256=") }},
			"body changed":  {sign: func([]byte) string { return signGitHub(testSecret, body) }, body: changed},
			"empty header":  {sign: func([]byte) string { return "" }},
			"garbage value": {sign: func([]byte) string { return "sha256=xyz" }},
		} {
			t.Run(name, func(t *testing.T) {
				d.event, d.id = "push", "d-"+name
				if d.body == nil {
					d.body = body
				}
				resp, out := b.post(t, d)
				requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
			})
		}
		b.requireNoRows(t)
	})

	t.Run("MalformedJSON", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		resp, out := b.post(t, delivery{event: "push", id: "d-1", body: []byte(`{"ref": "refs/heads/main",`)})
		msg := requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
		require.Contains(t, msg, "unexpected end of JSON input")
		b.requireNoRows(t)
	})

	t.Run("OverCap", func(t *testing.T) {
		t.Parallel()
		body := readFixture(t, "push-branch.json")
		b := setup(t, &setupOpts{config: func(c *Config) { c.MaxWebhookBytes = int64(len(body)) - 1 }})
		for _, chunked := range []bool{false, true} {
			t.Run("chunked="+strconv.FormatBool(chunked), func(t *testing.T) {
				resp, out := b.post(t, delivery{event: "push", id: "d-1", body: body, chunked: chunked})
				requireError(t, resp, out, http.StatusRequestEntityTooLarge, slipway.ETOOLARGE)
			})
		}
		b.requireNoRows(t)

		// At exactly the cap it goes through.
		b2 := setup(t, &setupOpts{config: func(c *Config) { c.MaxWebhookBytes = int64(len(body)) }})
		resp, out := b2.post(t, delivery{event: "push", id: "d-1", body: body, chunked: true})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
	})

	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		resp, out := b.post(t, delivery{event: "ping", id: "d-ping", body: readFixture(t, "ping.json")})
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.Equal(t, true, out["ok"])
		require.Equal(t, "Keep it logically awesome.", out["zen"])
		require.NotEmpty(t, resp.Header.Get("X-Request-ID"))
		b.requireNoRows(t)
	})

	t.Run("PushQueuesBuild", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		resp, out := b.post(t, delivery{event: "push", id: "d-push", body: readFixture(t, "push-branch.json")})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		id := buildIDOf(t, out)
		wantURL := testPublic + "/api/v1/builds/" + strconv.FormatInt(id, 10)
		require.Equal(t, wantURL, out["url"])
		require.Equal(t, wantURL, resp.Header.Get("Location"))
		require.Equal(t, false, out["duplicate"])
		// The answer came after the commit: the build and its job are there.
		require.Equal(t, 1, b.count(t, "jobs"))

		u, err := url.Parse(out["url"].(string))
		require.NoError(t, err)
		resp, got := b.get(t, u.Path)
		require.Equal(t, http.StatusOK, resp.StatusCode, got["_raw"])
		require.EqualValues(t, id, got["id"])
		require.Equal(t, "octo-org/hello-app", got["repo"])
		require.Equal(t, "github", got["forge"])
		require.Equal(t, "refs/heads/main", got["ref"])
		require.Equal(t, "3f1c9a7e5b2d4c6e8f0a1b2c3d4e5f60718293a4", got["commit"])
		require.Equal(t, "Add the release notes", got["message"])
		require.Equal(t, "mona", got["sender"])
		require.Equal(t, "d-push", got["delivery_id"])
		require.Equal(t, "https://github.com/octo-org/hello-app.git", got["clone_url"])
		require.Equal(t, string(slipway.BuildQueued), got["state"])
		require.Equal(t, testRegistry+"/octo-org/hello-app", got["image"])

		require.Contains(t, b.logs.String(), `"build_id":`+strconv.FormatInt(id, 10))
		require.Contains(t, b.logs.String(), `"delivery":"d-push"`)
		require.Contains(t, b.logs.String(), `"repo":"octo-org/hello-app"`)
	})

	t.Run("FormEncodedPush", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		body := []byte(url.Values{"payload": {string(readFixture(t, "push-tag-lightweight.json"))}}.Encode())
		resp, out := b.post(t, delivery{event: "push", id: "d-form", body: body,
			header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		b2, err := b.builds.FindBuildByID(context.Background(), buildIDOf(t, out))
		require.NoError(t, err)
		require.Equal(t, "refs/tags/v1.2.3", b2.Ref)
	})

	t.Run("RedeliverySameBuild", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		d := delivery{event: "push", id: "d-again", body: readFixture(t, "push-branch-created.json")}
		resp, first := b.post(t, d)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, first["_raw"])
		resp, second := b.post(t, d)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, second["_raw"])
		require.Equal(t, first["build_id"], second["build_id"])
		require.Equal(t, true, second["duplicate"])
		require.Equal(t, 1, b.count(t, "builds"))

		// A new delivery of the same push is a new build.
		d.id = "d-other"
		resp, third := b.post(t, d)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, third["_raw"])
		require.NotEqual(t, first["build_id"], third["build_id"])
	})

	t.Run("SameDeliveryConcurrently", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		body := readFixture(t, "push-branch.json")
		const n = 8
		var (
			start = make(chan struct{})
			wg    sync.WaitGroup
			ids   [n]int64
			dups  [n]bool
		)
		for i := range n {
			wg.Go(func() {
				<-start // all requests leave at once
				resp, out := b.post(t, delivery{event: "push", id: "d-race", body: body})
				if resp.StatusCode != http.StatusAccepted {
					t.Errorf("request %d: %d %s", i, resp.StatusCode, out["_raw"])
					return
				}
				ids[i], dups[i] = buildIDOf(t, out), out["duplicate"].(bool)
			})
		}
		close(start)
		wg.Wait()
		created := 0
		for i := range n {
			require.Equal(t, ids[0], ids[i], "request %d got another build", i)
			if !dups[i] {
				created++
			}
		}
		require.Equal(t, 1, created, "exactly one request creates the build")
		require.Equal(t, 1, b.count(t, "builds"))
		require.Equal(t, 1, b.count(t, "jobs"))
	})

	t.Run("DeletionIgnored", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		for _, f := range []string{"push-branch-deleted.json", "push-tag-deleted.json"} {
			resp, out := b.post(t, delivery{event: "push", id: "d-" + f, body: readFixture(t, f)})
			require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
			require.Contains(t, out["ignored"], "was deleted")
			require.NotContains(t, out, "build_id")
		}
		b.requireNoRows(t)
	})

	t.Run("OtherEventIgnored", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		resp, out := b.post(t, delivery{event: "issues", id: "d-issue", body: readFixture(t, "pull_request-synchronize.json")})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
		require.Equal(t, `event "issues" does not start builds`, out["ignored"])
		b.requireNoRows(t)
	})

	t.Run("AllowedOwners", func(t *testing.T) {
		t.Parallel()
		body := readFixture(t, "push-branch.json")

		b := setup(t, &setupOpts{config: func(c *Config) { c.GitHubAllowedOwners = []string{"other-org", " other "} }})
		resp, out := b.post(t, delivery{event: "push", id: "d-1", body: body})
		msg := requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN)
		require.Contains(t, msg, `"octo-org"`)
		b.requireNoRows(t)

		b = setup(t, &setupOpts{config: func(c *Config) { c.GitHubAllowedOwners = []string{"other-org", "OCTO-ORG"} }})
		resp, out = b.post(t, delivery{event: "push", id: "d-1", body: body})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
	})

	t.Run("BadHeaders", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		body := readFixture(t, "push-branch.json")

		resp, out := b.post(t, delivery{event: "push", body: body, noHeader: []string{"X-GitHub-Delivery"}})
		require.Contains(t, requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID), "X-GitHub-Delivery")

		resp, out = b.post(t, delivery{event: "push", id: strings.Repeat("d", 201), body: body})
		require.Contains(t, requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID), "X-GitHub-Delivery")

		resp, out = b.post(t, delivery{id: "d-1", body: body, noHeader: []string{"X-GitHub-Event"}})
		require.Contains(t, requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID), "X-GitHub-Event")
		b.requireNoRows(t)
	})

	t.Run("InvalidPush", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		body := strings.Replace(string(readFixture(t, "push-branch.json")),
			`"clone_url": "https://github.com/octo-org/hello-app.git"`, `"clone_url": ""`, 1)
		resp, out := b.post(t, delivery{event: "push", id: "d-1", body: []byte(body)})
		require.Contains(t, requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID), "clone_url")
		b.requireNoRows(t)
	})

	t.Run("SecretUnset", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &setupOpts{config: func(c *Config) { c.GitHubWebhookSecret = "" }})
		resp, out := b.post(t, delivery{event: "push", id: "d-1", body: readFixture(t, "push-branch.json"),
			sign: func(b []byte) string { return signGitHub("", b) }})
		require.Contains(t, requireError(t, resp, out, http.StatusServiceUnavailable, slipway.EUNAVAILABLE), "SLIPWAY_GITHUB_WEBHOOK_SECRET")
		b.requireNoRows(t)
	})

	t.Run("WrongMethod", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		resp, out := b.get(t, "/webhooks/github")
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, out["_raw"])
		require.Equal(t, "POST", resp.Header.Get("Allow"))
	})
}

func TestBuildsAPI(t *testing.T) {
	t.Parallel()

	// enqueue makes a build the way a webhook would.
	enqueue := func(t *testing.T, b *testBundle, owner, name, ref, delivery string) *slipway.Build {
		t.Helper()
		res, err := b.builds.EnqueueTrigger(context.Background(), slipway.Trigger{
			Forge: "github", DeliveryID: delivery, Event: "push",
			Owner: owner, Name: name, CloneURL: "https://github.com/" + owner + "/" + name + ".git",
			Ref: ref, Commit: strings.Repeat("ab", 20), Message: "m", Sender: "s",
		}, testRegistry+"/"+strings.ToLower(owner+"/"+name))
		require.NoError(t, err)
		return res.Build
	}
	ids := func(t *testing.T, out map[string]any) []int64 {
		t.Helper()
		list, ok := out["builds"].([]any)
		require.True(t, ok, "no builds list in %s", out["_raw"])
		var ids []int64
		for _, b := range list {
			ids = append(ids, int64(b.(map[string]any)["id"].(float64)))
		}
		return ids
	}

	t.Run("Unauthorized", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		for name, auth := range map[string]string{
			"none":          "",
			"wrong token":   "Bearer not-the-token",
			"token prefix":  "Bearer " + testToken[:len(testToken)-1],
			"token suffix":  "Bearer " + testToken + "x",
			"basic scheme":  "Basic " + testToken,
			"bare token":    testToken,
			"bearer no tok": "Bearer ",
		} {
			for _, path := range []string{"/api/v1/builds", "/api/v1/builds/1", "/api/v1/builds/1/logs", "/api/v1/builds/x"} {
				t.Run(name+path, func(t *testing.T) {
					resp, out := b.get(t, path, auth)
					requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
					require.Equal(t, `Bearer realm="slipway"`, resp.Header.Get("WWW-Authenticate"))
				})
			}
		}
		// The scheme is case-insensitive (RFC 9110).
		resp, out := b.get(t, "/api/v1/builds", "bearer "+testToken)
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
	})

	t.Run("TokenUnset", func(t *testing.T) {
		t.Parallel()
		// Without the bootstrap token only stored tokens open the API.
		b := setup(t, &setupOpts{config: func(c *Config) { c.AdminToken = "" }})
		resp, out := b.get(t, "/api/v1/builds", "Bearer ")
		requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
		resp, out = b.get(t, "/api/v1/builds", "Bearer x")
		requireError(t, resp, out, http.StatusUnauthorized, slipway.EUNAUTHORIZED)
		// Without either, the API is locked.
		srv := httptest.NewServer(New(zerolog.Nop(), Config{}, nil, nil, Services{}))
		t.Cleanup(srv.Close)
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/builds", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer x")
		resp, out = do(t, srv.Client(), req)
		requireError(t, resp, out, http.StatusServiceUnavailable, slipway.EUNAVAILABLE)
	})

	t.Run("View", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		build := enqueue(t, b, "Octo", "Repo", "refs/tags/v1", "d-1")

		resp, out := b.get(t, "/api/v1/builds/"+strconv.FormatInt(build.ID, 10))
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		var got slipway.Build
		require.NoError(t, json.Unmarshal([]byte(out["_raw"].(string)), &got))
		require.Equal(t, build.ID, got.ID)
		require.Equal(t, "Octo/Repo", got.Repo)
		require.Equal(t, "refs/tags/v1", got.Ref)
		require.Equal(t, slipway.BuildQueued, got.State)

		resp, out = b.get(t, "/api/v1/builds/"+strconv.FormatInt(build.ID+1000, 10))
		requireError(t, resp, out, http.StatusNotFound, slipway.ENOTFOUND)
		for _, bad := range []string{"abc", "0", "-1", "1.5", "99999999999999999999"} {
			resp, out = b.get(t, "/api/v1/builds/"+bad)
			requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
		}
	})

	t.Run("List", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)

		resp, out := b.get(t, "/api/v1/builds")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.JSONEq(t, `{"builds":[]}`, out["_raw"].(string))

		b1 := enqueue(t, b, "Octo", "One", "refs/heads/main", "d-1")
		b2 := enqueue(t, b, "Octo", "Two", "refs/heads/main", "d-2")
		b3 := enqueue(t, b, "Octo", "One", "refs/tags/v1", "d-3")

		_, out = b.get(t, "/api/v1/builds")
		require.Equal(t, []int64{b3.ID, b2.ID, b1.ID}, ids(t, out), "newest first")
		_, out = b.get(t, "/api/v1/builds?repo=octo/one")
		require.Equal(t, []int64{b3.ID, b1.ID}, ids(t, out))
		_, out = b.get(t, "/api/v1/builds?ref=main")
		require.Equal(t, []int64{b2.ID, b1.ID}, ids(t, out))
		_, out = b.get(t, "/api/v1/builds?ref=refs/tags/v1")
		require.Equal(t, []int64{b3.ID}, ids(t, out))
		_, out = b.get(t, "/api/v1/builds?state=queued&limit=2")
		require.Equal(t, []int64{b3.ID, b2.ID}, ids(t, out))
		_, out = b.get(t, "/api/v1/builds?state=succeeded")
		require.Empty(t, ids(t, out))
		_, out = b.get(t, "/api/v1/builds?limit=2&before="+strconv.FormatInt(b2.ID, 10))
		require.Equal(t, []int64{b1.ID}, ids(t, out))
	})

	t.Run("BadFilters", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		for query, want := range map[string]string{
			"state=done":       `Unknown state "done"`,
			"state=QUEUED":     `Unknown state "QUEUED"`,
			"limit=0":          "limit",
			"limit=501":        "limit",
			"limit=ten":        "limit",
			"before=0":         "before",
			"before=x":         "before",
			"repo=no-slash":    "owner/name",
			"state=running%00": "Unknown state",
		} {
			t.Run(query, func(t *testing.T) {
				resp, out := b.get(t, "/api/v1/builds?"+query)
				require.Contains(t, requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID), want)
			})
		}
	})

	t.Run("Logs", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		build := enqueue(t, b, "Octo", "Logs", "refs/heads/main", "d-1")
		path := "/api/v1/builds/" + strconv.FormatInt(build.ID, 10) + "/logs"

		resp, out := b.get(t, path)
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"))

		now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		require.NoError(t, b.builds.AppendLog(context.Background(), build.ID, []slipway.LogLine{
			{Time: now, Step: "checkout", Text: "fetching abababab"},
			{Time: now, Platform: "linux/arm64", Step: "build", Text: "RUN uname -m"},
		}))
		resp, out = b.get(t, path)
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.Contains(t, out["_raw"], "fetching abababab")
		require.Contains(t, out["_raw"], "RUN uname -m")
		require.Less(t, strings.Index(out["_raw"].(string), "fetching"), strings.Index(out["_raw"].(string), "RUN uname"))

		resp, out = b.get(t, "/api/v1/builds/"+strconv.FormatInt(build.ID+1000, 10)+"/logs")
		requireError(t, resp, out, http.StatusNotFound, slipway.ENOTFOUND)
		resp, out = b.get(t, "/api/v1/builds/nope/logs")
		requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
	})
}

func TestProbes(t *testing.T) {
	t.Parallel()

	t.Run("Healthz", func(t *testing.T) {
		t.Parallel()
		srv := newTestServer(t, nil)
		resp, out := getPath(t, srv, "/healthz")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "ok\n", out["_raw"])
	})

	t.Run("ReadyzWithDatabase", func(t *testing.T) {
		t.Parallel()
		var db *postgres.DB
		b := setup(t, &setupOpts{checks: []Check{
			{Name: "database", Func: func(ctx context.Context) error { return db.Ping(ctx) }},
			{Name: "schema", Func: func(ctx context.Context) error { return db.SchemaCurrent(ctx) }},
		}})
		db = b.db
		resp, out := b.get(t, "/readyz", "")
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.JSONEq(t, `{"checks":{"database":"ok","schema":"ok"}}`, out["_raw"].(string))
	})

	t.Run("ReadyzFailing", func(t *testing.T) {
		t.Parallel()
		srv := newTestServer(t, []Check{
			{Name: "database", Func: func(ctx context.Context) error { return nil }},
			{Name: "buildkit", Func: func(ctx context.Context) error {
				return errors.New("dial unix /run/secret.sock: password=hunter2")
			}},
			{Name: "schema", Func: func(ctx context.Context) error {
				return slipway.Errorf(slipway.EUNAVAILABLE, "the database schema is behind")
			}},
			{Name: "slow", Func: func(ctx context.Context) error {
				<-ctx.Done() // only the 2s deadline ends it
				return ctx.Err()
			}},
		})
		resp, out := getPath(t, srv, "/readyz")
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, out["_raw"])
		checks := out["checks"].(map[string]any)
		require.Equal(t, "ok", checks["database"])
		require.Equal(t, "failed (see the server log)", checks["buildkit"])
		require.Equal(t, "the database schema is behind", checks["schema"])
		require.Equal(t, "timed out after 2s", checks["slow"])
		require.NotContains(t, out["_raw"], "hunter2")
	})
}

// newTestServer serves New without a database, for routes that need none.
func newTestServer(t *testing.T, checks []Check) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(New(zerolog.New(zerolog.NewTestWriter(t)), Config{AdminToken: testToken}, nil, checks, Services{}))
	t.Cleanup(srv.Close)
	return srv
}

func getPath(t *testing.T, srv *httptest.Server, path string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	require.NoError(t, err)
	return do(t, srv.Client(), req)
}
