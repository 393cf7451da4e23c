package schedule

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The library (github.com/hashicorp/cronexpr) takes "minute hour
// day-of-month month day-of-week year" with day-of-week 0-6 = SUN-SAT. Every
// field is checked here and rewritten as an explicit list of numbers in the
// library's numbering (plus L, W and # items), so the library never sees an
// empty or backwards range, a name, or AWS's day-of-week numbers.

// field describes one cron field.
type field struct {
	name     string
	min, max int
	names    map[string]int // upper-case names: JAN, MON
	hint     string         // the values to suggest
	question bool           // '?' allowed (day-of-month, day-of-week)
	dom, dow bool           // L/W (day-of-month) or L/# (day-of-week) allowed
	// lib maps a value to the library's numbering.
	lib func(int) int
}

func same(v int) int { return v }

var (
	months = map[string]int{"JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6,
		"JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12}
	awsDays = map[string]int{"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
	stdDays = map[string]int{"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}

	fMinute = field{name: "minute", min: 0, max: 59, hint: "0-59", lib: same}
	fHour   = field{name: "hour", min: 0, max: 23, hint: "0-23", lib: same}
	fDOM    = field{name: "day-of-month", min: 1, max: 31, hint: "1-31", question: true, dom: true, lib: same}
	fMonth  = field{name: "month", min: 1, max: 12, names: months, hint: "1-12 or JAN-DEC", lib: same}
	fYear   = field{name: "year", min: 1970, max: 2099, hint: "1970-2099", lib: same}
	// AWS numbers days 1-7 from Sunday; the library 0-6.
	fAWSDOW = field{name: "day-of-week", min: 1, max: 7, names: awsDays, hint: "1-7 or SUN-SAT",
		question: true, dow: true, lib: func(v int) int { return v - 1 }}
	// Standard cron numbers days 0-7, with 7 Sunday again.
	fStdDOW = field{name: "day-of-week", min: 0, max: 7, names: stdDays, hint: "0-7 or SUN-SAT (0 and 7 are Sunday)",
		question: true, dow: true, lib: func(v int) int { return v % 7 }}
)

// awsCron checks the six fields of an AWS cron and returns the library's
// expression, or a message saying what is wrong.
func awsCron(f []string) (string, string) {
	const ex = "e.g. cron(0 12 * * ? *)"
	if len(f) != 6 {
		return "", fmt.Sprintf("AWS cron needs 6 fields (minutes hours day-of-month month day-of-week year), got %d, %s", len(f), ex)
	}
	switch domQ, dowQ := f[2] == "?", f[4] == "?"; {
	case !domQ && !dowQ:
		return "", "AWS cron needs '?' in day-of-month or day-of-week, " + ex
	case domQ && dowQ:
		return "", "AWS cron takes '?' in only one of day-of-month and day-of-week, " + ex
	}
	return translate(f, []field{fMinute, fHour, fDOM, fMonth, fAWSDOW, fYear})
}

// standardCron checks a 5-field cron and returns the library's expression.
func standardCron(f []string) (string, string) {
	if len(f) != 5 {
		return "", fmt.Sprintf("a cron expression needs 5 fields (minute hour day-of-month month day-of-week), got %d; or use rate(5 minutes) or cron(0 12 * * ? *)", len(f))
	}
	lib, msg := translate(f, []field{fMinute, fHour, fDOM, fMonth, fStdDOW})
	if msg != "" {
		return "", msg
	}
	return lib + " *", ""
}

func translate(in []string, fs []field) (string, string) {
	out := make([]string, len(in))
	for i, s := range in {
		v, msg := fs[i].translate(s)
		if msg != "" {
			return "", fmt.Sprintf("%s %q: %s", fs[i].name, s, msg)
		}
		out[i] = v
	}
	return strings.Join(out, " "), ""
}

// translate checks one field and returns it for the library.
func (f *field) translate(s string) (string, string) {
	switch s {
	case "*":
		return "*", ""
	case "?":
		if !f.question {
			return "", "'?' is only for day-of-month or day-of-week: use *"
		}
		return "?", ""
	}
	set := make([]bool, f.max+1)
	var special []string
	for item := range strings.SplitSeq(strings.ToUpper(s), ",") {
		sp, msg := f.special(item)
		if msg != "" {
			return "", msg
		}
		if sp != "" {
			special = append(special, sp)
			continue
		}
		if msg := f.span(item, set); msg != "" {
			return "", msg
		}
	}
	var list []string
	seen := make(map[int]bool)
	for v, on := range set {
		if on && !seen[f.lib(v)] {
			seen[f.lib(v)] = true
			list = append(list, strconv.Itoa(f.lib(v)))
		}
	}
	if f.dow {
		slices.SortFunc(list, func(a, b string) int { return atoiOr(a) - atoiOr(b) })
	}
	return strings.Join(append(list, special...), ","), ""
}

func atoiOr(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// special handles L, LW, nW (day-of-month) and L, nL, n#k (day-of-week),
// returning "" for an item that is none of them.
func (f *field) special(item string) (string, string) {
	switch {
	case f.dom && item == "L", f.dom && item == "LW":
		return item, ""
	case f.dom && strings.HasSuffix(item, "W"):
		v, msg := f.value(strings.TrimSuffix(item, "W"))
		if msg != "" {
			return "", msg
		}
		return strconv.Itoa(v) + "W", ""
	case f.dow && item == "L":
		// The last day of the week: Saturday.
		return "6", ""
	case f.dow && strings.HasSuffix(item, "L"):
		v, msg := f.value(strings.TrimSuffix(item, "L"))
		if msg != "" {
			return "", msg
		}
		return strconv.Itoa(f.lib(v)) + "L", ""
	case f.dow && strings.Contains(item, "#"):
		day, nth, _ := strings.Cut(item, "#")
		v, msg := f.value(day)
		if msg != "" {
			return "", msg
		}
		k, err := strconv.Atoi(nth)
		if err != nil || k < 1 || k > 5 || len(nth) != 1 {
			return "", fmt.Sprintf("%q: the week after '#' must be 1-5, e.g. 2#1 for the first Monday", item)
		}
		return fmt.Sprintf("%d#%d", f.lib(v), k), ""
	}
	return "", ""
}

// span adds the values of "*/s", "a", "a-b", "a/s" or "a-b/s" to set.
func (f *field) span(item string, set []bool) string {
	base, stepStr, hasStep := strings.Cut(item, "/")
	step := 1
	if hasStep {
		n, err := strconv.Atoi(stepStr)
		if err != nil || n < 1 || n > f.max-f.min+1 || len(stepStr) > 4 {
			return fmt.Sprintf("step %q is out of range: use 1-%d", stepStr, f.max-f.min+1)
		}
		step = n
	}
	lo, hi := f.min, f.max
	switch a, b, isRange := strings.Cut(base, "-"); {
	case base == "*":
		if !hasStep {
			return "use * alone, not in a list"
		}
	case isRange:
		var msg string
		if lo, msg = f.value(a); msg != "" {
			return msg
		}
		if hi, msg = f.value(b); msg != "" {
			return msg
		}
		if lo > hi {
			return fmt.Sprintf("range %s is backwards: write it low to high (or list the values)", base)
		}
	default:
		v, msg := f.value(base)
		if msg != "" {
			return msg
		}
		lo = v
		if !hasStep {
			hi = v
		}
	}
	for v := lo; v <= hi; v += step {
		set[v] = true
	}
	return ""
}

// value parses a number or a name of the field.
func (f *field) value(s string) (int, string) {
	if v, ok := f.names[s]; ok {
		return v, ""
	}
	n, err := strconv.Atoi(s)
	if err != nil || len(s) > 4 || s[0] == '+' || s[0] == '-' {
		msg := fmt.Sprintf("%q is not a value: use %s", s, f.hint)
		if strings.ContainsAny(s, "LW#") {
			msg += "; L, W and # are for day-of-month (L, LW, 15W) and day-of-week (L, 6L, 2#1)"
		}
		return 0, msg
	}
	if n < f.min || n > f.max {
		return 0, fmt.Sprintf("value %d is out of range: use %s", n, f.hint)
	}
	return n, ""
}
