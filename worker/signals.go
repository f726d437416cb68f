package worker

// testSignals are hooks a test waits on instead of sleeping, as River's
// testSignals are: each is off (a no-op) until a test calls its init, so
// production code pays one nil check per signal.
type testSignals struct {
	buildStarted testSignal[int64]      // runJob starts the pipeline of a build (its id)
	leaseLost    testSignal[int64]      // the heartbeat found a build's lease taken over
	attemptEnded testSignal[attemptEnd] // runJob ended an attempt of a build
	graceStarted testSignal[struct{}]   // Run stopped claiming and waits for running builds
}

// attemptEnd says how runJob ended an attempt of build BuildID.
type attemptEnd struct {
	BuildID int64
	How     endHow
}

// endHow is how runJob ended an attempt.
type endHow string

const (
	endCompleted endHow = "completed" // JobComplete: succeeded, failed or canceled
	endRetried   endHow = "retried"   // JobRetry: an infrastructure failure
	endReleased  endHow = "released"  // JobRelease: the worker shut down
	endAbandoned endHow = "abandoned" // nothing written: the lease was lost
)

// testSignal carries values of T from the worker to a waiting test.
type testSignal[T any] struct{ ch chan T }

// init turns the signal on; call it before the worker runs.
func (s *testSignal[T]) init() { s.ch = make(chan T, 100) }

// signal sends v if the signal is on; it never blocks (a full buffer drops v).
func (s *testSignal[T]) signal(v T) {
	if s.ch == nil {
		return
	}
	select {
	case s.ch <- v:
	default:
	}
}
