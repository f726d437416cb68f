package slipway

import "context"

// TestCaseStatus is the outcome of one test case of a test report.
type TestCaseStatus string

// The statuses of a JUnit test case: no child element is passed, <failure>
// failed, <error> error, <skipped> skipped.
const (
	CasePassed  TestCaseStatus = "passed"
	CaseFailed  TestCaseStatus = "failed"
	CaseError   TestCaseStatus = "error"
	CaseSkipped TestCaseStatus = "skipped"
)

// MaxCaseMessage bounds TestCase.Message (4 KiB, cut at a UTF-8 boundary).
const MaxCaseMessage = 4 << 10

// TestCase is one test case of the JUnit report a test's runner wrote, on
// one platform.
type TestCase struct {
	// Test is the .slipway.yml test whose runner wrote the report.
	Test     string `json:"test"`
	Platform string `json:"platform"`
	// Name and Classname are the testcase's name and classname attributes.
	Name      string `json:"name"`
	Classname string `json:"classname,omitempty"`
	// TimeSeconds is the time attribute, in seconds; 0 when absent.
	TimeSeconds float64        `json:"time_seconds"`
	Status      TestCaseStatus `json:"status"`
	// Message is the failure's, error's or skip's message attribute, or its
	// text when it has none, at most MaxCaseMessage bytes.
	Message string `json:"message,omitempty"`
}

// TestCaseCounts counts a report's cases by status. TestResult.Cases holds
// them for a test whose runner wrote a report.
type TestCaseCounts struct {
	Passed  int `json:"passed"`
	Failed  int `json:"failed"`
	Errors  int `json:"errors"`
	Skipped int `json:"skipped"`
}

// Count returns the counts of cases.
func Count(cases []TestCase) TestCaseCounts {
	var c TestCaseCounts
	for _, tc := range cases {
		switch tc.Status {
		case CasePassed:
			c.Passed++
		case CaseFailed:
			c.Failed++
		case CaseError:
			c.Errors++
		case CaseSkipped:
			c.Skipped++
		}
	}
	return c
}

// TestCaseService stores the test cases of builds. Implementations are safe
// for concurrent use.
type TestCaseService interface {
	// ReplaceTestCases stores cases as the cases of test on platform of
	// build buildID, replacing those stored before for the same build, test
	// and platform (an attempt that runs again writes its own). Each case's
	// Test and Platform are taken from the arguments. ENOTFOUND for no such
	// build.
	ReplaceTestCases(ctx context.Context, buildID int64, test, platform string, cases []TestCase) error
	// FindTestCases returns the cases of a build: failed and error cases
	// first, then skipped, then passed; within each by test, platform and
	// report order. An empty list, not an error, for a build without any.
	FindTestCases(ctx context.Context, buildID int64) ([]TestCase, error)
}
