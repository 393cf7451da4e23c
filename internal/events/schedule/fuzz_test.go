package schedule

import (
	"testing"
	"time"
)

// FuzzParse checks that Parse never panics on any expression and zone,
// that what it accepts prints back (String) to an expression that parses
// the same, and that Next is strictly increasing.
func FuzzParse(f *testing.F) {
	// Seeds are in testdata/fuzz/FuzzParse.
	start := time.Date(2024, 3, 31, 0, 30, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr, tz string) {
		s, err := Parse(expr, tz)
		if err != nil {
			if s != nil {
				t.Fatalf("Parse returned a schedule and an error %v", err)
			}
			return
		}
		again, err := Parse(s.String(), tz)
		if err != nil {
			t.Fatalf("String() %q does not parse: %v", s, err)
		}
		at := start
		for i := range 5 {
			n := s.Next(at)
			if m := again.Next(at); !m.Equal(n) {
				t.Fatalf("Next(%s) = %s, but %s after printing and parsing again", at, n, m)
			}
			if n.IsZero() {
				return
			}
			if !n.After(at) {
				t.Fatalf("tick %d: Next(%s) = %s, not after", i, at, n)
			}
			at = n
		}
	})
}
