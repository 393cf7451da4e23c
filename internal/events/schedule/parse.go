package schedule

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/cronexpr"

	"aloft/internal/fn"
)

// MaxExpressionLen bounds a schedule expression.
const MaxExpressionLen = 256

// maxRate is the longest rate period: about ten years.
const maxRate = 3650 * 24 * time.Hour

// Schedule is a parsed schedule expression with its time zone. Its methods
// are safe for concurrent use.
type Schedule struct {
	expr   string         // canonical form, what String returns
	period time.Duration  // rate(...); zero for cron
	loc    *time.Location // cron's zone
	// mu guards cron: the library's Next writes a scratch field.
	mu   sync.Mutex
	cron *cronexpr.Expression
}

// Parse parses a schedule expression:
//
//   - rate(N unit), with unit second(s), minute(s), hour(s) or day(s) and N
//     from 1 to about ten years' worth; ticks fall on multiples of the period
//     since the Unix epoch, so every node computes the same ones, and the
//     time zone does not apply;
//   - an AWS cron(minutes hours day-of-month month day-of-week year), where
//     exactly one of day-of-month and day-of-week is '?', day-of-week runs
//     1-7 = SUN-SAT, and L, W and # work as on AWS (years 1970-2099);
//   - a standard 5-field cron (minute hour day-of-month month day-of-week,
//     day-of-week 0-7 with 0 and 7 Sunday), or @yearly, @annually, @monthly,
//     @weekly, @daily, @midnight or @hourly.
//
// timezone is an IANA zone name for cron expressions; empty means UTC.
//
// Every error is an *fn.Error (fn.Invalid) that quotes the expression and
// says what to fix: an empty or over-long expression, an unknown form, a
// rate out of range or with an unknown unit, a wrong number of cron fields,
// a field value, range, step or name out of range, '?' missing or doubled in
// an AWS cron, or an unknown time zone.
func Parse(expr, timezone string) (*Schedule, error) {
	s, msg := parse(expr, timezone)
	if msg != "" {
		return nil, fn.Invalid("schedule %q: %s", expr, msg)
	}
	return s, nil
}

// parse returns the schedule, or a message saying what is wrong.
func parse(expr, timezone string) (*Schedule, string) {
	e := strings.TrimSpace(expr)
	switch {
	case e == "":
		return nil, "empty: use rate(5 minutes), cron(0 12 * * ? *) or a 5-field cron like */5 * * * *"
	case len(expr) > MaxExpressionLen:
		return nil, fmt.Sprintf("longer than %d characters", MaxExpressionLen)
	}
	loc, msg := location(timezone)
	if msg != "" {
		return nil, msg
	}
	lower := strings.ToLower(e)
	switch {
	case strings.HasPrefix(lower, "rate("):
		return parseRate(e)
	case strings.HasPrefix(lower, "cron("):
		if !strings.HasSuffix(e, ")") {
			return nil, "cron( is not closed: end it with ')', e.g. cron(0 12 * * ? *)"
		}
		fields := strings.Fields(e[len("cron(") : len(e)-1])
		lib, msg := awsCron(fields)
		if msg != "" {
			return nil, msg
		}
		return newCron("cron("+strings.Join(fields, " ")+")", lib, loc)
	case strings.HasPrefix(lower, "@"):
		std, ok := descriptors[lower]
		if !ok {
			return nil, "unknown descriptor: use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
		}
		lib, msg := standardCron(strings.Fields(std))
		if msg != "" {
			return nil, msg
		}
		return newCron(lower, lib, loc)
	}
	fields := strings.Fields(e)
	lib, msg := standardCron(fields)
	if msg != "" {
		return nil, msg
	}
	return newCron(strings.Join(fields, " "), lib, loc)
}

var descriptors = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

// location loads an IANA zone; "" is UTC.
func location(name string) (*time.Location, string) {
	if name == "" || name == "UTC" {
		return time.UTC, ""
	}
	if name == "Local" || len(name) > 64 {
		return nil, fmt.Sprintf("timezone %q is unknown: use an IANA name like Europe/Paris", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Sprintf("timezone %q is unknown: use an IANA name like Europe/Paris", name)
	}
	return loc, ""
}

// newCron hands the translated expression to the library, which should
// accept anything the translation produces.
func newCron(canonical, lib string, loc *time.Location) (*Schedule, string) {
	c, err := cronexpr.Parse(lib)
	if err != nil {
		return nil, fmt.Sprintf("cannot be evaluated (%s): check each field", err)
	}
	return &Schedule{expr: canonical, loc: loc, cron: c}, ""
}

var rateUnits = map[string]time.Duration{
	"second": time.Second, "seconds": time.Second,
	"minute": time.Minute, "minutes": time.Minute,
	"hour": time.Hour, "hours": time.Hour,
	"day": 24 * time.Hour, "days": 24 * time.Hour,
}

var unitNames = map[time.Duration]string{
	time.Second: "second", time.Minute: "minute", time.Hour: "hour", 24 * time.Hour: "day",
}

// parseRate parses rate(N unit); singular and plural units are both
// accepted whatever N is.
func parseRate(e string) (*Schedule, string) {
	const example = "e.g. rate(5 minutes)"
	if !strings.HasSuffix(e, ")") {
		return nil, "rate( is not closed: end it with ')', " + example
	}
	parts := strings.Fields(e[len("rate(") : len(e)-1])
	if len(parts) != 2 {
		return nil, "rate needs a number and a unit, " + example
	}
	unit, ok := rateUnits[strings.ToLower(parts[1])]
	if !ok {
		return nil, fmt.Sprintf("rate unit %q is unknown: use seconds, minutes, hours or days", parts[1])
	}
	most := int64(maxRate / unit)
	n, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || n < 1 || n > most || parts[0][0] == '+' {
		return nil, fmt.Sprintf("rate value %q is out of range: use a whole number from 1 to %d %ss", parts[0], most, unitNames[unit])
	}
	name := unitNames[unit]
	if n != 1 {
		name += "s"
	}
	return &Schedule{expr: fmt.Sprintf("rate(%d %s)", n, name), period: time.Duration(n) * unit, loc: time.UTC}, ""
}

// String returns the expression in canonical form: rate(N unit) with the
// unit singular for 1, cron(...) and 5-field crons with single spaces,
// descriptors in lower case. The time zone is not part of it.
func (s *Schedule) String() string { return s.expr }

// Rate returns the period of a rate(...) schedule, or zero for a cron.
func (s *Schedule) Rate() time.Duration { return s.period }

// Location returns the zone cron ticks are computed in (UTC for rates).
func (s *Schedule) Location() *time.Location { return s.loc }

// Next returns the first tick strictly after after, in UTC, or the zero
// time when there is none (a cron whose years are over).
func (s *Schedule) Next(after time.Time) time.Time {
	if s.period > 0 {
		return nextRate(after, s.period)
	}
	from := after.In(s.loc)
	s.mu.Lock()
	defer s.mu.Unlock()
	// The library can step back around a transition at midnight (it moves
	// a missing midnight back by its hour); look again further on. Ticks
	// are whole seconds, so each retry moves on by at least one.
	for range 48 {
		n := s.cron.Next(from)
		if n.IsZero() {
			return time.Time{}
		}
		if n.After(after) {
			return n.UTC()
		}
		from = from.Add(time.Hour)
	}
	return time.Time{}
}

// nextRate returns the first multiple of period since the Unix epoch
// strictly after t.
func nextRate(t time.Time, period time.Duration) time.Time {
	p := int64(period / time.Second)
	sec := t.Unix() // floors: the nanoseconds of a Time are never negative
	k := sec / p
	if sec%p < 0 {
		k--
	}
	return time.Unix((k+1)*p, 0).UTC()
}
