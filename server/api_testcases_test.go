package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
)

// TestBuildTestCases: the build JSON carries the counts of a test's JUnit
// cases, GET /api/v1/builds/{id}/test-cases the cases (failures first), and
// the build page lists them with the counts per platform and in all.
func TestBuildTestCases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, nil)
	build := queueBuild(t, b).Build
	cases := postgres.NewTestCaseService(b.db)
	amd := []slipway.TestCase{
		{Name: "test_publish", Classname: "tests.mqtt", TimeSeconds: 0.5, Status: slipway.CasePassed},
		{Name: "test_subscribe", Classname: "tests.mqtt", TimeSeconds: 1.25, Status: slipway.CaseFailed, Message: "AssertionError: <no message> & more"},
		{Name: "test_arm_only", Status: slipway.CaseSkipped, Message: "needs arm64"},
	}
	require.NoError(t, cases.ReplaceTestCases(ctx, build.ID, "pytest", "linux/amd64", amd))
	require.NoError(t, cases.ReplaceTestCases(ctx, build.ID, "pytest", "linux/arm64", amd[:1]))
	tests := []slipway.TestResult{
		{Name: "pytest", Platform: "linux/amd64", ExitCode: 1, Error: "exit code 1", Cases: &slipway.TestCaseCounts{Passed: 1, Failed: 1, Skipped: 1}},
		{Name: "pytest", Platform: "linux/arm64", Passed: true, Cases: &slipway.TestCaseCounts{Passed: 1}},
		{Name: "smoke", Platform: "linux/arm64", Passed: true},
	}
	tj, err := json.Marshal(tests)
	require.NoError(t, err)
	_, err = b.db.Pool().Exec(ctx, `UPDATE builds SET tests = $2::jsonb WHERE id = $1`, build.ID, tj)
	require.NoError(t, err)

	resp, out := b.get(t, fmt.Sprintf("/api/v1/builds/%d", build.ID))
	require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
	var view struct{ Tests []slipway.TestResult }
	require.NoError(t, json.Unmarshal([]byte(out["_raw"].(string)), &view))
	require.Equal(t, tests, view.Tests)
	require.NotContains(t, out["_raw"], "test_subscribe", "the build JSON holds counts, not cases")
	require.NotContains(t, out["_raw"], `"cases":null`)

	resp, out = b.get(t, fmt.Sprintf("/api/v1/builds/%d/test-cases", build.ID))
	require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
	var list struct {
		TestCases []slipway.TestCase `json:"test_cases"`
	}
	require.NoError(t, json.Unmarshal([]byte(out["_raw"].(string)), &list))
	require.Len(t, list.TestCases, 4)
	require.Equal(t, slipway.TestCase{Test: "pytest", Platform: "linux/amd64", Name: "test_subscribe", Classname: "tests.mqtt",
		TimeSeconds: 1.25, Status: slipway.CaseFailed, Message: "AssertionError: <no message> & more"}, list.TestCases[0])
	require.Equal(t, slipway.CaseSkipped, list.TestCases[1].Status)

	viewer := "Bearer " + createToken(t, b.db, "qa", slipway.RoleViewer)
	resp, _ = b.get(t, fmt.Sprintf("/api/v1/builds/%d/test-cases", build.ID), viewer)
	require.Equal(t, http.StatusOK, resp.StatusCode, "a viewer reads them")
	resp, _ = b.get(t, fmt.Sprintf("/api/v1/builds/%d/test-cases", build.ID), "Bearer nope")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, out = b.get(t, fmt.Sprintf("/api/v1/builds/%d/test-cases", build.ID+1000))
	require.Equal(t, http.StatusNotFound, resp.StatusCode, out["_raw"])
	resp, _ = b.get(t, "/api/v1/builds/x/test-cases")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	// A build without reports: an empty list.
	res, err := b.builds.EnqueueTrigger(ctx, slipway.Trigger{Forge: "github", DeliveryID: "d-other", Event: "push",
		Owner: "acme", Name: "app", CloneURL: "https://github.com/acme/app.git", Ref: "refs/heads/dev",
		Commit: strings.Repeat("cd", 20)}, testRegistry+"/acme/app")
	require.NoError(t, err)
	other := res.Build
	resp, out = b.get(t, fmt.Sprintf("/api/v1/builds/%d/test-cases", other.ID))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"test_cases": []}`, out["_raw"].(string))

	br := newBrowser(t, b.srv.URL)
	resp, _ = br.do(http.MethodPost, "/signin", url.Values{"token": {testToken}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	resp, page := br.do(http.MethodGet, "/builds/"+strconv.FormatInt(build.ID, 10), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, page)
	require.Contains(t, page, `id="case-summary">Test cases: 2 passed, 1 failed, 0 errors, 1 skipped`)
	require.Contains(t, page, "linux/amd64: 1 passed, 1 failed, 0 errors, 1 skipped")
	require.Contains(t, page, "linux/arm64: 1 passed, 0 failed, 0 errors, 0 skipped")
	require.Contains(t, page, "AssertionError: &lt;no message&gt; &amp; more", "the message is escaped")
	section := page[strings.Index(page, `id="test-cases"`):]
	require.Less(t, strings.Index(section, "test_subscribe"), strings.Index(section, "test_publish"), "failures first")
	require.Contains(t, page, "cases 1 passed, 1 failed, 0 errors, 1 skipped", "each test shows its counts")

	_, page = br.do(http.MethodGet, "/builds/"+strconv.FormatInt(other.ID, 10), nil)
	require.NotContains(t, page, `id="test-cases"`)
}
