package worker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/test/testenv"
)

// gitCheckout commits files and symlinks (name → target) to a new
// repository and returns a fresh clone's working tree: the tree exactly as
// git lays a pushed commit out.
func gitCheckout(t *testing.T, files map[string]string, links map[string]string) string {
	t.Helper()
	ctx := context.Background()
	src := t.TempDir()
	for name, data := range files {
		p := filepath.Join(src, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(data), 0o644))
	}
	for name, target := range links {
		p := filepath.Join(src, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.Symlink(target, p))
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "poison"}} {
		_, err := testenv.Git(ctx, src, []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t.invalid", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t.invalid"}, args...)
		require.NoError(t, err)
	}
	dir := filepath.Join(t.TempDir(), "checkout")
	_, err := testenv.Git(ctx, "", nil, "clone", "-q", "--no-local", src, dir)
	require.NoError(t, err)
	return dir
}

// loadQuickly runs LoadRepoConfig and fails the test if it takes long: the
// symlink to /dev/zero used to be read until the worker ran out of memory.
func loadQuickly(t *testing.T, dir string) (*RepoConfig, error) {
	t.Helper()
	type result struct {
		cfg *RepoConfig
		err error
	}
	done := make(chan result, 1)
	go func() {
		cfg, err := LoadRepoConfig(dir)
		done <- result{cfg, err}
	}()
	select {
	case r := <-done:
		return r.cfg, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("LoadRepoConfig did not return within 10s")
		return nil, nil
	}
}

func TestLoadRepoConfigPoisonFiles(t *testing.T) {
	t.Parallel()

	t.Run("SymlinkToDevZero", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{"Dockerfile": "FROM scratch\n"}, map[string]string{".slipway.yml": "/dev/zero"})
		fi, err := os.Lstat(filepath.Join(dir, RepoConfigFile))
		require.NoError(t, err)
		require.NotZero(t, fi.Mode()&os.ModeSymlink, "git checked the link out as a link")
		var before syscall.Rusage
		require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &before))
		_, err = loadQuickly(t, dir)
		require.EqualError(t, err, ".slipway.yml is a symlink to /dev/zero; slipway reads it only as a regular file, so commit the file itself instead of a link")
		var after syscall.Rusage
		require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &after))
		// The peak memory of the whole test binary: a read of /dev/zero up to
		// the cap would not show, but one without a cap (gigabytes) would.
		require.Less(t, after.Maxrss-before.Maxrss, int64(256<<10), "max RSS grew by over 256 MiB (Maxrss is in KiB)")
	})

	t.Run("SymlinkInsideRepositoryRefused", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{"ci/slipway.yml": "cache: off\n"}, map[string]string{".slipway.yml": "ci/slipway.yml"})
		_, err := loadQuickly(t, dir)
		require.ErrorContains(t, err, ".slipway.yml is a symlink to ci/slipway.yml; slipway reads it only as a regular file")
	})

	t.Run("SymlinkToEtcPasswd", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, nil, map[string]string{".slipway.yml": "/etc/passwd"})
		_, err := loadQuickly(t, dir)
		require.ErrorContains(t, err, "is a symlink to /etc/passwd")
		require.NotContains(t, err.Error(), "root:", "nothing of the target is read")
	})

	t.Run("Folder", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{".slipway.yml/x": "x\n"}, nil)
		_, err := loadQuickly(t, dir)
		require.EqualError(t, err, ".slipway.yml is a folder; commit it as a regular file")
	})

	t.Run("NamedPipeDoesNotBlock", func(t *testing.T) {
		t.Parallel()
		// git cannot commit a FIFO; a checkout dir may still hold one (a
		// build step, a submodule's hook): opening it must not wait for a writer.
		dir := t.TempDir()
		require.NoError(t, syscall.Mkfifo(filepath.Join(dir, RepoConfigFile), 0o644))
		_, err := loadQuickly(t, dir)
		require.EqualError(t, err, ".slipway.yml is a named pipe; commit it as a regular file")
	})

	t.Run("Oversize", func(t *testing.T) {
		t.Parallel()
		big := "# " + strings.Repeat("x", RepoConfigMaxBytes) + "\n"
		dir := gitCheckout(t, map[string]string{".slipway.yml": big}, nil)
		_, err := loadQuickly(t, dir)
		require.EqualError(t, err, ".slipway.yml is 262147 bytes; slipway reads at most 256 KiB of it, so make it smaller")
		_, err = ParseRepoConfig([]byte(big))
		require.EqualError(t, err, ".slipway.yml is 262147 bytes; slipway reads at most 256 KiB of it, so make it smaller")
	})

	t.Run("AtTheCapIsRead", func(t *testing.T) {
		t.Parallel()
		body := "cache: min\n"
		body += "#" + strings.Repeat("x", RepoConfigMaxBytes-len(body)-2) + "\n"
		require.Len(t, body, RepoConfigMaxBytes)
		cfg, err := loadQuickly(t, gitCheckout(t, map[string]string{".slipway.yml": body}, nil))
		require.NoError(t, err)
		require.Equal(t, CacheMin, cfg.Cache)
	})

	t.Run("MissingMeansDefaults", func(t *testing.T) {
		t.Parallel()
		cfg, err := loadQuickly(t, gitCheckout(t, map[string]string{"Dockerfile": "FROM scratch\n"}, nil))
		require.NoError(t, err)
		require.Equal(t, "Dockerfile", cfg.Dockerfile)
	})
}

func TestCheckBuildFiles(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("root only\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "Dockerfile"), []byte("FROM scratch\nCOPY secret /\n"), 0o644))

	check := func(t *testing.T, dir, yml string) (string, error) {
		t.Helper()
		cfg, err := ParseRepoConfig([]byte(yml))
		require.NoError(t, err)
		return checkBuildFiles(dir, cfg)
	}

	t.Run("Plain", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{"app/Dockerfile": "FROM scratch\n", "app/.dockerignore": "*.log\n"}, nil)
		got, err := check(t, dir, "context: app\n")
		require.NoError(t, err)
		real, err := filepath.EvalSymlinks(filepath.Join(dir, "app"))
		require.NoError(t, err)
		require.Equal(t, real, got)
	})

	t.Run("ContextSymlinkToEtc", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{"Dockerfile": "FROM scratch\n"}, map[string]string{"ctx": "/etc"})
		_, err := check(t, dir, "context: ctx\n")
		require.EqualError(t, err, "build context: ctx is a symlink to /etc, outside the repository; commit the folder itself or link to one inside the repository")
	})

	t.Run("ContextSymlinkToFolderOutside", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{"Dockerfile": "FROM scratch\n"}, nil)
		// Relative, so the link resolves from the checkout to outside.
		rel, err := filepath.Rel(dir, outside)
		require.NoError(t, err)
		require.NoError(t, os.Symlink(rel, filepath.Join(dir, "ctx")))
		_, err = check(t, dir, "context: ctx\n")
		require.EqualError(t, err, "build context: ctx is a symlink to "+rel+", outside the repository; commit the folder itself or link to one inside the repository")
	})

	t.Run("ContextThroughSymlinkedParent", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, nil, map[string]string{"up": "/"})
		_, err := check(t, dir, "context: up/etc\n")
		require.EqualError(t, err, "build context: up is a symlink to /, outside the repository; commit the folder itself or link to one inside the repository")
	})

	t.Run("ContextSymlinkInsideFollowed", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{"src/app/Dockerfile": "FROM scratch\n"}, map[string]string{"app": "src/app"})
		got, err := check(t, dir, "context: app\n")
		require.NoError(t, err)
		real, err := filepath.EvalSymlinks(filepath.Join(dir, "src/app"))
		require.NoError(t, err)
		require.Equal(t, real, got, "BuildKit gets the real folder")
	})

	t.Run("ContextSymlinkLoop", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{"Dockerfile": "FROM scratch\n"}, map[string]string{"a": "b", "b": "a"})
		_, err := check(t, dir, "context: a\n")
		require.EqualError(t, err, "build context: a goes through a loop of symlinks; commit regular files and folders")
	})

	t.Run("ContextIsAFile", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{"Dockerfile": "FROM scratch\n", "app": "x"}, nil)
		_, err := check(t, dir, "context: app\n")
		require.EqualError(t, err, "build context: app is a file, not a folder; app needs a folder there")
	})

	t.Run("DockerfileFolderSymlinkOutside", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, nil, map[string]string{"build": outside})
		_, err := check(t, dir, "dockerfile: build/Dockerfile\n")
		require.ErrorContains(t, err, "build is a symlink to "+outside+", outside the repository")
	})

	t.Run("DockerfileSymlinkToDevZero", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, nil, map[string]string{"Dockerfile": "/dev/zero"})
		_, err := check(t, dir, "")
		require.EqualError(t, err, "Dockerfile is a symlink to /dev/zero; slipway reads it only as a regular file, so commit the file itself instead of a link")
	})

	t.Run("DockerfileMissing", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{"README": "x\n"}, nil)
		_, err := check(t, dir, "context: .\ndockerfile: docker/Dockerfile\n")
		require.EqualError(t, err, "the Dockerfile docker/Dockerfile is not in the commit; add it or set dockerfile: in .slipway.yml (relative to context:)")
	})

	t.Run("DockerfileOversize", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{"Dockerfile": "FROM scratch\n" + strings.Repeat("#\n", DockerfileMaxBytes)}, nil)
		_, err := check(t, dir, "")
		require.ErrorContains(t, err, "; slipway reads at most 1 MiB of it, so make it smaller")
		require.Regexp(t, `^Dockerfile is 20971[0-9]{2} bytes;`, err.Error())
	})

	t.Run("DockerignoreSymlinkToDevZero", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{"app/Dockerfile": "FROM scratch\n"}, map[string]string{"app/.dockerignore": "/dev/zero"})
		_, err := check(t, dir, "context: app\n")
		require.EqualError(t, err, "app/.dockerignore is a symlink to /dev/zero; slipway reads it only as a regular file, so commit the file itself instead of a link")
	})

	t.Run("DockerfileOwnIgnoreIsAFolder", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{"Dockerfile": "FROM scratch\n", "Dockerfile.dockerignore/x": "x\n"}, nil)
		_, err := check(t, dir, "")
		require.EqualError(t, err, "Dockerfile.dockerignore is a folder; commit it as a regular file")
	})

	t.Run("DockerignoreOversize", func(t *testing.T) {
		t.Parallel()
		dir := gitCheckout(t, map[string]string{"Dockerfile": "FROM scratch\n", ".dockerignore": strings.Repeat("a\n", DockerignoreMaxBytes/2+1)}, nil)
		_, err := check(t, dir, "")
		require.EqualError(t, err, ".dockerignore is 1048578 bytes; slipway reads at most 1 MiB of it, so make it smaller")
	})
}
