package worker

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/pod"
)

// Caps of a JUnit report (hostile input is bounded by them; the file itself
// by pod.MaxReportSize).
const (
	MaxReportCases = 10000 // test cases of one report
	maxReportDepth = 64    // nesting of elements
	maxCaseName    = 1024  // bytes of a case's name or classname
)

// ParseJUnit reads a JUnit XML report into its test cases, in report order.
//
// The format is the de-facto JUnit XML schema, as Apache Ant's junit task
// wrote it and Jenkins' JUnit plugin, pytest (--junitxml), Go's
// gotestsum, Maven Surefire and others write it (documented at
// https://github.com/testmoapp/junitxml): a root <testsuites> or
// <testsuite>, suites nested in any depth, each <testcase name=""
// classname="" time="seconds"> passed unless it holds <failure>, <error> or
// <skipped>, whose message attribute (or, without one, its text) is the
// case's message. Other elements and attributes (properties, system-out…)
// are ignored.
//
// An error names what is wrong: not XML, another root element, nesting
// deeper than 64 elements, more than MaxReportCases cases. TestCase.Test and
// Platform are left empty; TimeSeconds is 0 when the time is absent or not
// a non-negative number; names and classnames are cut to 1 KiB and
// messages to slipway.MaxCaseMessage.
func ParseJUnit(data []byte) ([]slipway.TestCase, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	cases := []slipway.TestCase{}
	depth, root := 0, false
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not a valid XML document: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if depth == 0 && el.Name.Local != "testsuites" && el.Name.Local != "testsuite" {
				return nil, fmt.Errorf("not a JUnit report: the root element is <%s>, not <testsuites> or <testsuite>", el.Name.Local)
			}
			root = true
			if el.Name.Local != "testcase" {
				if depth++; depth > maxReportDepth {
					return nil, fmt.Errorf("elements nest deeper than %d", maxReportDepth)
				}
				continue
			}
			if depth == 0 {
				return nil, errors.New("not a JUnit report: the root element is <testcase>, not <testsuites> or <testsuite>")
			}
			if len(cases) == MaxReportCases {
				return nil, fmt.Errorf("more than %d test cases", MaxReportCases)
			}
			var c junitCase
			if err := d.DecodeElement(&c, &el); err != nil {
				return nil, fmt.Errorf("not a valid XML document: %v", err)
			}
			cases = append(cases, c.testCase())
		case xml.EndElement:
			depth--
		}
	}
	if !root {
		return nil, errors.New("not a JUnit report: no <testsuites> or <testsuite> element")
	}
	return cases, nil
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitOutcome `xml:"failure"`
	Error     *junitOutcome `xml:"error"`
	Skipped   *junitOutcome `xml:"skipped"`
}

type junitOutcome struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

func (c junitCase) testCase() slipway.TestCase {
	tc := slipway.TestCase{Name: cut(c.Name, maxCaseName), Classname: cut(c.Classname, maxCaseName), Status: slipway.CasePassed}
	if f, err := strconv.ParseFloat(strings.ReplaceAll(strings.TrimSpace(c.Time), ",", ""), 64); err == nil && f >= 0 && !math.IsInf(f, 0) {
		tc.TimeSeconds = f
	}
	for _, o := range []struct {
		el     *junitOutcome
		status slipway.TestCaseStatus
	}{{c.Failure, slipway.CaseFailed}, {c.Error, slipway.CaseError}, {c.Skipped, slipway.CaseSkipped}} {
		if o.el == nil {
			continue
		}
		tc.Status = o.status
		msg := strings.TrimSpace(o.el.Message)
		if msg == "" {
			msg = strings.TrimSpace(o.el.Text)
		}
		tc.Message = cut(msg, slipway.MaxCaseMessage)
		break
	}
	return tc
}

// cut returns s without NUL bytes (PostgreSQL text holds none), at most n
// bytes long, cut at a UTF-8 boundary.
func cut(s string, n int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// storeReport reads the JUnit report the runner of test t left on platform
// (res.Report), stores its cases (Config.TestCases) and returns their
// counts. A report that is missing, unreadable or invalid is a log line of
// the test's step and nil counts: it never changes the test's result.
func (w *Worker) storeReport(ctx context.Context, build *slipway.Build, t TestSpec, platform string, res pod.Result, sink *logSink) *slipway.TestCaseCounts {
	step := "test:" + t.Name
	if res.ReportErr != nil {
		sink.Add(platform, step, fmt.Sprintf("No JUnit report: %s", slipway.OneLine(res.ReportErr.Error())))
		return nil
	}
	cases, err := ParseJUnit(res.Report)
	if err != nil {
		sink.Add(platform, step, fmt.Sprintf("The JUnit report %s was not read: %s", t.JUnit, err))
		return nil
	}
	counts := slipway.Count(cases)
	if w.cfg.TestCases != nil {
		if err := w.cfg.TestCases.ReplaceTestCases(context.WithoutCancel(ctx), build.ID, t.Name, platform, cases); err != nil {
			sink.Add(platform, step, fmt.Sprintf("Storing the JUnit report's test cases failed: %s", slipway.OneLine(err.Error())))
			return nil
		}
	}
	sink.Add(platform, step, fmt.Sprintf("JUnit report %s: %d test cases, %d passed, %d failed, %d errors, %d skipped",
		t.JUnit, len(cases), counts.Passed, counts.Failed, counts.Errors, counts.Skipped))
	logFailedCases(sink, platform, step, cases, counts.Failed+counts.Errors)
	return &counts
}

// maxLoggedCases bounds the failed cases storeReport names in the log; the
// build page and GET /api/v1/builds/{id}/test-cases have all of them.
const maxLoggedCases = 20

// logFailedCases names each failed or erroring case of a report in the log,
// with the first line of its message, so a reader of the log sees what
// failed, not only how many.
func logFailedCases(sink *logSink, platform, step string, cases []slipway.TestCase, failed int) {
	n := 0
	for _, c := range cases {
		if c.Status != slipway.CaseFailed && c.Status != slipway.CaseError {
			continue
		}
		if n++; n > maxLoggedCases {
			sink.Add(platform, step, fmt.Sprintf("  … and %d more: see the build page's test cases", failed-maxLoggedCases))
			return
		}
		name := c.Name
		if c.Classname != "" {
			name = c.Classname + "." + c.Name
		}
		line := fmt.Sprintf("  %s: %s", c.Status, name)
		if msg := slipway.OneLine(c.Message); msg != "" {
			line += ": " + slipway.Truncate(msg, 200)
		}
		sink.Add(platform, step, line)
	}
}
