package main

import (
	"crypto/sha256"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCPUTimes burns CPU in this process and checks that both of cpuTimes'
// clocks saw it: the process's own time, and the machine's, which holds it.
func TestCPUTimes(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SKIP: /proc/stat is Linux's; slipbench prints no CPU figures elsewhere")
	}
	machine0, self0, ok := cpuTimes()
	require.True(t, ok, "/proc/stat is readable")
	// Burn until this process has used 200 ms of CPU (however busy the
	// machine is), or give up after 20 s.
	sum := sha256.Sum256(nil)
	var machine1, self1 time.Duration
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		for range 10000 {
			sum = sha256.Sum256(sum[:])
		}
		if machine1, self1, ok = cpuTimes(); !ok || self1-self0 >= 200*time.Millisecond {
			break
		}
	}
	require.True(t, ok)
	self, machine := self1-self0, machine1-machine0
	require.GreaterOrEqual(t, self, 200*time.Millisecond, "own CPU time after 20 s of hashing")
	// The machine's busy time (ticks of 10 ms) includes this process's.
	require.GreaterOrEqual(t, machine, self-20*time.Millisecond, "the machine's busy time includes this process's")
}
