package slipway

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestOneLine(t *testing.T) {
	require.Equal(t, "unauthorized: authentication required", OneLine("  unauthorized:\n\tauthentication   required\r\n"))
	require.Equal(t, "", OneLine(" \n "))
}

func TestTruncate(t *testing.T) {
	require.Equal(t, "short", Truncate("short", 5))
	require.Equal(t, "ab…", Truncate("abcdef", 5))
	require.Equal(t, "ab", Truncate("abcdef", 2), "no room for the marker")
	// A cut inside a rune moves back to its start: é is 2 bytes.
	got := Truncate("aé"+strings.Repeat("x", 10), 5)
	require.Equal(t, "a…", got)
	require.True(t, utf8.ValidString(got))
	for n := 0; n < 40; n++ {
		s := Truncate(strings.Repeat("żółw ", 8), n)
		require.LessOrEqual(t, len(s), n)
		require.True(t, utf8.ValidString(s), "n=%d: %q", n, s)
	}
}

func TestPrintable(t *testing.T) {
	require.Equal(t, "abc", Printable(" a\x00b\tc ", 10))
	require.Equal(t, "ab", Printable("abc", 2))
	// "é" is two bytes: a cut inside it drops it whole.
	require.Equal(t, "a", Printable("aé", 2))
	require.Equal(t, "aé", Printable("aé", 3))
}
