package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/test/testenv"
)

// BenchmarkBuildVsBuildctl builds the same small multi-stage Dockerfile with
// slipway end to end (webhook to the end of the build's log stream) and with
// plain `buildctl build` against the same private buildkitd, cold (its cache
// pruned first) and warm, alternating, five times each. It reports the median
// ratios slipway/buildctl (targets: at most 1.10 cold, 1.5 warm) and the
// median time from the webhook to the first BuildKit vertex in the build log.
//
//	make bench   (or: GOTESTFLAGS="-run ^$ -bench BuildVsBuildctl ./test/e2e" bash scripts/test.sh)
func BenchmarkBuildVsBuildctl(b *testing.B) {
	ctx := context.Background()
	registryHost := os.Getenv("TEST_REGISTRY")
	if registryHost == "" || os.Getenv("TEST_DATABASE_URL") == "" {
		b.Skip("needs the services of make test")
	}
	root, err := testenv.RepoRoot()
	require.NoError(b, err)
	buildctl := filepath.Join(root, "bin", "buildctl")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(b, err)
	bk := testenv.StartBuildkitd(b, registryHost)

	files := map[string]string{
		"Dockerfile": fmt.Sprintf(`FROM %s AS build
RUN echo bench-%d && for i in $(seq 1 200); do echo "line $i"; done > /list && sha256sum /list > /sum
FROM %s
COPY --from=build /list /sum /
`, base, time.Now().UnixNano(), base),
		".slipway.yml": "platforms: [linux/amd64]\ncache: off\n",
	}
	dir := b.TempDir()
	for name, content := range files {
		require.NoError(b, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
	s := newStack(b, "SLIPWAY_BUILDKIT_ADDR="+bk.Addr)
	s.start("worker", "SLIPWAY_WORKER_ID=bench-w1", "SLIPWAY_BUILDKIT_ADDR="+bk.Addr)
	r := &repos{t: b, base: b.TempDir()}
	r.url = testenv.ServeGit(b, r.base)
	cloneURL, commit := r.add("bench", files)

	run := 0
	viaSlipway := func() (total, toVertex time.Duration) {
		run++
		start := time.Now()
		id := s.pushBuild(fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), run), testenv.PushParams{Owner: "acme", Name: "bench",
			CloneURL: cloneURL, Ref: fmt.Sprintf("refs/heads/bench-%d", run), After: commit})
		var first time.Time
		s.follow(id, 0, func(l sseLine) bool {
			if first.IsZero() && l.Step == "build" && strings.HasPrefix(l.Text, "[") {
				first = l.Time
			}
			return true
		})
		total = time.Since(start)
		bd := s.build(id)
		require.Equal(b, "succeeded", string(bd.State), "error: %s", bd.Error)
		return total, first.Sub(start)
	}
	viaBuildctl := func() time.Duration {
		run++
		ref := fmt.Sprintf("%s/bench/buildctl:%d", registryHost, run)
		start := time.Now()
		out, err := exec.Command(buildctl, "--addr", bk.Addr, "build", "--frontend", "dockerfile.v0",
			"--local", "context="+dir, "--local", "dockerfile="+dir, "--opt", "platform=linux/amd64",
			"--opt", "attest:provenance=mode=min",
			"--output", "type=image,name="+ref+",push=true,oci-mediatypes=true,registry.insecure=true").CombinedOutput()
		require.NoError(b, err, "%s", out)
		return time.Since(start)
	}
	median := func(d []float64) float64 {
		slices.Sort(d)
		return d[len(d)/2]
	}
	for range b.N {
		var cold, warm, vertex []float64
		for i := range 5 {
			prune(s.t, bk.Addr)
			sc, v := viaSlipway()
			prune(s.t, bk.Addr)
			bc := viaBuildctl()
			sw, _ := viaSlipway()
			bw := viaBuildctl()
			cold = append(cold, float64(sc)/float64(bc))
			warm = append(warm, float64(sw)/float64(bw))
			vertex = append(vertex, float64(v.Milliseconds()))
			fmt.Printf("round %d: cold slipway %s buildctl %s; warm slipway %s buildctl %s; webhook to first vertex %s\n", i+1, sc, bc, sw, bw, v)
		}
		b.ReportMetric(median(cold), "cold-ratio")
		b.ReportMetric(median(warm), "warm-ratio")
		b.ReportMetric(median(vertex), "ms-webhook-to-vertex")
		fmt.Printf("MEASURE median slipway/buildctl: cold %.2f (target <= 1.10), warm %.2f (target <= 1.5); webhook to first vertex %.0f ms\n",
			median(cold), median(warm), median(vertex))
	}
}
