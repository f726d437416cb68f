package main

import (
	"context"
	"io"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRunRefusesBadInput: bad settings and commands fail with what to fix,
// before anything starts.
func TestRunRefusesBadInput(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, c := range []struct {
		name string
		args []string
		env  func(string) string
		want string
	}{
		{"no state", []string{"start"}, env(), "usage: devstack"},
		{"unknown command", []string{"restart", state}, env(), `unknown command "restart"`},
		{"bad port", []string{"start", state}, env("SLIPWAY_PG_PORT", "54x"), `SLIPWAY_PG_PORT="54x": want a port number, or 0 for a free one`},
		{"port too high", []string{"start", state}, env("SLIPWAY_REGISTRY_PORT", "70000"), `SLIPWAY_REGISTRY_PORT="70000"`},
		{"bad timeout", []string{"start", state}, env("SLIPWAY_READY_TIMEOUT", "0"), `SLIPWAY_READY_TIMEOUT="0": want a number of seconds above 0`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := run(context.Background(), c.args, c.env, io.Discard)
			require.ErrorContains(t, err, c.want)
			require.NoDirExists(t, state, "nothing is made for bad input")
		})
	}
	require.NoError(t, run(context.Background(), []string{"stop", state}, env(), io.Discard), "stopping a missing folder is nothing to do")
	require.NoError(t, run(context.Background(), []string{"purge", state}, env(), io.Discard))
}
