package buildkit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/buildkit"
)

func TestParseEndpoints(t *testing.T) {
	t.Parallel()
	eps, err := buildkit.ParseEndpoints("unix:///run/buildkit/buildkitd.sock")
	require.NoError(t, err)
	require.Len(t, eps, 1)
	require.Empty(t, eps[0].Platforms, "one address builds everything")

	eps, err = buildkit.ParseEndpoints(" linux/amd64=unix:///a.sock, linux/arm64=tcp://arm:1234?tlsdir=/etc/tls&tlsservername=arm.local ," +
		"linux/arm64=tcp://arm2:1234,linux/arm/v7=tcp://arm:1234?tlsdir=/etc/tls&tlsservername=arm.local")
	require.NoError(t, err)
	require.Len(t, eps, 3)
	require.Equal(t, "unix:///a.sock", eps[0].Addr)
	require.Equal(t, []string{"linux/amd64"}, eps[0].Platforms)
	require.Equal(t, "tcp://arm:1234", eps[1].Addr, "options leave the address")
	require.Equal(t, []string{"linux/arm64", "linux/arm/v7"}, eps[1].Platforms, "one builder, two platforms")
	require.Equal(t, "arm.local", eps[1].ServerName)
	require.Equal(t, "/etc/tls/ca.pem", eps[1].CACert)
	require.Equal(t, "/etc/tls/cert.pem", eps[1].Cert)
	require.Equal(t, "/etc/tls/key.pem", eps[1].Key)
	require.Equal(t, []string{"linux/arm64"}, eps[2].Platforms)

	for in, want := range map[string]string{
		"":                                   "none given",
		"linux/amd64=buildkitd.sock":         "Addr",
		"nope=unix:///a.sock":                "platform",
		"tcp://h:1?tlscert=/c.pem":           "tlscert and tlskey go together",
		"tcp://h:1?tls=1":                    `unknown option "tls"`,
		"linux/amd64=unix:///a.sock,ftp://x": "scheme",
	} {
		_, err := buildkit.ParseEndpoints(in)
		require.ErrorContains(t, err, want, in)
	}
}

// A platform no builder lists natively goes to one that emulates it, and a
// build whose platforms all land on one builder stays one solve.
func TestPoolFallsBackToEmulation(t *testing.T) {
	t.Parallel()
	_, tb := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	eps, err := buildkit.ParseEndpoints("linux/amd64=" + tb.addr)
	require.NoError(t, err)
	merged := false
	pool, err := buildkit.NewPool(ctx, eps, func(context.Context, string, []string) (string, error) {
		merged = true
		return "", nil
	})
	require.NoError(t, err)
	defer pool.Close()
	dir := writeDockerfile(t, "FROM "+tb.base+"\nRUN uname -m > /arch && echo "+time.Now().String()+"\n")
	var logs logRecorder
	_, err = pool.Build(ctx, buildkit.BuildSpec{
		ContextDir: dir, Platforms: []string{"linux/amd64", "linux/arm64"},
		Ref: tb.repo(t) + ":fallback", Insecure: true, Provenance: "min",
	}, logs.log)
	require.NoError(t, err, "log:\n%s", &logs)
	require.False(t, merged, "one builder: one solve, no merge")
	require.True(t, logs.has("linux/arm64", "No buildkitd builds linux/arm64 natively: "+tb.addr+" builds it under emulation"), "log:\n%s", &logs)
}

func TestCacheRepoFor(t *testing.T) {
	t.Parallel()
	require.Equal(t, "reg:5000/acme/app", buildkit.CacheRepoFor("", "reg:5000/acme/app"))
	require.Equal(t, "cache.local/ci-cache/acme/app", buildkit.CacheRepoFor("cache.local/ci-cache/", "reg:5000/acme/app"))
	ref, more := buildkit.CacheRefs("c/acme/app", []string{"linux/amd64", "linux/arm64"})
	require.Equal(t, "c/acme/app:buildcache-linux-amd64_linux-arm64", ref)
	require.Equal(t, []string{"c/acme/app:buildcache-linux-amd64", "c/acme/app:buildcache-linux-arm64"}, more)
	ref, more = buildkit.CacheRefs("c/acme/app", []string{"linux/arm/v7"})
	require.Equal(t, "c/acme/app:buildcache-linux-arm-v7", ref)
	require.Empty(t, more)

	// A test target's cache is its own, and imports the image's.
	ref, more = buildkit.ScopedCacheRefs("c:5000/acme/app", []string{"linux/amd64", "linux/arm64"}, "test")
	require.Equal(t, "c:5000/acme/app:buildcache-linux-amd64_linux-arm64-test", ref)
	require.Equal(t, []string{"c:5000/acme/app:buildcache-linux-amd64_linux-arm64", "c:5000/acme/app:buildcache-linux-amd64", "c:5000/acme/app:buildcache-linux-arm64"}, more)
	ref, _ = buildkit.ScopedCacheRefs("c:5000/acme/app", []string{"linux/amd64"}, strings.Repeat("t", 200))
	require.Len(t, strings.TrimPrefix(ref, "c:5000/acme/app:"), 128, "a tag has at most 128 characters")
	ref, more = buildkit.ScopedCacheRefs("c/acme/app", []string{"linux/amd64"}, "")
	require.Equal(t, "c/acme/app:buildcache-linux-amd64", ref)
	require.Empty(t, more)
}
