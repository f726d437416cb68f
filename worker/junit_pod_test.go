package worker

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/pod"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
	"github.com/slipway-ci/slipway/test/testenv"
)

// TestJUnitReportInPod: a test's runner writes a JUnit report in a real
// Podman Pod and fails; the worker copies the report out, stores its cases
// in PostgreSQL and counts them in the test's result. A missing or invalid
// report is a log line and leaves the result as the exit code made it.
func TestJUnitReportInPod(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed: run `make deps`")
	}
	ctx := context.Background()
	db := pgtest.NewDB(t)
	host := testenv.StartRegistry(t)
	ref, err := testenv.PushBaseImage(ctx, host)
	require.NoError(t, err)
	digests, err := testenv.PlatformDigests(ref)
	require.NoError(t, err)
	p := slipway.PlatformDigest{Platform: "linux/amd64", Digest: digests["linux/amd64"]}
	require.NotEmpty(t, p.Digest)

	builds := postgres.NewBuildService(db)
	res, err := builds.EnqueueTrigger(ctx, slipway.Trigger{Forge: "github", DeliveryID: "d-junit", Event: "push",
		Owner: "acme", Name: "app", CloneURL: "https://github.com/acme/app.git", Ref: "refs/heads/main",
		Commit: strings.Repeat("ab", 20)}, host+"/"+testenv.BaseImageRepo)
	require.NoError(t, err)
	build := res.Build
	rt, err := pod.NewPodman(ctx, pod.PodmanConfig{Insecure: true, ConfDir: t.TempDir()})
	require.NoError(t, err)
	cases := postgres.NewTestCaseService(db)
	w := &Worker{cfg: Config{Pods: rt, TestCases: cases, PodLimits: pod.Limits{CPU: "1", Memory: "256Mi"}}}

	cfg, err := ParseRepoConfig([]byte(`platforms: [linux/amd64]
tests:
  - name: pytest
    junit: /reports/junit.xml
    run: |
      mkdir -p /reports
      cat > /reports/junit.xml <<'XML'
      <testsuites><testsuite name="pytest">
        <testcase classname="tests.test_mqtt" name="test_publish" time="0.010"/>
        <testcase classname="tests.test_mqtt" name="test_subscribe" time="0.5"><failure message="assert 1 == 2">trace</failure></testcase>
        <testcase classname="tests.test_vdb" name="test_arm" time="0"><skipped message="arm64 only"/></testcase>
      </testsuite></testsuites>
      XML
      echo wrote the report
      exit 1
  - name: no-report
    junit: /reports/none.xml
    run: "true"
  - name: bad-report
    junit: /tmp/junit.xml
    run: echo '<html>not junit</html>' > /tmp/junit.xml
`))
	require.NoError(t, err)
	sink := newLogSink(build.ID, builds, zerolog.Nop())

	readLog := func() string {
		require.NoError(t, sink.flush(ctx))
		lines, err := builds.ReadLog(ctx, build.ID, 0, 1000)
		require.NoError(t, err)
		var log []string
		for _, l := range lines {
			log = append(log, l.Step+" "+l.Text)
		}
		return strings.Join(log, "\n")
	}
	got, failed := w.runTest(ctx, build, cfg, cfg.Tests[0], p, nil, sink)
	require.NoError(t, failed, "a failing exit code is no error of the run")
	require.NotNil(t, got.Cases, readLog())
	require.False(t, got.Passed)
	require.Equal(t, 1, got.ExitCode, got.Error)
	require.Equal(t, &slipway.TestCaseCounts{Passed: 1, Failed: 1, Skipped: 1}, got.Cases)
	stored, err := cases.FindTestCases(ctx, build.ID)
	require.NoError(t, err)
	require.Len(t, stored, 3)
	require.Equal(t, slipway.TestCase{Test: "pytest", Platform: "linux/amd64", Name: "test_subscribe", Classname: "tests.test_mqtt",
		TimeSeconds: 0.5, Status: slipway.CaseFailed, Message: "assert 1 == 2"}, stored[0])

	got, _ = w.runTest(ctx, build, cfg, cfg.Tests[1], p, nil, sink)
	require.True(t, got.Passed, got.Error)
	require.Nil(t, got.Cases)
	got, _ = w.runTest(ctx, build, cfg, cfg.Tests[2], p, nil, sink)
	require.True(t, got.Passed, got.Error)
	require.Nil(t, got.Cases)

	all := readLog()
	require.Contains(t, all, "test:pytest wrote the report")
	require.Contains(t, all, "test:pytest JUnit report /reports/junit.xml: 3 test cases, 1 passed, 1 failed, 0 errors, 1 skipped")
	require.Contains(t, all, "test:pytest   failed: tests.test_mqtt.test_subscribe: assert 1 == 2", "the log names the failed case")
	require.Contains(t, all, "test:no-report No JUnit report: report /reports/none.xml does not exist in the runner")
	require.Contains(t, all, "test:bad-report The JUnit report /tmp/junit.xml was not read: not a JUnit report: the root element is <html>")
	left, err := rt.List(ctx, map[string]string{pod.LabelBuild: strconv.FormatInt(build.ID, 10)})
	require.NoError(t, err)
	require.Empty(t, left)
}
