package buildkit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/buildkit"
	"github.com/slipway-ci/slipway/registry"
	"github.com/slipway-ci/slipway/test/testenv"
)

// TestReproducibleBuild builds one unchanged context on two buildkitds (the
// shared one and a fresh one, so no step comes from a cache and every file
// of the RUN step is written anew) a second apart: with SourceDateEpoch both
// push the same index digest; with provenance the per-platform images are
// still the same and only the index differs; without SourceDateEpoch the
// images differ (the check can fail).
func TestReproducibleBuild(t *testing.T) {
	t.Parallel()
	shared, tb := setup(t)
	fresh := testenv.StartBuildkitd(t, tb.registry)
	other, err := buildkit.New(context.Background(), buildkit.Config{Addr: fresh.Addr})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, other.Close()) })

	// Files with content that does not change between runs; their mtimes do.
	dir := writeDockerfile(t, "FROM "+tb.base+"\nRUN mkdir -p /out && echo hello > /out/greeting && uname -m > /out/arch\n")
	plats := []string{"linux/amd64", "linux/arm64"}
	repo := tb.repo(t)
	build := func(b *buildkit.Builder, tag string, epoch int64, provenance string) (string, map[string]string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		var logs logRecorder
		ref := repo + ":" + tag
		digest, err := b.Build(ctx, buildkit.BuildSpec{ContextDir: dir, Platforms: plats, Ref: ref, Insecure: true,
			SourceDateEpoch: epoch, Provenance: provenance}, logs.log)
		require.NoError(t, err, "log:\n%s", &logs)
		_, platforms, err := registry.New(registry.WithInsecure(true)).VerifyIndex(ctx, ref, plats)
		require.NoError(t, err)
		out := map[string]string{}
		for _, p := range platforms {
			out[p.Platform] = p.Digest
		}
		return digest, out
	}
	const epoch = 1700000000 // a commit's time
	one, onePlats := build(shared, "one", epoch, "")
	time.Sleep(1100 * time.Millisecond) // a later second, for any timestamp left
	two, twoPlats := build(other, "two", epoch, "")
	require.Equal(t, one, two, "two builds of one context with SOURCE_DATE_EPOCH push one index")
	require.Equal(t, onePlats, twoPlats)

	// Provenance records each solve's own times: the images stay the same.
	p1, p1Plats := build(shared, "prov-one", epoch, "min")
	time.Sleep(1100 * time.Millisecond)
	p2, p2Plats := build(other, "prov-two", epoch, "min")
	require.Equal(t, p1Plats, p2Plats, "the same image on every platform")
	require.Equal(t, onePlats, p1Plats)
	require.NotEqual(t, p1, p2, "the provenance differs (documented)")

	// Without the epoch, the images are dated by the build.
	n1, _ := build(shared, "plain-one", 0, "")
	time.Sleep(1100 * time.Millisecond)
	n2, _ := build(fresh2(t, tb), "plain-two", 0, "")
	require.NotEqual(t, n1, n2, fmt.Sprintf("without SOURCE_DATE_EPOCH the index changes (%s)", n1))
}

// fresh2 is another fresh buildkitd, so the plain build's RUN step runs again.
func fresh2(t *testing.T, tb *testBundle) *buildkit.Builder {
	t.Helper()
	d := testenv.StartBuildkitd(t, tb.registry)
	b, err := buildkit.New(context.Background(), buildkit.Config{Addr: d.Addr})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}
