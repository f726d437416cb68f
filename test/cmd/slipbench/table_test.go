package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// goBenchOutput is `go test -bench` output as make bench prints it (values
// made up), with the lines around the results.
const goBenchOutput = `goos: linux
goarch: amd64
pkg: github.com/slipway-ci/slipway/server
cpu: AMD EPYC
BenchmarkPromote-2   	       1	         0 ns/op	         0 blob-bytes	         6.000 crane-reqs	        12.50 crane-ms	        10.00 slipway-ms	         5.000 slipway-reqs
webhook memory under 40 concurrent unsigned 24 MB bodies (peak RSS of the server process):
BenchmarkWebhookMemoryUnderAttack-2 	       1	1234567 ns/op	       988.0 peak-MiB-baseline-content-length	      1499 peak-MiB-baseline-chunked	       147.0 peak-MiB-budget-content-length	       162.0 peak-MiB-budget-chunked
PASS
ok  	github.com/slipway-ci/slipway/server	12.3s
pkg: github.com/slipway-ci/slipway/test/e2e
BenchmarkBuildVsBuildctl 	       1	 9 ns/op	         1.25 cold-ratio	         1.40 warm-ratio	       310.0 ms-webhook-to-vertex
`

func TestParseGoBench(t *testing.T) {
	got, err := parseGoBench(strings.NewReader(goBenchOutput))
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Equal(t, 10.0, got["BenchmarkPromote"]["slipway-ms"], "the -2 GOMAXPROCS suffix is not part of the name")
	require.Equal(t, 12.5, got["BenchmarkPromote"]["crane-ms"])
	require.Equal(t, 1499.0, got["BenchmarkWebhookMemoryUnderAttack"]["peak-MiB-baseline-chunked"])
	require.Equal(t, 1.25, got["BenchmarkBuildVsBuildctl"]["cold-ratio"], "a name without a suffix")
}

func TestPrintTable(t *testing.T) {
	results, err := parseGoBench(strings.NewReader(goBenchOutput))
	require.NoError(t, err)
	no := false
	rows := append([]figure{
		{name: "webhook intake, durable: deliveries/s", value: 1834.4, unit: "/s", baseline: 25000, baseName: "chi do-nothing", target: atLeast(2000, "/s")},
		{name: "webhook intake, durable: p99 answer", value: 21.5, unit: " ms", baseline: 1.25, baseName: "chi do-nothing", target: atMost(25, " ms")},
		{name: "everything accepted?", value: 1, target: atLeast(0, ""), extraOK: &no},
	}, goBenchFigures(results)...)
	var b strings.Builder
	require.NoError(t, printTable(&b, rows))
	lines := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		name, _, _ := strings.Cut(l, "  ")
		lines[name] = strings.Join(strings.Fields(l), " ")
	}
	require.Contains(t, lines["figure"], "measured baseline (same run) ratio target verdict")
	require.Equal(t, "webhook intake, durable: deliveries/s 1834/s 25000/s (chi do-nothing) 0.0734× ≥ 2000/s MISSED", lines["webhook intake, durable: deliveries/s"])
	require.Equal(t, "webhook intake, durable: p99 answer 21.5 ms 1.25 ms (chi do-nothing) 17.2× ≤ 25 ms met", lines["webhook intake, durable: p99 answer"])
	require.True(t, strings.HasSuffix(lines["everything accepted?"], "MISSED"), "a failed side condition misses the target: %s", lines["everything accepted?"])
	require.Equal(t, "promote, one promotion 10 ms 12.5 ms (crane tag) 0.8× ≤ 1 × baseline met", lines["promote, one promotion"])
	require.Equal(t, "promote, blob bytes uploaded 0 B — — ≤ 0 B met", lines["promote, blob bytes uploaded"])
	require.Equal(t, "webhook memory, 40×24 MB unsigned, chunked: peak RSS 162 MiB 1499 MiB (no budget) 0.108× < baseline met",
		lines["webhook memory, 40×24 MB unsigned, chunked: peak RSS"])
	require.Equal(t, "build, cold cache: slipway / buildctl 1.25 — — ≤ 1.1 MISSED", lines["build, cold cache: slipway / buildctl"])
	require.Equal(t, "build page, 50k-line log: first byte — — not run", lines["build page, 50k-line log: first byte"],
		"a benchmark that did not run says so")
}
