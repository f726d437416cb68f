package testenv_test

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/slipway-ci/slipway/test/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestPushBaseImage(t *testing.T) {
	t.Parallel()

	debDir, err := testenv.DebsDir()
	require.NoError(t, err)
	_, err = testenv.BusyboxDebs(debDir)
	require.NoError(t, err, "the base image is built from Debian's busybox-static packages")

	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	host := strings.TrimPrefix(srv.URL, "http://")

	ctx := context.Background()
	refStr, err := testenv.PushBaseImage(ctx, host, remote.WithTransport(tr))
	require.NoError(t, err)
	require.Equal(t, host+"/library/busybox:latest", refStr)

	ref, err := name.ParseReference(refStr)
	require.NoError(t, err)
	idx, err := remote.Index(ref, remote.WithContext(ctx), remote.WithTransport(tr))
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	require.EqualValues(t, "application/vnd.oci.image.index.v1+json", im.MediaType)
	require.Len(t, im.Manifests, 2)

	wantMachine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for i, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			desc := im.Manifests[i]
			require.NotNil(t, desc.Platform)
			require.Equal(t, v1.Platform{OS: "linux", Architecture: arch}, *desc.Platform)

			img, err := idx.Image(desc.Digest)
			require.NoError(t, err)
			cfg, err := img.ConfigFile()
			require.NoError(t, err)
			require.Equal(t, "linux", cfg.OS)
			require.Equal(t, arch, cfg.Architecture)
			require.Contains(t, cfg.Config.Env[0], "PATH=")

			layers, err := img.Layers()
			require.NoError(t, err)
			require.Len(t, layers, 1)
			files := layerFiles(t, layers[0])
			for _, applet := range []string{"sh", "cat", "echo", "uname", "ls", "test", "true", "false", "env", "grep", "sleep"} {
				require.Equal(t, "busybox", files["bin/"+applet].Linkname, "bin/%s", applet)
			}
			bin, err := elf.NewFile(bytes.NewReader(files["bin/busybox"].data))
			require.NoError(t, err)
			require.Equal(t, wantMachine[arch], bin.Machine)
			require.EqualValues(t, 0o755, files["bin/busybox"].Mode&0o777)
			require.Equal(t, byte(tar.TypeDir), files["tmp/"].Typeflag)
		})
	}

	t.Run("digest is reproducible", func(t *testing.T) {
		again, err := testenv.BaseImage(ctx, debDir)
		require.NoError(t, err)
		d1, err := idx.Digest()
		require.NoError(t, err)
		d2, err := again.Digest()
		require.NoError(t, err)
		require.Equal(t, d1, d2)
	})
}

func TestBusyboxDebsMissing(t *testing.T) {
	t.Parallel()

	_, err := testenv.BusyboxDebs(t.TempDir())
	require.ErrorContains(t, err, "make deps")
}

type tarFile struct {
	*tar.Header
	data []byte
}

func layerFiles(t *testing.T, layer v1.Layer) map[string]tarFile {
	t.Helper()
	rc, err := layer.Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	files := map[string]tarFile{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		require.NoError(t, err)
		data, err := io.ReadAll(tr)
		require.NoError(t, err)
		files[hdr.Name] = tarFile{Header: hdr, data: data}
	}
}

func TestGitHubPush(t *testing.T) {
	t.Parallel()

	dir, err := testenv.FixturePath("github")
	require.NoError(t, err)
	fixtures, err := filepath.Glob(filepath.Join(dir, "push-*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, fixtures)

	const after = "0123456789abcdef0123456789abcdef01234567"
	params := testenv.PushParams{
		Owner:    "demo",
		Name:     "hello",
		CloneURL: "git://127.0.0.1:9418/demo.git",
		Ref:      "refs/heads/main",
		Before:   "1111111111111111111111111111111111111111",
		After:    after,
		Message:  "Add arch file",
	}
	for _, fixture := range fixtures {
		t.Run(filepath.Base(fixture), func(t *testing.T) {
			t.Parallel()

			orig := decode(t, mustRead(t, fixture))
			body, err := testenv.GitHubPush(fixture, params)
			require.NoError(t, err)
			require.True(t, json.Valid(body))
			got := decode(t, body)

			repo := got["repository"].(map[string]any)
			require.Equal(t, "hello", repo["name"])
			require.Equal(t, "demo/hello", repo["full_name"])
			require.Equal(t, "demo", repo["owner"].(map[string]any)["login"])
			for _, key := range []string{"clone_url", "git_url", "ssh_url", "html_url"} {
				require.Equal(t, params.CloneURL, repo[key], key)
			}
			require.Equal(t, "refs/heads/main", got["ref"])
			require.Equal(t, params.Before, got["before"])
			require.Equal(t, after, got["after"])
			if head, ok := got["head_commit"].(map[string]any); ok {
				require.Equal(t, after, head["id"])
				require.Equal(t, "Add arch file", head["message"])
			} else {
				require.Nil(t, got["head_commit"], "a deletion has no head commit")
			}
			// The rest is the real payload, untouched.
			require.Equal(t, orig["sender"], got["sender"])
			require.Equal(t, orig["pusher"], got["pusher"])
			require.Equal(t, orig["repository"].(map[string]any)["id"], repo["id"])
		})
	}

	t.Run("deletion", func(t *testing.T) {
		t.Parallel()

		zeros := strings.Repeat("0", 40)
		body, err := testenv.GitHubPush("push-branch.json", testenv.PushParams{
			Owner: "acme", Name: "good", Ref: "refs/heads/gone", After: zeros, Deleted: true,
		})
		require.NoError(t, err)
		got := decode(t, body)
		require.Equal(t, true, got["deleted"])
		require.Equal(t, false, got["created"])
		require.Equal(t, zeros, got["after"])
		require.Nil(t, got["head_commit"])
		require.Empty(t, got["commits"])
	})

	t.Run("empty params keep the fixture", func(t *testing.T) {
		t.Parallel()

		fixture := filepath.Join(dir, "push-branch.json")
		body, err := testenv.GitHubPush(fixture, testenv.PushParams{})
		require.NoError(t, err)
		require.Equal(t, decode(t, mustRead(t, fixture)), decode(t, body))
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	require.NoError(t, dec.Decode(&m))
	return m
}

func TestSign(t *testing.T) {
	t.Parallel()

	// The example in GitHub's "Validating webhook deliveries".
	require.Equal(t,
		"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
		testenv.Sign("It's a Secret to Everybody", []byte("Hello, World!")))

	// make run prints a curl command that signs with openssl; both must agree.
	if _, err := exec.LookPath("openssl"); err == nil {
		body := []byte(`{"zen":"Keep it logically awesome."}`)
		cmd := exec.Command("openssl", "dgst", "-sha256", "-hmac", "devsecret", "-r")
		cmd.Stdin = bytes.NewReader(body)
		out, err := cmd.Output()
		require.NoError(t, err)
		require.Equal(t, testenv.Sign("devsecret", body), "sha256="+strings.Fields(string(out))[0])
	}
}

func TestGitRepoServedByGitDaemon(t *testing.T) {
	t.Parallel()

	base := t.TempDir()
	dir := filepath.Join(base, "hello.git")
	commit := testenv.NewGitRepo(t, dir, map[string]string{
		"Dockerfile":   "FROM scratch\n",
		"sub/file.txt": "hello\n",
	})
	require.Regexp(t, "^[0-9a-f]{40}$", commit)
	ctx := context.Background()
	second, err := testenv.CommitFiles(ctx, dir, map[string]string{"sub/file.txt": "bye\n"}, "Second")
	require.NoError(t, err)

	url := testenv.ServeGit(t, base) + "hello.git"

	// The worker's way: an empty repository fetching one commit, shallow.
	// Protocol version 0 checks that a commit that is no branch tip may be
	// asked for by hash, as on GitHub.
	for _, tc := range []struct {
		name, version, commit, want string
	}{
		{"first commit protocol v2", "2", commit, "hello\n"},
		{"first commit protocol v0", "0", commit, "hello\n"},
		{"branch tip", "2", second, "bye\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			work := t.TempDir()
			run := func(args ...string) {
				t.Helper()
				cmd := exec.Command("git", args...)
				cmd.Dir = work
				cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, "git %s: %s", strings.Join(args, " "), out)
			}
			run("init", "-q")
			run("remote", "add", "origin", url)
			run("-c", "protocol.version="+tc.version, "fetch", "-q", "--depth", "1", "origin", tc.commit)
			run("-c", "advice.detachedHead=false", "checkout", "-q", tc.commit)
			require.Equal(t, tc.want, string(mustRead(t, filepath.Join(work, "sub", "file.txt"))))
		})
	}
}
