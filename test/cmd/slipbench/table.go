package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
)

// figure is one row of the closing table: a measured value beside the
// baseline measured in the same run (if any) and the target (if any).
type figure struct {
	name     string
	value    float64
	unit     string // printed after value and baseline: "/s", " ms"
	baseline float64
	baseName string // what the baseline is; "" for none
	target   target
	// ok overrides the target's verdict to false when set and false, e.g.
	// when not every delivery was accepted.
	extraOK *bool
	missing bool // the benchmark did not run
}

// target is what a figure should reach; a zero target has none.
type target struct {
	text string
	ok   func(value, baseline float64) bool
}

func atLeast(v float64, unit string) target {
	return target{fmt.Sprintf("≥ %g%s", v, unit), func(x, _ float64) bool { return x >= v }}
}

func atMost(v float64, unit string) target {
	return target{fmt.Sprintf("≤ %g%s", v, unit), func(x, _ float64) bool { return x <= v }}
}

func ratioAtMost(r float64) target {
	return target{fmt.Sprintf("≤ %g × baseline", r), func(x, b float64) bool { return b > 0 && x/b <= r }}
}

func belowBaseline() target {
	return target{"< baseline", func(x, b float64) bool { return b > 0 && x < b }}
}

// goFigure says which metric of a Go benchmark (as b.ReportMetric names its
// unit) is a row, which metric of the same benchmark is its baseline, and
// its target (from the benchmark's doc and the issue that asked for it).
type goFigure struct {
	bench, metric string
	name          string
	unit          string
	baseMetric    string // "" for none
	baseName      string
	target        target
}

var goFigures = []goFigure{
	{"BenchmarkPromote", "slipway-ms", "promote, one promotion", " ms", "crane-ms", "crane tag", ratioAtMost(1.0)},
	{"BenchmarkPromote", "slipway-reqs", "promote, registry requests each", "", "crane-reqs", "crane tag", target{}},
	{"BenchmarkPromote", "blob-bytes", "promote, blob bytes uploaded", " B", "", "", atMost(0, " B")},
	{"BenchmarkWebhookMemoryUnderAttack", "peak-MiB-budget-content-length", "webhook memory, 40×24 MB unsigned, Content-Length: peak RSS", " MiB",
		"peak-MiB-baseline-content-length", "no budget", belowBaseline()},
	{"BenchmarkWebhookMemoryUnderAttack", "peak-MiB-budget-chunked", "webhook memory, 40×24 MB unsigned, chunked: peak RSS", " MiB",
		"peak-MiB-baseline-chunked", "no budget", belowBaseline()},
	{"BenchmarkBuildVsBuildctl", "cold-ratio", "build, cold cache: slipway / buildctl", "", "", "", atMost(1.10, "")},
	{"BenchmarkBuildVsBuildctl", "warm-ratio", "build, warm cache: slipway / buildctl", "", "", "", atMost(1.5, "")},
	{"BenchmarkBuildVsBuildctl", "ms-webhook-to-vertex", "build, webhook → first BuildKit vertex", " ms", "", "", target{}},
	{"BenchmarkBuildPage50kLines", "ttfb-ms", "build page, 50k-line log: first byte", " ms", "", "", target{}},
	{"BenchmarkBuildPage50kLines", "full-load-ms", "build page, 50k-line log: full load", " ms", "", "", target{}},
	// Issue 11: the Now page's database work per change must not grow with its viewers.
	{"BenchmarkNowPage", "queries-min-100", "Now page, 100 followers: queries/min", "", "queries-min-1", "1 follower", ratioAtMost(1.1)},
	{"BenchmarkNowPage", "cpu-s-min-100", "Now page, 100 followers: process CPU", " s/min", "cpu-s-min-1", "1 follower", target{}},
	{"BenchmarkServerMemoryTenFollowers", "rss-peak-MB", "server RSS, 10 live-log followers: peak", " MB", "rss-before-MB", "before they came", target{}},
}

// benchLine matches a result line of `go test -bench`: the name (its
// -GOMAXPROCS suffix apart), the iterations, then value-unit pairs.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// parseGoBench reads `go test -bench` output and returns each benchmark's
// metrics by unit (ns/op, and every b.ReportMetric unit); the last line of a
// benchmark run more than once wins. Other lines are skipped.
func parseGoBench(r io.Reader) (map[string]map[string]float64, error) {
	out := map[string]map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		fields := strings.Fields(m[2])
		if len(fields)%2 != 0 {
			continue
		}
		metrics := map[string]float64{}
		for i := 0; i < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				metrics = nil
				break
			}
			metrics[fields[i+1]] = v
		}
		if metrics != nil {
			out[m[1]] = metrics
		}
	}
	return out, sc.Err()
}

// goBenchFigures turns parsed Go benchmark results into rows, one per
// goFigures entry; a benchmark that did not run gives rows marked missing.
func goBenchFigures(results map[string]map[string]float64) []figure {
	var rows []figure
	for _, g := range goFigures {
		f := figure{name: g.name, unit: g.unit, baseName: g.baseName, target: g.target}
		metrics, ok := results[g.bench]
		v, has := metrics[g.metric]
		if !ok || !has {
			f.missing = true
			rows = append(rows, f)
			continue
		}
		f.value = v
		if g.baseMetric != "" {
			f.baseline = metrics[g.baseMetric]
		}
		rows = append(rows, f)
	}
	return rows
}

// printTable writes the rows as one aligned table: figure, measured value,
// baseline of the same run, their ratio, target and verdict.
func printTable(out io.Writer, rows []figure) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tmeasured\tbaseline (same run)\tratio\ttarget\tverdict")
	for _, f := range rows {
		if f.missing {
			fmt.Fprintf(tw, "%s\t—\t\t\t%s\tnot run\n", f.name, or(f.target.text, "—"))
			continue
		}
		base, ratio := "—", "—"
		if f.baseName != "" {
			base = fmt.Sprintf("%s%s (%s)", num(f.baseline), f.unit, f.baseName)
			if f.baseline != 0 {
				ratio = fmt.Sprintf("%.3g×", f.value/f.baseline)
			}
		}
		verdict := "—"
		if f.target.ok != nil {
			verdict = "MISSED"
			if f.target.ok(f.value, f.baseline) && (f.extraOK == nil || *f.extraOK) {
				verdict = "met"
			}
		}
		fmt.Fprintf(tw, "%s\t%s%s\t%s\t%s\t%s\t%s\n", f.name, num(f.value), f.unit, base, ratio, or(f.target.text, "—"), verdict)
	}
	return tw.Flush()
}

// num prints v with up to three decimals and no trailing zeros, one from
// 100 on, none from 1000 on.
func num(v float64) string {
	switch {
	case math.Abs(v) >= 1000:
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64)
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64)
	}
	return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
