package slipway

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// OneLine squeezes s into one line: every run of white space, line breaks
// included, becomes one space, and the ends are trimmed. For messages that
// quote a registry's, a forge's or a tool's multi-line answer.
func OneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Truncate returns s when it is at most n bytes long, else its longest
// prefix that ends on a rune boundary and leaves room for "…" (3 bytes),
// followed by "…": at most n bytes in all, valid UTF-8 where s was. For a
// value bound for a column of n bytes or a message that quotes hostile
// input. n below 3 gives at most n bytes of s with no marker.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	if cut < 0 {
		cut, n = n, 0
	}
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	if n == 0 {
		return s[:cut]
	}
	return s[:cut] + mark
}

// Printable trims s, drops its control characters (Postgres refuses NUL in
// text) and cuts it to at most n bytes on a rune boundary, with no marker: for
// a value from a payload bound for a column, or quoted in a message.
func Printable(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
