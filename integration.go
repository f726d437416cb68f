package slipway

import (
	"context"
	"time"
)

// IntegrationResult is what an external test system reports for a build
// through POST /api/v1/builds/{id}/tests.
type IntegrationResult struct {
	// Passed is the verdict; a build succeeds only when it is true.
	Passed bool `json:"passed"`
	// Message explains the verdict (shown in the build's error and log).
	Message string `json:"message,omitempty"`
	// Tests are the external system's own results, recorded with the build's.
	Tests []TestResult `json:"tests,omitempty"`
}

// IntegrationService keeps the one-time callbacks of external integration
// test runs. Implementations are safe for concurrent use.
type IntegrationService interface {
	// StartIntegration stores the callback of a build's external run, keyed by
	// the SHA-256 of secret, usable until expires. A new call for the same
	// build replaces the old callback (a retried build).
	StartIntegration(ctx context.Context, buildID int64, secret string, expires time.Time) error
	// ReportIntegration records the result of a build's external run.
	// EUNAUTHORIZED when secret is not the build's callback token or the
	// callback expired, ECONFLICT when a result was already recorded.
	ReportIntegration(ctx context.Context, buildID int64, secret string, r IntegrationResult) error
	// FindIntegrationResult returns the recorded result, or nil while there is none.
	FindIntegrationResult(ctx context.Context, buildID int64) (*IntegrationResult, error)
}
