package buildkit_test

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/buildkit"
	"github.com/slipway-ci/slipway/registry"
)

// Arm64 runs under QEMU here: keep Dockerfiles tiny and timeouts generous.
const buildTimeout = 5 * time.Minute

func writeDockerfile(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(content), 0o644))
	return dir
}

func TestNew(t *testing.T) {
	t.Parallel()

	for _, addr := range []string{"", "buildkitd.sock", "unix://", "tcp://host", "http://host:1234", "ssh://me@host"} {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			_, err := buildkit.New(context.Background(), buildkit.Config{Addr: addr})
			require.ErrorContains(t, err, "buildkit config: Addr")
		})
	}
}

func TestBuilderPing(t *testing.T) {
	t.Parallel()

	t.Run("Answers", func(t *testing.T) {
		t.Parallel()
		b, _ := setup(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, b.Ping(ctx))
	})

	t.Run("NobodyThere", func(t *testing.T) {
		t.Parallel()
		sock := filepath.Join(t.TempDir(), "none.sock")
		b, err := buildkit.New(context.Background(), buildkit.Config{Addr: "unix://" + sock})
		require.NoError(t, err, "New does not connect")
		defer b.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = b.Ping(ctx)
		require.Error(t, err)
		require.NotContains(t, err.Error(), "rpc error")
		require.NotContains(t, err.Error(), "\n")
	})
}

func TestBuilderBuild(t *testing.T) {
	t.Parallel()

	t.Run("TwoPlatforms", func(t *testing.T) {
		t.Parallel()
		b, tb := setup(t)
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		// The nonce keeps the RUN step out of BuildKit's cache: it must run.
		nonce := fmt.Sprint(time.Now().UnixNano())
		dir := writeDockerfile(t, "FROM "+tb.base+"\nRUN uname -m > /arch && echo built-on-$(cat /arch) "+nonce+"\n")
		ref := tb.repo(t) + ":sha-0123456789ab"
		var logs logRecorder

		start := time.Now()
		digest, err := b.Build(ctx, buildkit.BuildSpec{
			ContextDir: dir,
			Platforms:  []string{"linux/amd64", "linux/arm64"},
			Ref:        ref,
			Insecure:   true,
		}, logs.log)
		require.NoError(t, err, "log:\n%s", &logs)
		t.Logf("two-platform build took %s, log:\n%s", time.Since(start).Round(time.Millisecond), &logs)
		require.Regexp(t, `^sha256:[0-9a-f]{64}$`, digest)

		// Step names carry their platform, and RUN output reaches the log.
		require.True(t, logs.has("linux/arm64", "RUN uname -m > /arch"), "log:\n%s", &logs)
		require.True(t, logs.has("linux/amd64", "RUN uname -m > /arch"), "log:\n%s", &logs)
		require.True(t, logs.has("linux/arm64", "built-on-aarch64 "+nonce), "log:\n%s", &logs)
		require.True(t, logs.has("linux/amd64", "built-on-x86_64 "+nonce), "log:\n%s", &logs)

		// The tag points at the returned index, which holds both platforms.
		got, platforms, err := registry.New(registry.WithInsecure(true)).
			VerifyIndex(ctx, ref, []string{"linux/amd64", "linux/arm64"})
		require.NoError(t, err)
		require.Equal(t, digest, got)

		// Each image really ran its RUN step on its own architecture.
		for _, pd := range platforms {
			want := map[string]string{"linux/amd64": "x86_64\n", "linux/arm64": "aarch64\n"}[pd.Platform]
			require.Equal(t, want, readFile(t, ref, pd.Digest, "arch"), pd.Platform)
		}
	})

	t.Run("RegistryCache", func(t *testing.T) {
		t.Parallel()
		b, tb := setup(t)
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		nonce := fmt.Sprint(time.Now().UnixNano())
		dir := writeDockerfile(t, "FROM "+tb.base+"\nRUN echo "+nonce+" > /nonce\n")
		repo := tb.repo(t)
		spec := buildkit.BuildSpec{
			ContextDir: dir,
			Platforms:  []string{"linux/amd64"},
			Ref:        repo + ":one",
			Insecure:   true,
			CacheRef:   repo + ":buildcache",
		}

		// The first build finds no cache (not an error) and exports one.
		first, err := b.Build(ctx, spec, func(string, string) {})
		require.NoError(t, err)
		cacheRef, err := name.ParseReference(spec.CacheRef, name.Insecure)
		require.NoError(t, err)
		_, err = remote.Head(cacheRef)
		require.NoError(t, err, "cache exported to %s", spec.CacheRef)

		spec.Ref = repo + ":two"
		var logs logRecorder
		second, err := b.Build(ctx, spec, logs.log)
		require.NoError(t, err)
		require.Equal(t, first, second, "same inputs, same image")
		require.True(t, logs.has("linux/amd64", "CACHED "), "log:\n%s", &logs)
	})

	t.Run("BrokenDockerfile", func(t *testing.T) {
		t.Parallel()
		b, tb := setup(t)
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		dir := writeDockerfile(t, "FROM "+tb.base+"\nFOO bar\n")

		_, err := b.Build(ctx, buildkit.BuildSpec{
			ContextDir: dir,
			Platforms:  []string{"linux/amd64", "linux/arm64"},
			Ref:        tb.repo(t) + ":broken",
			Insecure:   true,
		}, func(string, string) {})
		require.Error(t, err)
		t.Logf("error: %v", err)
		require.Contains(t, err.Error(), "dockerfile parse error on line 2: unknown instruction: FOO")
		requireOneLine(t, err)
	})

	t.Run("FailingStep", func(t *testing.T) {
		t.Parallel()
		b, tb := setup(t)
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		dir := writeDockerfile(t, "FROM "+tb.base+"\nRUN echo about to fail >&2 && exit 3\n")
		var logs logRecorder

		_, err := b.Build(ctx, buildkit.BuildSpec{
			ContextDir: dir,
			Platforms:  []string{"linux/amd64"},
			Ref:        tb.repo(t) + ":fails",
			Insecure:   true,
		}, logs.log)
		require.Error(t, err)
		t.Logf("error: %v", err)
		require.Contains(t, err.Error(), `process "/bin/sh -c echo about to fail >&2 && exit 3" did not complete successfully: exit code: 3`)
		requireOneLine(t, err)
		// A single-platform build has no platform in step names; it is known anyway.
		require.True(t, logs.has("linux/amd64", "about to fail"), "log:\n%s", &logs)
		require.True(t, logs.has("linux/amd64", "ERROR "), "log:\n%s", &logs)
	})

	t.Run("DockerfileOutsideContext", func(t *testing.T) {
		t.Parallel()
		b, err := buildkit.New(context.Background(), buildkit.Config{Addr: "unix:///nonexistent.sock"})
		require.NoError(t, err)
		defer b.Close()
		_, err = b.Build(context.Background(), buildkit.BuildSpec{
			ContextDir: t.TempDir(),
			Dockerfile: "../Dockerfile",
			Platforms:  []string{"linux/amd64"},
			Ref:        "127.0.0.1:1/x:y",
		}, func(string, string) {})
		require.ErrorContains(t, err, `Dockerfile "../Dockerfile" must be a path inside the context`)
	})

	t.Run("DockerfileBehindSymlink", func(t *testing.T) {
		t.Parallel()
		b, err := buildkit.New(context.Background(), buildkit.Config{Addr: "unix:///nonexistent.sock"})
		require.NoError(t, err)
		defer b.Close()
		outside := writeDockerfile(t, "FROM scratch\n")
		dir := t.TempDir()
		require.NoError(t, os.Symlink(outside, filepath.Join(dir, "sub")))

		_, err = b.Build(context.Background(), buildkit.BuildSpec{
			ContextDir: dir,
			Dockerfile: "sub/Dockerfile",
			Platforms:  []string{"linux/amd64"},
			Ref:        "127.0.0.1:1/x:y",
		}, nil)
		require.ErrorContains(t, err, "opening Dockerfile sub/Dockerfile: it is outside the context")
	})

	t.Run("DockerfileSymlinkToDevZero", func(t *testing.T) {
		t.Parallel()
		b, err := buildkit.New(context.Background(), buildkit.Config{Addr: "unix:///nonexistent.sock"})
		require.NoError(t, err)
		defer b.Close()
		dir := t.TempDir()
		require.NoError(t, os.Symlink("/dev/zero", filepath.Join(dir, "Dockerfile")))

		_, err = b.Build(context.Background(), buildkit.BuildSpec{
			ContextDir: dir,
			Platforms:  []string{"linux/amd64"},
			Ref:        "127.0.0.1:1/x:y",
		}, nil)
		require.EqualError(t, err, "building 127.0.0.1:1/x:y: opening Dockerfile Dockerfile: it is a symlink; commit it as a regular file")
	})

	t.Run("Canceled", func(t *testing.T) {
		t.Parallel()
		b, tb := setup(t)
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		// The nonce keeps this step out of any cache.
		nonce := fmt.Sprint(time.Now().UnixNano())
		dir := writeDockerfile(t, "FROM "+tb.base+"\nRUN echo sleeping-"+nonce+" && sleep 600\n")
		var logs logRecorder
		seen := logs.notifyOn("sleeping-" + nonce)
		ctx, stop := context.WithCancel(ctx)
		defer stop()

		done := make(chan struct{})
		var err error
		go func() {
			defer close(done)
			_, err = b.Build(ctx, buildkit.BuildSpec{
				ContextDir: dir,
				Platforms:  []string{"linux/amd64"},
				Ref:        tb.repo(t) + ":canceled",
				Insecure:   true,
			}, logs.log)
		}()
		waitOrTimeout(t, seen, time.Minute, "the RUN step to start")
		stop()
		waitOrTimeout(t, done, 30*time.Second, "Build to return after cancel")
		require.ErrorIs(t, err, context.Canceled)
	})
}

func TestBuilderRunTest(t *testing.T) {
	t.Parallel()

	for _, platform := range []string{"linux/amd64", "linux/arm64"} {
		arch := map[string]string{"linux/amd64": "x86_64", "linux/arm64": "aarch64"}[platform]

		t.Run(platform, func(t *testing.T) {
			t.Parallel()
			b, tb := setup(t)
			ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
			defer cancel()
			nonce := fmt.Sprint(time.Now().UnixNano())

			// Exit 0, twice: the second run must run again, not come from cache.
			for i := range 2 {
				var logs logRecorder
				code, err := b.RunTest(ctx, buildkit.TestSpec{
					Image:    tb.base,
					Platform: platform,
					Args:     []string{"sh", "-c", "echo arch=$(uname -m) greeting=$GREETING " + nonce},
					Env:      []string{"GREETING=hello world"},
					Insecure: true,
				}, logs.log)
				require.NoError(t, err, "run %d, log:\n%s", i, &logs)
				require.Equal(t, 0, code)
				require.True(t, logs.has(platform, "arch="+arch+" greeting=hello world "+nonce), "run %d, log:\n%s", i, &logs)
			}

			// Exit 3 is a result, not an error; stderr reaches the log.
			var logs logRecorder
			code, err := b.RunTest(ctx, buildkit.TestSpec{
				Image:    tb.base,
				Platform: platform,
				Args:     []string{"sh", "-c", "echo failing on $(uname -m) >&2; exit 3"},
				Insecure: true,
			}, logs.log)
			require.NoError(t, err, "log:\n%s", &logs)
			require.Equal(t, 3, code)
			t.Logf("log of the failing run:\n%s", &logs)
			require.True(t, logs.has(platform, "failing on "+arch), "log:\n%s", &logs)
		})
	}

	t.Run("ImageNotFound", func(t *testing.T) {
		t.Parallel()
		b, tb := setup(t)
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()

		code, err := b.RunTest(ctx, buildkit.TestSpec{
			Image:    tb.registry + "/slipway-test/nothing@sha256:" + strings.Repeat("0", 64),
			Platform: "linux/amd64",
			Args:     []string{"true"},
			Insecure: true,
		}, func(string, string) {})
		require.Error(t, err)
		t.Logf("error: %v", err)
		require.Equal(t, -1, code)
		require.Contains(t, err.Error(), "not found")
		requireOneLine(t, err)
	})

	t.Run("Canceled", func(t *testing.T) {
		t.Parallel()
		b, tb := setup(t)
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		ctx, stop := context.WithCancelCause(ctx)
		defer stop(nil)
		var logs logRecorder
		seen := logs.notifyOn("test-started")
		userCanceled := errors.New("canceled by user")

		done := make(chan struct{})
		var err error
		go func() {
			defer close(done)
			_, err = b.RunTest(ctx, buildkit.TestSpec{
				Image:    tb.base,
				Platform: "linux/amd64",
				Args:     []string{"sh", "-c", "echo test-started; sleep 600"},
			}, logs.log)
		}()
		waitOrTimeout(t, seen, time.Minute, "the test to start")
		stop(userCanceled)
		waitOrTimeout(t, done, 30*time.Second, "RunTest to return after cancel")
		require.ErrorIs(t, err, userCanceled)
	})
}

// readFile returns the content of path in the top layer of the image with
// digest in ref's repository.
func readFile(t *testing.T, ref, digest, path string) string {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	require.NoError(t, err)
	img, err := remote.Image(r.Context().Digest(digest))
	require.NoError(t, err)
	layers, err := img.Layers()
	require.NoError(t, err)
	top := layers[len(layers)-1]
	rc, err := top.Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s not in the top layer of %s", path, digest)
		}
		require.NoError(t, err)
		if strings.TrimPrefix(h.Name, "./") == path {
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			return string(b)
		}
	}
}

func requireOneLine(t *testing.T, err error) {
	t.Helper()
	require.NotContains(t, err.Error(), "\n")
	require.NotContains(t, err.Error(), "rpc error")
	require.NotContains(t, err.Error(), "desc =")
}
