package slipway

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSealer(t *testing.T) {
	t.Parallel()
	key := strings.Repeat("ab", 32)
	s, err := NewSealer(key)
	require.NoError(t, err)

	sealed := s.Seal([]byte("hunter2"), "repo:1:webhook_secret")
	require.NotContains(t, string(sealed), "hunter2")
	again := s.Seal([]byte("hunter2"), "repo:1:webhook_secret")
	require.NotEqual(t, sealed, again, "a fresh nonce each time")

	got, err := s.Open(sealed, "repo:1:webhook_secret")
	require.NoError(t, err)
	require.Equal(t, "hunter2", string(got))

	_, err = s.Open(sealed, "repo:2:webhook_secret")
	require.Error(t, err, "bound to its row")
	other, err := NewSealer(strings.Repeat("cd", 32))
	require.NoError(t, err)
	_, err = other.Open(sealed, "repo:1:webhook_secret")
	require.Error(t, err, "another key does not open it")
	sealed[len(sealed)-1] ^= 1
	_, err = s.Open(sealed, "repo:1:webhook_secret")
	require.Error(t, err, "an altered value does not open")

	for _, bad := range []string{"", "short", strings.Repeat("ab", 31), strings.Repeat("zz", 32)} {
		_, err := NewSealer(bad)
		require.Error(t, err, "key %q", bad)
		if bad != "" {
			require.NotContains(t, err.Error(), bad, "the key is never echoed")
		}
	}
}
