package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
	"github.com/slipway-ci/slipway/server"
)

func TestParseInterspersed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		pos  []string
		json bool
	}{
		{[]string{"1", "v1.0.0", "--json"}, []string{"1", "v1.0.0"}, true},
		{[]string{"--json", "1", "v1.0.0"}, []string{"1", "v1.0.0"}, true},
		{[]string{"1", "--json", "v1.0.0"}, []string{"1", "v1.0.0"}, true},
		{[]string{"1", "--", "--json"}, []string{"1", "--json"}, false},
		{[]string{"1", "v1"}, []string{"1", "v1"}, false},
	} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		j := fs.Bool("json", false, "")
		pos, err := parseInterspersed(fs, tc.args)
		require.NoError(t, err, tc.args)
		require.Equal(t, tc.pos, pos, tc.args)
		require.Equal(t, tc.json, *j, tc.args)
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	_, err := parseInterspersed(fs, []string{"1", "--nope"})
	require.Equal(t, exitUsage, exitCode(err))
}

// TestBuildCommands runs logs, cancel, retry, wait and builds get against the
// real HTTP handler and database, with builds moved along by the job queue
// as a worker moves them.
func TestBuildCommands(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.NewDBURL(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	builds := postgres.NewBuildService(db)
	jobs := postgres.NewJobQueue(db, zerolog.Nop())
	logs := postgres.NewLogHub(db, zerolog.Nop())
	go logs.Run(ctx)
	srv := httptest.NewServer(server.New(zerolog.Nop(), server.Config{AdminToken: "admin-token-for-cli", Logs: logs}, builds, nil,
		server.Services{Tokens: postgres.NewTokenService(db), Promotions: postgres.NewPromotionService(db), Repos: postgres.NewRepoService(db, nil)}))
	t.Cleanup(srv.Close)
	_, err := builds.EnqueueTrigger(ctx, slipway.Trigger{Forge: "github", DeliveryID: "d1", Event: "push",
		Owner: "acme", Name: "app", CloneURL: "https://github.com/acme/app.git", Ref: "refs/heads/main",
		Commit: strings.Repeat("ef", 20), Message: "Add the thing\n\nLonger text", Sender: "dev-one"}, "127.0.0.1:1/acme/app")
	require.NoError(t, err)

	cli := newCLI(ctx, map[string]string{"SLIPWAY_SERVER": srv.URL, "SLIPWAY_TOKEN": "admin-token-for-cli"})

	// Build 1 runs and writes a line; logs --follow streams until it ends.
	claimed, err := jobs.JobClaim(ctx, "w1", 1)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	require.NoError(t, builds.AppendLog(ctx, 1, []slipway.LogLine{{Time: time.Now(), Step: "checkout", Text: "Checking out efef"}}))
	type result struct {
		out, errOut string
		code        int
	}
	followed := make(chan result, 1)
	go func() {
		out, errOut, code := cli("logs", "1", "--follow")
		followed <- result{out, errOut, code}
	}()
	_, errOut, code := cli("wait", "1", "--timeout", "300ms", "--interval", "100ms")
	require.Equal(t, exitWaitTimeout, code, errOut)
	require.Contains(t, errOut, "still running")
	require.NoError(t, builds.AppendLog(ctx, 1, []slipway.LogLine{{Time: time.Now(), Platform: "linux/arm64", Step: "build", Text: "RUN uname -m"}}))
	succeeded, digest := slipway.BuildSucceeded, "sha256:"+strings.Repeat("ab", 32)
	require.NoError(t, jobs.JobComplete(ctx, claimed[0], slipway.BuildUpdate{State: &succeeded, IndexDigest: &digest}))
	select {
	case r := <-followed:
		require.Equal(t, 0, r.code, r.errOut)
		require.Equal(t, "Checking out efef\n[linux/arm64] RUN uname -m\n", r.out)
	case <-time.After(30 * time.Second):
		t.Fatal("logs --follow did not end with the build")
	}
	out, errOut, code := cli("logs", "1")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "RUN uname -m")

	out, errOut, code = cli("wait", "--interval", "100ms", "1")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "build 1 succeeded\n", out)

	// builds get: text by default, JSON with --json before or after the id.
	out, errOut, code = cli("builds", "get", "1")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^State\s+succeeded$`, out)
	require.Regexp(t, `(?m)^Message\s+Add the thing$`, out)
	require.Regexp(t, `(?m)^Index digest\s+`+digest+`$`, out)
	require.Regexp(t, `(?m)^Created\s+\d{4}-\d\d-\d\dT`, out)
	for _, args := range [][]string{{"builds", "get", "1", "--json"}, {"builds", "get", "--json", "1"}} {
		out, errOut, code = cli(args...)
		require.Equal(t, 0, code, errOut)
		var b slipway.Build
		require.NoError(t, json.Unmarshal([]byte(out), &b), out)
		require.Equal(t, slipway.BuildSucceeded, b.State)
	}

	// A flag after the positional arguments is a flag, not a tag.
	_, errOut, code = cli("promote", "1", "--json")
	require.Equal(t, exitUsage, code, errOut)
	require.Contains(t, errOut, "at least one tag")

	// retry queues build 2; wait on it times out, cancel ends it, wait says so.
	out, errOut, code = cli("retry", "1", "--json")
	require.Equal(t, 0, code, errOut)
	var retried struct {
		BuildID int64 `json:"build_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &retried))
	require.Equal(t, int64(2), retried.BuildID)
	_, errOut, code = cli("retry", "2")
	require.Equal(t, exitRefused, code, "a queued build cannot be retried")
	require.Contains(t, errOut, "only a finished build")
	out, errOut, code = cli("cancel", "2")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "build 2 canceled\n", out)
	_, _, code = cli("cancel", "2")
	require.Equal(t, exitRefused, code, "a finished build cannot be canceled")
	_, errOut, code = cli("wait", "2")
	require.Equal(t, exitBuildCanceled, code, errOut)

	// Build 3 fails: wait and logs --follow exit 7.
	_, errOut, code = cli("retry", "--json", "1")
	require.Equal(t, 0, code, errOut)
	claimed, err = jobs.JobClaim(ctx, "w1", 1)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	failed, msg := slipway.BuildFailed, "the Dockerfile's RUN failed"
	require.NoError(t, jobs.JobComplete(ctx, claimed[0], slipway.BuildUpdate{State: &failed, Error: &msg}))
	_, errOut, code = cli("wait", "3")
	require.Equal(t, exitBuildFailed, code)
	require.Contains(t, errOut, msg)
	_, _, code = cli("logs", "3", "-f")
	require.Equal(t, exitBuildFailed, code)

	_, _, code = cli("wait", "99")
	require.Equal(t, exitNotFound, code)
	_, _, code = cli("logs", "99")
	require.Equal(t, exitNotFound, code)
	_, _, code = cli("cancel")
	require.Equal(t, exitUsage, code)
}

// newCLI returns a runner of slipway's commands in-process with env as the
// environment: it answers stdout, stderr (with the error's text) and the exit
// code.
func newCLI(ctx context.Context, env map[string]string) func(args ...string) (string, string, int) {
	return func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		err := run(ctx, append([]string{"slipway"}, args...), func(k string) string { return env[k] }, &out, &errOut)
		code := 0
		if err != nil {
			code = exitCode(err)
			errOut.WriteString(err.Error())
		}
		return out.String(), errOut.String(), code
	}
}
