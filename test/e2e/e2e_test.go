// Package e2e runs slipway end to end with real parts only: PostgreSQL, the
// distribution registry, buildkitd (arm64 under QEMU) and git daemon, all started
// by `make test`. A push made from a real GitHub payload becomes a tested
// two-platform image in the registry.
package e2e

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

const fixture = "push-branch.json"

// repos serves the test's git repositories over git daemon.
type repos struct {
	t    testing.TB
	base string // folder git daemon serves
	url  string // git://127.0.0.1:port/
}

func newRepos(t *testing.T) *repos {
	base := t.TempDir()
	return &repos{t: t, base: base, url: testenv.ServeGit(t, base)}
}

// add makes a repository with one commit of files and returns its clone URL and commit.
func (r *repos) add(name string, files map[string]string) (cloneURL, commit string) {
	r.t.Helper()
	commit = testenv.NewGitRepo(r.t, r.base+"/"+name+".git", files)
	return r.url + name + ".git", commit
}

// push makes a signed push delivery from the real GitHub fixture.
func push(t testing.TB, p testenv.PushParams) []byte {
	t.Helper()
	body, err := testenv.GitHubPush(fixture, p)
	require.NoError(t, err)
	return body
}

// dockerfile returns a Dockerfile whose RUN steps really run: the nonce keeps
// BuildKit from answering them from the cache of an earlier test run.
func dockerfile(base, extra string) string {
	return fmt.Sprintf("FROM %s\nRUN echo nonce-%d && uname -m > /arch\n%s", base, time.Now().UnixNano(), extra)
}

const archTest = `tests:
  - name: arch-matches
    run: 'echo "built-on=$(cat /arch) running-on=$(uname -m)"; test "$(cat /arch)" = "$(uname -m)"'
`

func TestPushBecomesTestedImage(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)

	s := newStack(t)
	s.start("worker", "SLIPWAY_WORKER_CONCURRENCY=3", "SLIPWAY_WORKER_ID=e2e-w1")
	r := newRepos(t)

	goodURL, goodCommit := r.add("good", map[string]string{
		"Dockerfile":   dockerfile(base, ""),
		".slipway.yml": archTest,
	})
	brokenURL, brokenCommit := r.add("broken", map[string]string{
		"Dockerfile": dockerfile(base, "RUN echo about to fail && exit 3\n"),
	})
	failingURL, failingCommit := r.add("failing", map[string]string{
		"Dockerfile":   dockerfile(base, ""),
		".slipway.yml": "tests:\n  - name: smoke\n    run: 'true'\n  - name: wants-x86\n    run: ['/bin/sh', '-c', 'echo checking; test \"$(uname -m)\" = x86_64']\n",
	})

	send := func(delivery string, p testenv.PushParams) int64 {
		body := push(t, p)
		code, resp := s.webhook("push", delivery, body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", resp)
		id, ok := resp["build_id"].(float64)
		require.True(t, ok, "no build_id in %v", resp)
		return int64(id)
	}

	goodID := send("good-1", testenv.PushParams{Owner: "Acme", Name: "Good", CloneURL: goodURL, Ref: "refs/heads/main", After: goodCommit})
	brokenID := send("broken-1", testenv.PushParams{Owner: "acme", Name: "broken", CloneURL: brokenURL, Ref: "refs/heads/main", After: brokenCommit})
	failingID := send("failing-1", testenv.PushParams{Owner: "acme", Name: "failing", CloneURL: failingURL, Ref: "refs/heads/main", After: failingCommit})

	t.Run("Rejections", func(t *testing.T) {
		before := s.count("builds")
		body := push(t, testenv.PushParams{Owner: "acme", Name: "good", CloneURL: goodURL, Ref: "refs/heads/main", After: goodCommit})

		code, resp := s.webhook("push", "bad-sig", body, testenv.Sign("wrong-secret", body))
		require.Equal(t, http.StatusUnauthorized, code, "%v", resp)
		code, _ = s.webhook("push", "no-sig", body, "")
		require.Equal(t, http.StatusUnauthorized, code)

		malformed := []byte(`{"ref": "refs/heads/main", "after": `)
		code, resp = s.webhook("push", "malformed", malformed, testenv.Sign(webhookSecret, malformed))
		require.Equal(t, http.StatusBadRequest, code, "%v", resp)

		deletion := push(t, testenv.PushParams{Owner: "acme", Name: "good", CloneURL: goodURL, Ref: "refs/heads/gone", After: strings.Repeat("0", 40), Deleted: true})
		code, resp = s.webhook("push", "deletion", deletion, testenv.Sign(webhookSecret, deletion))
		require.Equal(t, http.StatusAccepted, code)
		require.Contains(t, resp, "ignored")

		require.Equal(t, before, s.count("builds"), "no rejected or ignored delivery made a build")
		require.Equal(t, 0, s.count("webhook_deliveries WHERE delivery_id IN ('bad-sig','no-sig','malformed','deletion')"))
	})

	t.Run("ConcurrentRedeliveryMakesOneBuild", func(t *testing.T) {
		body := push(t, testenv.PushParams{Owner: "acme", Name: "good", CloneURL: goodURL, Ref: "refs/heads/dup", After: goodCommit})
		sig := testenv.Sign(webhookSecret, body)
		const n = 5
		ids := make([]any, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				code, resp := s.webhook("push", "dup-delivery", body, sig)
				if code == http.StatusAccepted {
					ids[i] = resp["build_id"]
				}
			})
		}
		close(start)
		wg.Wait()
		for i := range n {
			require.NotNil(t, ids[i])
			require.Equal(t, ids[0], ids[i], "every delivery of one id answers with the same build")
		}
		require.Equal(t, 1, s.count("builds WHERE ref = 'refs/heads/dup'"))
		// Let the worker finish it before the stack stops (it is a valid build).
		s.waitDone(int64(ids[0].(float64)))
	})

	t.Run("Succeeds", func(t *testing.T) {
		b := s.waitDone(goodID)
		require.Equal(t, slipway.BuildSucceeded, b.State, "error: %s\nlog:\n%s", b.Error, s.logs(goodID))
		image := s.image("Acme", "Good")
		require.Equal(t, image, b.Image, "image named after the lower-cased owner/name")
		require.Equal(t, image+":"+slipway.CommitTag(goodCommit), b.ImageRef)
		require.NotEmpty(t, b.IndexDigest)
		require.Equal(t, []string{"main"}, b.Tags)
		require.NotNil(t, b.StartedAt)
		t.Logf("MEASURE webhook to running: %s; running to succeeded: %s", b.StartedAt.Sub(b.CreatedAt), b.FinishedAt.Sub(*b.StartedAt))

		// The registry, read directly: the sha tag and the branch tag are the same
		// index, with one image per platform whose config and RUN output name it.
		for _, tag := range []string{slipway.CommitTag(goodCommit), "main"} {
			ref, err := name.ParseReference(image + ":" + tag)
			require.NoError(t, err)
			desc, err := remote.Get(ref)
			require.NoError(t, err)
			require.True(t, desc.MediaType.IsIndex(), "%s is %s", tag, desc.MediaType)
			if tag == "main" {
				// Not the sha tag: the "dup" push builds the same commit again, and
				// each build's provenance (its invocation id, its times) makes its
				// own index, which moves sha-… to the later build.
				require.Equal(t, b.IndexDigest, desc.Digest.String(), "tag %s", tag)
			}
		}
		idx, err := remote.Index(mustRef(t, image+"@"+b.IndexDigest))
		require.NoError(t, err)
		want := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}
		got := map[string]string{}
		im, err := idx.IndexManifest()
		require.NoError(t, err)
		for _, m := range im.Manifests {
			if m.Platform == nil || m.Platform.OS == "unknown" {
				continue
			}
			img, err := idx.Image(m.Digest)
			require.NoError(t, err)
			cf, err := img.ConfigFile()
			require.NoError(t, err)
			require.Equal(t, m.Platform.Architecture, cf.Architecture)
			got[cf.Architecture] = strings.TrimSpace(readFile(t, img, "arch"))
		}
		require.Equal(t, want, got, "RUN uname -m ran on each platform")
		require.Len(t, b.Platforms, 2)
		for _, p := range b.Platforms {
			require.True(t, strings.HasPrefix(p.Digest, "sha256:"))
		}

		require.Len(t, b.Tests, 2)
		for _, tr := range b.Tests {
			require.True(t, tr.Passed, "%+v", tr)
			require.Equal(t, "arch-matches", tr.Name)
		}
		log := s.logs(goodID)
		require.Contains(t, log, "[linux/amd64] built-on=x86_64 running-on=x86_64")
		require.Contains(t, log, "[linux/arm64] built-on=aarch64 running-on=aarch64")
		require.Contains(t, log, "uname -m > /arch", "the log holds the build's steps")
		require.Contains(t, log, "checked out "+goodCommit)
	})

	t.Run("BrokenDockerfileFails", func(t *testing.T) {
		b := s.waitDone(brokenID)
		require.Equal(t, slipway.BuildFailed, b.State)
		require.Contains(t, b.Error, "exit code: 3", "BuildKit's message reaches the build")
		require.Contains(t, b.Error, "exit 3")
		require.Empty(t, b.Tags)
		require.Contains(t, s.logs(brokenID), "about to fail")
	})

	t.Run("FailingTestFails", func(t *testing.T) {
		b := s.waitDone(failingID)
		require.Equal(t, slipway.BuildFailed, b.State)
		require.Contains(t, b.Error, `test "wants-x86" failed on linux/arm64`)
		require.Empty(t, b.Tags, "an untested image gets no branch tag")
		var passed, failed int
		for _, tr := range b.Tests {
			if tr.Passed {
				passed++
			} else {
				failed++
				require.Equal(t, "linux/arm64", tr.Platform)
				require.Equal(t, 1, tr.ExitCode)
			}
		}
		require.Equal(t, 3, passed)
		require.Equal(t, 1, failed)
		_, err := remote.Head(mustRef(t, s.image("acme", "failing")+":main"))
		require.Error(t, err, "no main tag for a failed build")
	})
}

func TestKilledWorkerBuildStillSucceeds(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)

	s := newStack(t)
	r := newRepos(t)
	// The sleep keeps the build in BuildKit long enough to kill its worker there.
	url, commit := r.add("slow", map[string]string{
		"Dockerfile":   dockerfile(base, "RUN echo slow-step-started && sleep 8\n"),
		".slipway.yml": archTest,
	})
	victim := s.start("worker", "SLIPWAY_WORKER_ID=victim")
	body := push(t, testenv.PushParams{Owner: "acme", Name: "slow", CloneURL: url, Ref: "refs/heads/main", After: commit})
	code, resp := s.webhook("push", "slow-1", body, testenv.Sign(webhookSecret, body))
	require.Equal(t, http.StatusAccepted, code, "%v", resp)
	id := int64(resp["build_id"].(float64))

	s.waitFor(id, 5*time.Minute, "the build step to start", func(b *slipway.Build) bool {
		return strings.Contains(s.logs(id), "slow-step-started")
	})
	require.NoError(t, victim.Process.Signal(syscall.SIGKILL))
	killed := time.Now()
	s.start("worker", "SLIPWAY_WORKER_ID=rescuer")

	s.waitFor(id, 2*time.Minute, "another worker to take the build over", func(b *slipway.Build) bool {
		return b.Attempt >= 2
	})
	t.Logf("MEASURE killed worker's build claimed again after %s", time.Since(killed).Round(time.Millisecond))
	require.Less(t, time.Since(killed), 60*time.Second, "rescued within a minute")
	b := s.waitDone(id)
	require.Equal(t, slipway.BuildSucceeded, b.State, "error %s\nlog:\n%s", b.Error, s.logs(id))
	require.Equal(t, 2, b.Attempt)
	require.Len(t, b.Tests, 2)
	require.Contains(t, s.logs(id), "==> attempt 2")
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s)
	require.NoError(t, err)
	return ref
}

// readFile returns the content of path (no leading slash) in img's filesystem.
func readFile(t *testing.T, img v1.Image, path string) string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s not in image", path)
		}
		require.NoError(t, err)
		if strings.TrimPrefix(h.Name, "/") == path || strings.TrimPrefix(h.Name, "./") == path {
			data, err := io.ReadAll(tr)
			require.NoError(t, err)
			return string(data)
		}
	}
}
