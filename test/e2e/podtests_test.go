package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/pod"
	"github.com/slipway-ci/slipway/test/testenv"
)

// podAppDockerfile has an app stage (busybox httpd serving a page on 8080)
// and a test stage (the app plus a test script); the image is the app stage.
// The page is hello-from-app-NONCE, NONCE new for each call.
func podAppDockerfile(base string) (dockerfile, page string) {
	page = fmt.Sprintf("hello-from-app-%d", time.Now().UnixNano())
	return fmt.Sprintf(`FROM %s AS app
RUN mkdir -p /www && echo %s > /www/index.html
CMD ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"]

FROM app AS test
COPY check.sh /check.sh
`, base, page), page
}

func first(a, _ string) string { return a }

// podCheck reaches the broker and the app over the Pod's localhost, on the
// ports the test's env gives, and prints the marker. The page must be the
// one of its own build (the test stage holds the app's files): a Pod that
// reached another build's app would fail.
const podCheck = `set -e
echo "runner on $(uname -m)"
broker=$(/bin/busybox nc 127.0.0.1 "$MQTT_PORT" </dev/null)
test "$broker" = mqtt-hello
page=$(/bin/busybox wget -q -O - "http://127.0.0.1:$APP_PORT/index.html")
test "$page" = "$(cat /www/index.html)"
echo "POD-MARKER arch=$(uname -m) broker=$broker app=$page"
`

// podServices declares a broker-like service from image (busybox nc
// answering every connection) and the tested image as the app.
func podServices(image string) string {
	return fmt.Sprintf(`services:
  - name: broker
    image: %s
    command: 'echo broker up on $(uname -m); exec /bin/busybox nc -ll -p 1883 -e /bin/busybox echo mqtt-hello'
    ports: [1883]
    readiness: {port: 1883, timeout: 30s}
  - name: app
    image: app
    ports: [8080]
    readiness: {port: 8080, timeout: 30s}
`, image)
}

// podsOf lists the Pods podman holds for build id made by the worker
// processes (build ids of other stacks on the machine are the same numbers).
func podsOf(t *testing.T, id int64, workers ...*exec.Cmd) []string {
	t.Helper()
	names := []string{}
	for _, w := range workers {
		out, err := exec.Command("podman", "pod", "ps", "--format", "json",
			"--filter", fmt.Sprintf("label=%s=%d", pod.LabelBuild, id),
			"--filter", fmt.Sprintf("label=%s=%d", pod.LabelWorkerPID, w.Process.Pid)).Output()
		require.NoError(t, err)
		var pods []struct{ Name string }
		if s := strings.TrimSpace(string(out)); s != "" && s != "null" {
			require.NoError(t, json.Unmarshal(out, &pods), "%s", out)
		}
		for _, p := range pods {
			names = append(names, p.Name)
		}
	}
	return names
}

// TestPodTests: a repository whose app image and a TCP "broker" run as
// services beside a runner from the Dockerfile's test stage, one Pod per
// test and platform, passes on both platforms with each service's output in
// its own log step; the test image is pushed by digest only; no Pod is left.
// A service never ready, a runner exiting 1 and a runner outliving its
// test's timeout fail the build; a build canceled while its runner sleeps
// leaves no Pod.
func TestPodTests(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed: run `make deps`")
	}
	base := pushBase(t)
	// The broker's image, by the digest of its index: resolved per platform.
	baseRef, err := name.ParseReference(base)
	require.NoError(t, err)
	head, err := remote.Head(baseRef)
	require.NoError(t, err)
	brokerImage := baseRef.Context().String() + "@" + head.Digest.String()

	s := newStack(t)
	worker := s.start("worker", "SLIPWAY_WORKER_CONCURRENCY=4", "SLIPWAY_WORKER_ID=e2e-pods", "SLIPWAY_POD_CPU=1", "SLIPWAY_POD_MEMORY=256Mi")
	r := newRepos(t)

	okDockerfile, okPage := podAppDockerfile(base)
	okURL, okCommit := r.add("podapp", map[string]string{
		"Dockerfile": okDockerfile,
		"check.sh":   podCheck,
		".slipway.yml": "target: app\n" + podServices(brokerImage) + `tests:
  - name: integration
    services: [broker, app]
    target: test
    run: ['/bin/sh', '/check.sh']
    env: {MQTT_PORT: "1883", APP_PORT: "8080"}
`,
	})
	badURL, badCommit := r.add("podbad", map[string]string{
		"Dockerfile": first(podAppDockerfile(base)),
		"check.sh":   podCheck,
		".slipway.yml": "target: app\nplatforms: [linux/amd64]\n" + podServices(brokerImage) + `  - name: never
    image: app
    command: 'echo never starting; echo still not listening on 9999; exec /bin/busybox sleep 600'
    ports: [9999]
    readiness: {port: 9999, timeout: 3s}
tests:
  - name: never-ready
    services: [never]
    run: 'echo NEVER-RAN-$((6*7)); exit 0'
  - name: runner-fails
    services: [broker]
    run: 'echo runner giving up; exit 1'
  - name: times-out
    services: [broker]
    run: 'exec /bin/busybox sleep 300'
    timeout: 5s
`,
	})
	cancelURL, cancelCommit := r.add("podcancel", map[string]string{
		"Dockerfile": first(podAppDockerfile(base)),
		"check.sh":   podCheck,
		".slipway.yml": "target: app\nplatforms: [linux/amd64]\n" + podServices(brokerImage) + `tests:
  - name: sleeper
    services: [broker, app]
    run: 'echo SLEEPING-$((6*7)); exec /bin/busybox sleep 300'
`,
	})
	// A second build of the same repository at once, its app serving
	// another page on the same port in its own Pods.
	otherDockerfile, otherPage := podAppDockerfile(base)
	otherCommit, err := testenv.CommitFiles(context.Background(), filepath.Join(r.base, "podapp.git"), map[string]string{"Dockerfile": otherDockerfile}, "another page")
	require.NoError(t, err)
	okID := s.send("pod-ok", "acme", "podapp", okURL, "refs/heads/main", okCommit)
	otherID := s.send("pod-other", "acme", "podapp", okURL, "refs/heads/other", otherCommit)
	badID := s.send("pod-bad", "acme", "podbad", badURL, "refs/heads/main", badCommit)
	cancelID := s.send("pod-cancel", "acme", "podcancel", cancelURL, "refs/heads/main", cancelCommit)

	t.Run("Cancel", func(t *testing.T) {
		s.waitFor(cancelID, 10*time.Minute, "the runner to sleep", func(*slipway.Build) bool {
			return strings.Contains(s.logs(cancelID), "SLEEPING-42")
		})
		running := podsOf(t, cancelID, worker)
		require.Len(t, running, 1, "the test's Pod runs while its runner sleeps")
		// The limits of SLIPWAY_POD_CPU and SLIPWAY_POD_MEMORY, on every container.
		for _, c := range []string{"broker", "app", "runner"} {
			out, err := exec.Command("podman", "inspect", "--type", "container", "--format", "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.CpuQuota}}", running[0]+"-"+c).Output()
			require.NoError(t, err, c)
			f := strings.Fields(string(out))
			require.Len(t, f, 3, "%s: %s", c, out)
			require.Equal(t, "268435456", f[0], "%s: 256Mi of memory", c)
			require.True(t, f[1] == "1000000000" || f[2] == "100000", "%s: one CPU: %s", c, out)
		}
		asked := time.Now()
		code, body := s.apiDo(http.MethodPost, fmt.Sprintf("/builds/%d/cancel", cancelID), "")
		require.Equal(t, http.StatusAccepted, code, body)
		b := s.waitDone(cancelID)
		require.Equal(t, slipway.BuildCanceled, b.State, "error: %s", b.Error)
		t.Logf("MEASURE pod test: cancel to canceled %s", time.Since(asked))
		require.Empty(t, podsOf(t, cancelID, worker), "a canceled build leaves no Pod")
	})

	t.Run("Failures", func(t *testing.T) {
		b := s.waitDone(badID)
		log := s.logs(badID)
		require.Equal(t, slipway.BuildFailed, b.State, "log:\n%s", log)
		require.Contains(t, b.Error, `test "never-ready" failed on linux/amd64`)
		require.Contains(t, b.Error, "service never was not ready within 3s")
		require.Contains(t, b.Error, "still not listening on 9999", "the error carries the service's last lines")
		require.NotContains(t, log, "NEVER-RAN-42", "no runner starts beside a service that is not ready")
		results := map[string]slipway.TestResult{}
		for _, tr := range b.Tests {
			results[tr.Name] = tr
		}
		require.Len(t, results, 3, "%+v", b.Tests)
		require.False(t, results["never-ready"].Passed)
		require.False(t, results["runner-fails"].Passed)
		require.Equal(t, 1, results["runner-fails"].ExitCode)
		require.Equal(t, "exit code 1", results["runner-fails"].Error)
		require.False(t, results["times-out"].Passed)
		require.Equal(t, "timed out after 5s", results["times-out"].Error)
		// Within its 3s timeout, plus the pulls and the Pod's creation.
		took := time.Duration(results["never-ready"].DurationMS) * time.Millisecond
		require.Less(t, took, 45*time.Second)
		t.Logf("MEASURE pod test: a service never ready (timeout 3s) failed its test in %s", took)
		require.Contains(t, log, "runner giving up")
		require.Empty(t, podsOf(t, badID, worker), "failed tests leave no Pod")
	})

	t.Run("SecondBuildAtOnce", func(t *testing.T) {
		b := s.waitDone(otherID)
		log := s.logs(otherID)
		require.Equal(t, slipway.BuildSucceeded, b.State, "error %s\nlog:\n%s", b.Error, log)
		for _, arch := range []string{"x86_64", "aarch64"} {
			require.Contains(t, log, "POD-MARKER arch="+arch+" broker=mqtt-hello app="+otherPage)
		}
		require.NotContains(t, log, okPage)
		require.Empty(t, podsOf(t, otherID, worker))
	})

	t.Run("Passes", func(t *testing.T) {
		b := s.waitDone(okID)
		log := s.logs(okID)
		require.Equal(t, slipway.BuildSucceeded, b.State, "error %s\nlog:\n%s", b.Error, log)
		require.Len(t, b.Tests, 2, "one test on each platform")
		for _, tr := range b.Tests {
			require.True(t, tr.Passed, "%+v", tr)
			t.Logf("MEASURE pod test: integration (broker, app, runner) on %s took %s", tr.Platform, time.Duration(tr.DurationMS)*time.Millisecond)
		}
		for _, arch := range []string{"x86_64", "aarch64"} {
			require.Contains(t, log, "POD-MARKER arch="+arch+" broker=mqtt-hello app="+okPage)
			require.Contains(t, log, "broker up on "+arch, "the broker's own output is in the log")
		}
		// Each service's output is its own step per platform, the runner's
		// is the test's.
		steps := map[string][]string{} // platform + " " + step → its lines
		s.follow(okID, 0, func(l sseLine) bool {
			steps[l.Platform+" "+l.Step] = append(steps[l.Platform+" "+l.Step], l.Text)
			return true
		})
		for p, arch := range map[string]string{"linux/amd64": "x86_64", "linux/arm64": "aarch64"} {
			require.Contains(t, steps[p+" service:broker"], "broker up on "+arch, "the broker's output, in its step")
			require.NotEmpty(t, steps[p+" service:app"], "a service:app step on %s", p)
			require.Contains(t, steps[p+" test:integration"], "POD-MARKER arch="+arch+" broker=mqtt-hello app="+okPage)
		}
		require.Empty(t, podsOf(t, okID, worker), "a passed test leaves no Pod")

		// The test image is pushed by digest only: every tag of the
		// repository but the caches is the app's index. The test target's
		// cache is its own: the image's cache stays the image's.
		image := s.image("acme", "podapp")
		indexes := map[string]bool{b.IndexDigest: true, s.build(otherID).IndexDigest: true}
		require.Len(t, indexes, 2)
		for _, id := range []int64{okID, otherID} {
			m := regexp.MustCompile(`Built and pushed test target test as (\S+)@(sha256:[0-9a-f]{64})`).FindStringSubmatch(s.logs(id))
			require.NotNil(t, m, "build %d pushed its test target", id)
			require.Equal(t, image, m[1])
			require.False(t, indexes[m[2]], "the test image is not the app's index")
			testRef, err := name.ParseReference(image + "@" + m[2])
			require.NoError(t, err)
			_, err = remote.Head(testRef)
			require.NoError(t, err, "the test image is in the registry by digest")
		}
		repo, err := name.NewRepository(image)
		require.NoError(t, err)
		tags, err := remote.List(repo)
		require.NoError(t, err)
		caches := map[string]string{}
		images := 0
		for _, tag := range tags {
			d, err := remote.Head(repo.Tag(tag))
			require.NoError(t, err)
			if strings.HasPrefix(tag, "buildcache-") {
				caches[tag] = d.Digest.String()
				continue
			}
			images++
			require.True(t, indexes[d.Digest.String()], "tag %s is an app's index, not a test image", tag)
		}
		require.GreaterOrEqual(t, images, 2, "tags: %v", tags)
		appCache, testCache := caches["buildcache-linux-amd64_linux-arm64"], caches["buildcache-linux-amd64_linux-arm64-test"]
		require.Len(t, caches, 2, "the image's cache and the test target's: %v", caches)
		require.NotEmpty(t, appCache)
		require.NotEmpty(t, testCache)
		require.NotEqual(t, appCache, testCache, "the test target's solve did not overwrite the image's cache")
	})
}

// TestPodTestsWorkerKilled: the Pod of a worker killed with SIGKILL while
// its runner sleeps outlives it; the next worker starting on the host
// removes it, and a cancel then leaves no Pod of the build.
func TestPodTestsWorkerKilled(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed: run `make deps`")
	}
	base := pushBase(t)
	s := newStack(t)
	killed := s.start("worker", "SLIPWAY_WORKER_ID=e2e-pods-killed")
	r := newRepos(t)
	url, commit := r.add("podkill", map[string]string{
		"Dockerfile": first(podAppDockerfile(base)),
		"check.sh":   podCheck,
		".slipway.yml": "target: app\nplatforms: [linux/amd64]\n" + podServices("app") + `tests:
  - name: sleeper
    services: [app]
    run: 'echo SLEEPING-$((6*7)); exec /bin/busybox sleep 300'
`,
	})
	id := s.send("pod-kill", "acme", "podkill", url, "refs/heads/main", commit)
	s.waitFor(id, 10*time.Minute, "the runner to sleep", func(*slipway.Build) bool {
		return strings.Contains(s.logs(id), "SLEEPING-42")
	})
	left := podsOf(t, id, killed)
	require.Len(t, left, 1)
	require.NoError(t, killed.Process.Kill())
	_ = killed.Wait() // reaped: a zombie would still look alive
	require.Equal(t, left, podsOf(t, id, killed), "a SIGKILL gives the worker no chance to remove its Pod")

	next := s.start("worker", "SLIPWAY_WORKER_ID=e2e-pods-next")
	deadline := time.Now().Add(time.Minute)
	for slices.Contains(podsOf(t, id, killed), left[0]) {
		require.True(t, time.Now().Before(deadline), "the next worker did not remove %s", left[0])
		time.Sleep(250 * time.Millisecond) // bounded poll of another process
	}
	// The build is retried once its lease is stale; cancel it, wherever it is.
	code, body := s.apiDo(http.MethodPost, fmt.Sprintf("/builds/%d/cancel", id), "")
	require.Equal(t, http.StatusAccepted, code, body)
	b := s.waitDone(id)
	require.Equal(t, slipway.BuildCanceled, b.State, "error: %s", b.Error)
	require.Empty(t, podsOf(t, id, killed, next), "no Pod of the build is left")
}
