package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/buildkit"
	"github.com/slipway-ci/slipway/registry"
	"github.com/slipway-ci/slipway/test/testenv"
	"github.com/slipway-ci/slipway/worker"
)

// TestPrivateRegistries builds against two registries that need a login and
// speak only TLS with certificates from two private CAs (docker-registry with
// htpasswd): FROM a private base image, cache export and import, test pulls
// and promotion from one into the other with different credentials, all with
// credentials from one Docker config.json and CAs from one bundle, as
// SLIPWAY_DOCKER_CONFIG and SLIPWAY_CA_BUNDLE give them. Wrong credentials
// and an unknown CA fail at once with a message naming the host and the
// setting, and are not infrastructure failures.
func TestPrivateRegistries(t *testing.T) {
	ctx := context.Background()
	const pass1, pass2 = "Builder-pa55-7f3e", "Releaser-pa55-91ac"
	src := testenv.StartSecureRegistry(t, "builder", pass1)
	dst := testenv.StartSecureRegistry(t, "releaser", pass2)
	dir := t.TempDir()
	dockerConfig := testenv.DockerConfig(t, dir, map[string][2]string{
		src.Host: {"builder", pass1},
		dst.Host: {"releaser", pass2},
	})
	bundle := filepath.Join(dir, "ca-bundle.pem")
	var pems []byte
	for _, f := range []string{src.CAFile, dst.CAFile} {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		pems = append(pems, b...)
	}
	require.NoError(t, os.WriteFile(bundle, pems, 0o600))
	tr, err := registry.TransportWithCA(bundle)
	require.NoError(t, err)
	reg := registry.New(registry.WithKeychain(registry.DockerConfigKeychain(dockerConfig)), registry.WithTransport(tr))

	base, err := testenv.PushBaseImage(ctx, src.Host, remote.WithTransport(tr),
		remote.WithAuth(&authn.Basic{Username: "builder", Password: pass1}))
	require.NoError(t, err)
	plats := []string{"linux/amd64", "linux/arm64"}

	t.Run("CredentialsAndCAFromTheSettings", func(t *testing.T) {
		_, got, err := reg.VerifyIndex(ctx, base, plats)
		require.NoError(t, err)
		require.Len(t, got, 2)
	})
	t.Run("UnknownCAIsAClearUserError", func(t *testing.T) {
		noCA := registry.New(registry.WithKeychain(registry.DockerConfigKeychain(dockerConfig)))
		_, _, err := noCA.VerifyIndex(ctx, base, plats)
		require.Error(t, err)
		require.Contains(t, err.Error(), src.Host)
		require.Contains(t, err.Error(), "unknown authority")
		require.Contains(t, err.Error(), "SLIPWAY_CA_BUNDLE")
		require.False(t, worker.IsInfra(err), "an untrusted certificate is not retried: %v", err)
	})
	t.Run("WrongPasswordIsAUserError", func(t *testing.T) {
		wrong := testenv.DockerConfig(t, t.TempDir(), map[string][2]string{src.Host: {"builder", "not-the-password"}})
		bad := registry.New(registry.WithKeychain(registry.DockerConfigKeychain(wrong)), registry.WithTransport(tr))
		_, _, err := bad.VerifyIndex(ctx, base, plats)
		require.Error(t, err)
		require.Equal(t, slipway.EFORBIDDEN, slipway.ErrorCode(err), "%v", err)
		require.Contains(t, err.Error(), src.Host)
		require.Contains(t, err.Error(), "SLIPWAY_DOCKER_CONFIG")
		require.NotContains(t, err.Error(), "not-the-password")
		require.False(t, worker.IsInfra(err), "wrong credentials are not retried: %v", err)

		anon := registry.New(registry.WithTransport(tr))
		_, _, err = anon.VerifyIndex(ctx, base, plats)
		require.Equal(t, slipway.EFORBIDDEN, slipway.ErrorCode(err), "without credentials: %v", err)
	})

	// http = false: buildkitd would speak plain http to a loopback host.
	caTOML := fmt.Sprintf("[registry.%q]\n  http = false\n  ca = [%q]\n[registry.%q]\n  http = false\n  ca = [%q]\n", src.Host, src.CAFile, dst.Host, dst.CAFile)
	bk1 := testenv.StartBuildkitdConfig(t, caTOML)
	b1, err := buildkit.New(ctx, buildkit.Config{Addr: bk1.Addr})
	require.NoError(t, err)
	defer b1.Close()
	auth := buildkit.Auth{DockerConfig: dockerConfig, CABundle: bundle}

	ctxDir := t.TempDir()
	nonce := fmt.Sprintf("nonce-%d", time.Now().UnixNano())
	require.NoError(t, os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(fmt.Sprintf(
		"FROM %s\nRUN echo %s && uname -m > /arch\n", base, nonce)), 0o644))
	repo := src.Host + "/acme/private"
	spec := func(tag string, a buildkit.Auth) buildkit.BuildSpec {
		return buildkit.BuildSpec{ContextDir: ctxDir, Dockerfile: "Dockerfile", Platforms: plats,
			Ref: repo + ":" + tag, CacheRepo: repo, Auth: a}
	}
	var log logLines

	var digest string
	t.Run("FromPrivateBaseWithCacheExport", func(t *testing.T) {
		// Watch every process's command line while the build runs.
		stop := make(chan struct{})
		leaks := make(chan string, 1)
		go func() { leaks <- watchCmdlines(stop, pass1, pass2) }()
		d, err := b1.Build(ctx, spec("one", auth), log.add)
		close(stop)
		require.NoError(t, err, "%s", log.String())
		require.Empty(t, <-leaks, "a password showed in a process's command line")
		_, got, err := reg.VerifyIndex(ctx, repo+"@"+d, plats)
		require.NoError(t, err)
		require.Len(t, got, 2)
		digest = d
		require.Positive(t, src.Uploads(), "the access log counts uploads")
		require.Contains(t, log.String(), "linux/amd64 [2/2] RUN", "the log names the RUN step")
		require.NotContains(t, log.String(), "linux/amd64 CACHED [2/2] RUN", "the first build runs its RUN step")
	})
	t.Run("CacheImportUploadsNoLayer", func(t *testing.T) {
		require.NotEmpty(t, digest)
		// A fresh buildkitd has no local cache: only the registry's can help.
		bk2 := testenv.StartBuildkitdConfig(t, caTOML)
		b2, err := buildkit.New(ctx, buildkit.Config{Addr: bk2.Addr})
		require.NoError(t, err)
		defer b2.Close()
		before := src.Uploads()
		var log2 logLines
		d, err := b2.Build(ctx, spec("two", auth), log2.add)
		require.NoError(t, err, "%s", log2.String())
		require.Equal(t, digest, d, "the same inputs give the same index")
		for _, p := range []string{"amd64", "arm64"} {
			require.Contains(t, log2.String(), "linux/"+p+" CACHED [2/2] RUN echo "+nonce, "the RUN step came from the registry cache")
		}
		require.Equal(t, before, src.Uploads(), "the second build uploaded a blob")
	})
	t.Run("TestPullAndEnvHaveNoCredential", func(t *testing.T) {
		require.NotEmpty(t, digest)
		var tlog logLines
		code, err := b1.RunTest(ctx, buildkit.TestSpec{Image: repo + "@" + digest, Platform: "linux/arm64",
			Args: []string{"sh", "-c", "env; cat /arch"}, Auth: auth}, tlog.add)
		require.NoError(t, err, "%s", tlog.String())
		require.Equal(t, 0, code, "%s", tlog.String())
		require.Contains(t, tlog.String(), "aarch64")
		for _, secret := range []string{pass1, pass2, "YnVpbGRlcjpC"} {
			require.NotContains(t, tlog.String(), secret)
		}
	})
	t.Run("WrongPasswordFailsTheBuildOnce", func(t *testing.T) {
		wrong := testenv.DockerConfig(t, t.TempDir(), map[string][2]string{src.Host: {"builder", "not-the-password"}})
		var wlog logLines
		_, err := b1.Build(ctx, spec("wrong", buildkit.Auth{DockerConfig: wrong, CABundle: bundle}), wlog.add)
		require.Error(t, err)
		require.Contains(t, err.Error(), src.Host)
		require.Contains(t, err.Error(), "SLIPWAY_DOCKER_CONFIG")
		require.NotContains(t, err.Error()+wlog.String(), "not-the-password")
		require.False(t, worker.IsInfra(err), "wrong credentials are not retried: %v", err)
		t.Log(err)
	})
	t.Run("PromotionAcrossTwoAuthenticatedRegistries", func(t *testing.T) {
		require.NotEmpty(t, digest)
		res, err := reg.Resolve(ctx, registry.PromoteSpec{Source: repo, Digest: digest, Target: dst.Host + "/release/app", Tags: []string{"v1.0.0"}})
		require.NoError(t, err)
		require.Equal(t, []string{""}, res.Previous, "a new tag")
		require.NoError(t, reg.Retag(ctx, res))
		d, got, err := reg.VerifyIndex(ctx, dst.Host+"/release/app:v1.0.0", plats)
		require.NoError(t, err)
		require.Equal(t, digest, d, "promotion keeps the digest")
		require.Len(t, got, 2)
	})
	for _, l := range []string{log.String(), src.Log(), dst.Log()} {
		require.NotContains(t, l, pass1)
		require.NotContains(t, l, pass2)
	}
}

// logLines collects a LogFunc's lines.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) add(platform, text string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, platform+" "+text)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// watchCmdlines reads every process's command line (what ps shows) until
// stop is closed and returns the first one holding one of secrets.
func watchCmdlines(stop <-chan struct{}, secrets ...string) string {
	for {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			for _, s := range secrets {
				if strings.Contains(string(b), s) {
					return strings.ReplaceAll(string(b), "\x00", " ")
				}
			}
		}
		select {
		case <-stop:
			return ""
		case <-time.After(20 * time.Millisecond): // sampling other processes
		}
	}
}
