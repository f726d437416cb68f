package worker

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

func TestParseJUnit(t *testing.T) {
	t.Run("pytest's report: suites, failures, errors, skips, times", func(t *testing.T) {
		cases, err := ParseJUnit([]byte(`<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests">
  <testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4" time="1.5">
    <properties><property name="x" value="y"/></properties>
    <testcase classname="tests.test_mqtt" name="test_publish" time="0.012"/>
    <testcase classname="tests.test_mqtt" name="test_subscribe" time="1,234.5">
      <failure message="AssertionError: assert 1 == 2">def test_subscribe(): ...</failure>
      <system-out>some output</system-out>
    </testcase>
    <testcase classname="tests.test_vdb" name="test_get" time="abc"><error>ConnectionRefusedError: [Errno 111]</error></testcase>
    <testcase classname="tests.test_vdb" name="test_set" time="-1"><skipped message="needs arm64" type="pytest.skip"/></testcase>
  </testsuite>
</testsuites>`))
		require.NoError(t, err)
		require.Equal(t, []slipway.TestCase{
			{Name: "test_publish", Classname: "tests.test_mqtt", TimeSeconds: 0.012, Status: slipway.CasePassed},
			{Name: "test_subscribe", Classname: "tests.test_mqtt", TimeSeconds: 1234.5, Status: slipway.CaseFailed, Message: "AssertionError: assert 1 == 2"},
			{Name: "test_get", Classname: "tests.test_vdb", Status: slipway.CaseError, Message: "ConnectionRefusedError: [Errno 111]"},
			{Name: "test_set", Classname: "tests.test_vdb", Status: slipway.CaseSkipped, Message: "needs arm64"},
		}, cases)
		require.Equal(t, slipway.TestCaseCounts{Passed: 1, Failed: 1, Errors: 1, Skipped: 1}, slipway.Count(cases))
	})

	t.Run("a single testsuite root, nested suites, no cases", func(t *testing.T) {
		cases, err := ParseJUnit([]byte(`<testsuite name="a"><testsuite name="b"><testcase name="deep"/></testsuite></testsuite>`))
		require.NoError(t, err)
		require.Equal(t, []slipway.TestCase{{Name: "deep", Status: slipway.CasePassed}}, cases)
		cases, err = ParseJUnit([]byte(`<testsuites/>`))
		require.NoError(t, err)
		require.Empty(t, cases)
		require.NotNil(t, cases)
	})

	t.Run("long messages are cut at 4 KiB on a rune boundary", func(t *testing.T) {
		msg := strings.Repeat("é", 3000) // 6000 bytes
		cases, err := ParseJUnit([]byte(`<testsuite><testcase name="n"><failure message="` + msg + `"/></testcase></testsuite>`))
		require.NoError(t, err)
		require.Len(t, cases[0].Message, slipway.MaxCaseMessage)
		require.True(t, strings.HasPrefix(msg, cases[0].Message))
	})

	t.Run("hostile and invalid input is a clear error", func(t *testing.T) {
		many := strings.Repeat(`<testcase name="x"/>`, MaxReportCases+1)
		deep := strings.Repeat("<testsuite>", 100) + strings.Repeat("</testsuite>", 100)
		for _, c := range []struct{ in, want string }{
			{"", "not a JUnit report: no <testsuites> or <testsuite> element"},
			{"<!-- nothing -->", "not a JUnit report: no <testsuites> or <testsuite> element"},
			{"not xml at all", "not a JUnit report: no <testsuites> or <testsuite> element"},
			{"<testsuite><testcase name='a'>", "not a valid XML document"},
			{"<html><body/></html>", "not a JUnit report: the root element is <html>"},
			{"<testcase name='a'/>", "not a JUnit report: the root element is <testcase>"},
			{"<testsuites>" + many + "</testsuites>", fmt.Sprintf("more than %d test cases", MaxReportCases)},
			{deep, "elements nest deeper than 64"},
			{`<?xml version="1.0" encoding="ISO-8859-1"?><testsuite/>`, "not a valid XML document"},
			{`<!DOCTYPE x [<!ENTITY a "aaaa">]><testsuite><testcase name="&a;"/></testsuite>`, "not a valid XML document"},
		} {
			_, err := ParseJUnit([]byte(c.in))
			require.ErrorContains(t, err, c.want, c.in[:min(len(c.in), 60)])
		}
	})
}

func TestJUnitConfig(t *testing.T) {
	c, err := ParseRepoConfig([]byte("tests:\n  - name: unit\n    run: pytest --junitxml=/tmp/junit.xml\n    junit: /tmp/junit.xml\n"))
	require.NoError(t, err)
	require.Equal(t, "/tmp/junit.xml", c.Tests[0].JUnit)
	require.True(t, c.Tests[0].InPod(), "a test with a report runs in a Pod")
	for _, bad := range []string{"junit.xml", "/tmp/../junit.xml", "/"} {
		_, err := ParseRepoConfig([]byte("tests:\n  - name: unit\n    run: pytest\n    junit: " + bad + "\n"))
		require.ErrorContains(t, err, `.slipway.yml: line 2: tests[0] (unit): junit: "`+bad+`" is not an absolute path`)
	}
}
