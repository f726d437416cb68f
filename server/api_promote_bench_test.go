package server

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// BenchmarkPromote compares slipway's promote call (the whole HTTP request:
// token check, build lookup, registry reads and the manifest PUT, audit row)
// with `crane tag` from go-containerregistry on the same two-platform index in
// the same registry, each to a new tag, alternating, five rounds per b.N. Both
// go through the same counting proxy in front of the real registry. It
// reports the median times, their ratio (target ≤ 1.0), the registry
// requests each made per promotion and the blob bytes uploaded (target 0).
func BenchmarkPromote(b *testing.B) {
	p := setupPromote(b)
	defer closeDefaultIdle()
	repo := p.main.Host + fmt.Sprintf("/bench%d/acme/app", time.Now().UnixNano()%1e9)
	idx := pushIndex(b, repo)
	build := p.succeededBuild(b, idx, slipway.BuildSucceeded, "")
	rm := p.token(b, "bench-release", slipway.RoleReleaseManager)
	craneOpts := []crane.Option{crane.Insecure, crane.WithTransport(p.tr)}

	var slipwayTimes, craneTimes []time.Duration
	var slipwayReqs, craneReqs, blobBytes int
	n := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for range 5 {
			n++
			p.main.Reset()
			start := time.Now()
			resp, out := p.promote(b, rm, build.ID, map[string]any{"tags": []string{fmt.Sprintf("s%d", n)}})
			slipwayTimes = append(slipwayTimes, time.Since(start))
			require.Equal(b, http.StatusOK, resp.StatusCode, out["_raw"])
			slipwayReqs += len(p.main.Requests())
			blobBytes += int(p.main.UploadBytes())

			p.main.Reset()
			start = time.Now()
			require.NoError(b, crane.Tag(repo+"@"+idx.digest, fmt.Sprintf("c%d", n), craneOpts...))
			craneTimes = append(craneTimes, time.Since(start))
			craneReqs += len(p.main.Requests())
			blobBytes += int(p.main.UploadBytes())
		}
	}
	b.StopTimer()
	ms := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2]) / float64(time.Millisecond)
	}
	s, c := ms(slipwayTimes), ms(craneTimes)
	b.ReportMetric(s, "slipway-ms")
	b.ReportMetric(c, "crane-ms")
	b.ReportMetric(s/c, "slipway/crane")
	b.ReportMetric(float64(slipwayReqs)/float64(n), "slipway-reqs")
	b.ReportMetric(float64(craneReqs)/float64(n), "crane-reqs")
	b.ReportMetric(float64(blobBytes), "blob-bytes")
	b.ReportMetric(0, "ns/op")
}
