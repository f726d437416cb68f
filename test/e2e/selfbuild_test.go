package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// selfBuildTests are the integration tests of slipway's own image: the binary
// starts and prints the version it was built with; it is the binary of the
// platform it runs on (e_machine in the ELF header: 0x3e x86-64, 0xb7 AArch64),
// which `slipway version` alone cannot tell: an amd64 binary in the arm64
// image would run natively on an amd64 host; and git, as the worker runs it,
// fetches and checks out this very repository from the test's git daemon
// (BuildKit runs tests on the host network), as the image's non-root user.
const selfBuildTests = `tests:
  - name: version
    run: 'slipway version | tee /dev/stderr | grep -qx "slipway %[1]s"'
  - name: binary-arch
    run: 'm=$(od -An -tx1 -j18 -N1 /usr/local/bin/slipway | tr -d " "); echo "e_machine=$m on $(uname -m)"; case "$(uname -m)" in x86_64) test "$m" = 3e;; aarch64) test "$m" = b7;; *) false;; esac'
  - name: git-checkout
    run: 'id -u; git --version && d=$(mktemp -d) && cd "$d" && git init -q && git fetch -q --depth 1 %[2]s HEAD && git -c advice.detachedHead=false checkout -q FETCH_HEAD && test -f Dockerfile && git log --oneline -1'
`

// TestSelfBuild builds slipway's own two-platform image with slipway, the way
// a release is assembled where no public image can be pulled: slipway is
// cross-compiled for linux/amd64 and linux/arm64 (CGO off, no emulation),
// the binaries and deploy/Dockerfile.release are pushed to a repository, and
// slipway builds that push on a local base (busybox plus Debian's git and the
// libraries it links, testenv.GitBaseImage), pushes the index and runs
// `slipway version` and a git checkout inside it on both platforms.
//
// What this image lacks against a release on debian:bookworm-slim: git
// without libcurl (no http(s) remotes), no CA certificates, no ssh client.
// Its worker can check out git:// and local repositories only.
func TestSelfBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("self-build: skipped with -short")
	}
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushGitBaseImage(ctx, registryHost)
	require.NoError(t, err)
	root, err := testenv.RepoRoot()
	require.NoError(t, err)

	version := fmt.Sprintf("selfbuild-%d", time.Now().UnixNano())
	work := t.TempDir()
	started := time.Now()
	for _, arch := range []string{"amd64", "arm64"} {
		out := filepath.Join(work, "dist", "slipway-linux-"+arch)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", out, "./cmd/slipway")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		b, err := cmd.CombinedOutput()
		require.NoError(t, err, "cross-compiling slipway for %s:\n%s", arch, b)
	}
	t.Logf("MEASURE self-build: cross-compiling slipway for amd64 and arm64 took %s", time.Since(started).Round(time.Millisecond))

	// The release Dockerfile as it is, with the local base as BASE_IMAGE's
	// default (slipway passes no build arguments).
	df, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile.release"))
	require.NoError(t, err)
	argLine := regexp.MustCompile(`(?m)^ARG BASE_IMAGE=.*$`)
	require.True(t, argLine.Match(df), "deploy/Dockerfile.release declares ARG BASE_IMAGE")
	dockerfile := argLine.ReplaceAllString(string(df), "ARG BASE_IMAGE="+base)

	r := newRepos(t)
	files := map[string]string{
		"Dockerfile":   dockerfile,
		".slipway.yml": fmt.Sprintf(selfBuildTests, version, r.url+"slipway.git"),
	}
	for _, arch := range []string{"amd64", "arm64"} {
		b, err := os.ReadFile(filepath.Join(work, "dist", "slipway-linux-"+arch))
		require.NoError(t, err)
		files["dist/slipway-linux-"+arch] = string(b)
	}
	cloneURL, commit := r.add("slipway", files)

	s := newStack(t)
	s.start("worker", "SLIPWAY_WORKER_ID=selfbuild-w1")
	body := push(t, testenv.PushParams{Owner: "slipway-ci", Name: "slipway", CloneURL: cloneURL, Ref: "refs/tags/v0.0.0-selfbuild", After: commit})
	code, resp := s.webhook("push", "selfbuild-1", body, testenv.Sign(webhookSecret, body))
	require.Equal(t, http.StatusAccepted, code, "%v", resp)
	id := int64(resp["build_id"].(float64))

	b := s.waitDone(id)
	require.Equal(t, slipway.BuildSucceeded, b.State, "error: %s\nlog:\n%s", b.Error, s.logs(id))
	t.Logf("MEASURE self-build: push to tested image took %s (running %s)", b.FinishedAt.Sub(b.CreatedAt).Round(time.Millisecond), b.FinishedAt.Sub(*b.StartedAt).Round(time.Millisecond))
	require.Len(t, b.Platforms, 2)
	require.Len(t, b.Tests, 6, "three tests on two platforms")
	passed := map[string]bool{}
	for _, tr := range b.Tests {
		require.True(t, tr.Passed, "%+v\nlog:\n%s", tr, s.logs(id))
		passed[tr.Name+" "+tr.Platform] = true
	}
	require.Equal(t, map[string]bool{
		"version linux/amd64": true, "version linux/arm64": true,
		"binary-arch linux/amd64": true, "binary-arch linux/arm64": true,
		"git-checkout linux/amd64": true, "git-checkout linux/arm64": true,
	}, passed)
	// The tag push names the image after the tag; as a version tag (a
	// pre-release: no 0.0, 0 or latest) it is also released under its name
	// without the leading v.
	require.Equal(t, []string{"v0.0.0-selfbuild", "0.0.0-selfbuild"}, b.Tags)

	// The pushed image is slipway's: entrypoint, non-root user, per platform.
	idx, err := remote.Index(mustRef(t, b.Image+"@"+b.IndexDigest))
	require.NoError(t, err)
	for _, p := range b.Platforms {
		img, err := idx.Image(mustHash(t, p.Digest))
		require.NoError(t, err)
		cf, err := img.ConfigFile()
		require.NoError(t, err)
		require.Equal(t, strings.TrimPrefix(p.Platform, "linux/"), cf.Architecture)
		require.Equal(t, []string{"/usr/local/bin/slipway"}, cf.Config.Entrypoint)
		require.Equal(t, []string{"server"}, cf.Config.Cmd)
		require.Equal(t, "10001:10001", cf.Config.User)
	}
	log := s.logs(id)
	require.Contains(t, log, "slipway "+version, "the version test's output is in the build log")
	require.Contains(t, log, "git version 2.", "git ran in the image")
	require.Contains(t, log, commit[:7], "git checked this repository's commit out in the image")
}

func mustHash(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(s)
	require.NoError(t, err)
	return h
}
