package worker

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: a
// listener, a pool or a lock holder that outlives its test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
