package schedule

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"aloft/internal/fn"
)

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("parse time %q: %v", s, err)
	}
	return v
}

// TestNext pins the next fire times of expressions: rates aligned on the
// epoch, AWS cron with its day-of-week numbering, L, W and #, standard
// cron's numbering, descriptors, year bounds and DST in Europe/Paris.
// Wanted times are written in the schedule's zone; they are compared as
// instants.
func TestNext(t *testing.T) {
	tests := []struct {
		name, expr, tz, from string
		want                 []string // "" marks "no further tick"
	}{
		{"rate minutes aligned", "rate(5 minutes)", "", "2024-01-01T00:02:30Z",
			[]string{"2024-01-01T00:05:00Z", "2024-01-01T00:10:00Z", "2024-01-01T00:15:00Z"}},
		{"rate strictly after", "rate(1 second)", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z"}},
		{"rate day at UTC midnight", "rate(1 day)", "", "2024-03-10T13:00:00Z",
			[]string{"2024-03-11T00:00:00Z", "2024-03-12T00:00:00Z"}},
		{"rate 7 days on epoch Thursdays", "rate(7 days)", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-04T00:00:00Z", "2024-01-11T00:00:00Z"}},
		{"rate 90 minutes", "rate(90 minutes)", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-01T01:30:00Z", "2024-01-01T03:00:00Z"}},
		{"rate ignores the zone", "rate(1 hour)", "Asia/Kolkata", "2024-01-01T00:10:00Z",
			[]string{"2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z"}},
		{"aws daily noon strictly after", "cron(0 12 * * ? *)", "", "2024-01-01T12:00:00Z",
			[]string{"2024-01-02T12:00:00Z", "2024-01-03T12:00:00Z"}},
		{"aws weekdays by name", "cron(15 10 ? * MON-FRI *)", "", "2024-01-05T11:00:00Z",
			[]string{"2024-01-08T10:15:00Z", "2024-01-09T10:15:00Z"}},
		{"aws 2 is Monday", "cron(0 0 ? * 2 *)", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-08T00:00:00Z", "2024-01-15T00:00:00Z"}},
		{"standard 2 is Tuesday", "0 0 * * 2", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-02T00:00:00Z", "2024-01-09T00:00:00Z"}},
		{"aws 1 is Sunday", "cron(0 0 ? * 1 *)", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-07T00:00:00Z", "2024-01-14T00:00:00Z"}},
		{"aws 7 is Saturday", "cron(0 0 ? * 7 *)", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-06T00:00:00Z", "2024-01-13T00:00:00Z"}},
		{"standard 0 is Sunday", "0 0 * * 0", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-07T00:00:00Z", "2024-01-14T00:00:00Z"}},
		{"standard 7 is Sunday", "0 0 * * 7", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-07T00:00:00Z", "2024-01-14T00:00:00Z"}},
		{"aws range 6-7 is Fri-Sat", "cron(0 0 ? * 6-7 *)", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-05T00:00:00Z", "2024-01-06T00:00:00Z", "2024-01-12T00:00:00Z"}},
		{"standard range 5-7 is Fri-Sun", "0 0 * * 5-7", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-05T00:00:00Z", "2024-01-06T00:00:00Z", "2024-01-07T00:00:00Z", "2024-01-12T00:00:00Z"}},
		{"aws list 1,7 is Sun and Sat", "cron(0 0 ? * 1,7 *)", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-06T00:00:00Z", "2024-01-07T00:00:00Z", "2024-01-13T00:00:00Z"}},
		{"aws step over days", "cron(0 0 ? * 2/2 *)", "", "2024-01-01T00:00:00Z", // MON, WED, FRI
			[]string{"2024-01-03T00:00:00Z", "2024-01-05T00:00:00Z", "2024-01-08T00:00:00Z"}},
		{"aws last day of month", "cron(0 10 L * ? *)", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-31T10:00:00Z", "2024-02-29T10:00:00Z", "2024-03-31T10:00:00Z"}},
		{"aws nearest weekday", "cron(0 10 15W * ? *)", "", "2024-06-01T00:00:00Z", // Jun 15 is a Saturday
			[]string{"2024-06-14T10:00:00Z", "2024-07-15T10:00:00Z", "2024-08-15T10:00:00Z"}},
		{"aws last weekday", "cron(0 10 LW * ? *)", "", "2024-03-01T00:00:00Z", // Mar 31 is a Sunday
			[]string{"2024-03-29T10:00:00Z", "2024-04-30T10:00:00Z", "2024-05-31T10:00:00Z"}},
		{"aws third Friday", "cron(0 10 ? * 6#3 *)", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-19T10:00:00Z", "2024-02-16T10:00:00Z", "2024-03-15T10:00:00Z"}},
		{"aws first Monday by name", "cron(0 10 ? * MON#1 *)", "", "2023-12-31T00:00:00Z",
			[]string{"2024-01-01T10:00:00Z", "2024-02-05T10:00:00Z", "2024-03-04T10:00:00Z"}},
		{"aws last Friday", "cron(0 10 ? * 6L *)", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-26T10:00:00Z", "2024-02-23T10:00:00Z", "2024-03-29T10:00:00Z"}},
		{"aws L alone is Saturday", "cron(0 0 ? * L *)", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-06T00:00:00Z", "2024-01-13T00:00:00Z"}},
		{"aws month names", "cron(0 0 1 JAN,JUL ? *)", "", "2024-01-01T00:00:00Z",
			[]string{"2024-07-01T00:00:00Z", "2025-01-01T00:00:00Z"}},
		{"aws years end", "cron(0 0 1 1 ? 2020-2021)", "", "2019-06-01T00:00:00Z",
			[]string{"2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z", ""}},
		{"aws year over", "cron(0 0 1 1 ? 2020)", "", "2020-01-01T00:00:00Z",
			[]string{""}},
		{"aws last year", "cron(0 0 31 12 ? 2099)", "", "2000-01-01T00:00:00Z",
			[]string{"2099-12-31T00:00:00Z", ""}},
		{"standard every 5 minutes", "*/5 * * * *", "", "2024-01-01T00:02:00Z",
			[]string{"2024-01-01T00:05:00Z", "2024-01-01T00:10:00Z"}},
		{"standard dom or dow", "0 0 1 * MON", "", "2024-01-29T12:00:00Z", // Feb 1 is a Thursday
			[]string{"2024-02-01T00:00:00Z", "2024-02-05T00:00:00Z"}},
		{"hourly", "@hourly", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z"}},
		{"daily", "@daily", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-02T00:00:00Z"}},
		{"weekly on Sunday", "@weekly", "", "2024-01-01T00:00:00Z",
			[]string{"2024-01-07T00:00:00Z"}},
		{"monthly", "@monthly", "", "2024-01-15T00:00:00Z",
			[]string{"2024-02-01T00:00:00Z"}},
		{"yearly", "@yearly", "", "2024-01-15T00:00:00Z",
			[]string{"2025-01-01T00:00:00Z"}},
		{"zone", "cron(0 9 * * ? *)", "Asia/Kolkata", "2024-01-01T00:00:00Z",
			[]string{"2024-01-01T09:00:00+05:30", "2024-01-02T09:00:00+05:30"}},
		// Paris: 2024-03-31 02:00 CET becomes 03:00 CEST; 2024-10-27 03:00
		// CEST becomes 02:00 CET.
		{"paris 9:00 keeps local time across spring", "cron(0 9 * * ? *)", "Europe/Paris", "2024-03-29T12:00:00Z",
			[]string{"2024-03-30T09:00:00+01:00", "2024-03-31T09:00:00+02:00"}},
		{"paris missing 2:30 is skipped", "cron(30 2 * * ? *)", "Europe/Paris", "2024-03-30T12:00:00Z",
			[]string{"2024-04-01T02:30:00+02:00", "2024-04-02T02:30:00+02:00"}},
		{"paris half hours over the gap", "cron(*/30 * * * ? *)", "Europe/Paris", "2024-03-31T00:00:00Z",
			[]string{"2024-03-31T01:30:00+01:00", "2024-03-31T03:00:00+02:00", "2024-03-31T03:30:00+02:00"}},
		// The library fires a repeated wall time in both of its hours.
		{"paris repeated 2:30 fires twice", "cron(30 2 * * ? *)", "Europe/Paris", "2024-10-26T12:00:00Z",
			[]string{"2024-10-27T02:30:00+02:00", "2024-10-27T02:30:00+01:00", "2024-10-28T02:30:00+01:00"}},
		{"paris hourly over fall back", "0 * * * *", "Europe/Paris", "2024-10-27T00:30:00Z",
			[]string{"2024-10-27T02:00:00+01:00", "2024-10-27T03:00:00+01:00"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(tt.expr, tt.tz)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			at := mustTime(t, tt.from)
			for i, w := range tt.want {
				got := s.Next(at)
				if w == "" {
					if !got.IsZero() {
						t.Fatalf("tick %d = %s, want none", i, got)
					}
					return
				}
				if want := mustTime(t, w); !got.Equal(want) || got.Location() != time.UTC {
					t.Fatalf("tick %d = %s, want %s in UTC", i, got, want.UTC())
				}
				at = got
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		expr, tz, want string
	}{
		{"", "", "empty"},
		{"   ", "", "empty"},
		{strings.Repeat("*", MaxExpressionLen+1), "", "longer than"},
		{"rate(0 minutes)", "", `rate value "0" is out of range: use a whole number from 1 to 5256000 minutes`},
		{"rate(-1 minutes)", "", "out of range"},
		{"rate(+1 minutes)", "", "out of range"},
		{"rate(1.5 hours)", "", "out of range"},
		{"rate(3651 days)", "", "from 1 to 3650 days"},
		{"rate(5 weeks)", "", `rate unit "weeks" is unknown: use seconds, minutes, hours or days`},
		{"rate(5minutes)", "", "a number and a unit"},
		{"rate(5 minutes", "", "not closed"},
		{"cron(0 12 * * * *)", "", "AWS cron needs '?' in day-of-month or day-of-week, e.g. cron(0 12 * * ? *)"},
		{"cron(0 12 ? * ? *)", "", "only one of day-of-month and day-of-week"},
		{"cron(0 12 * * ?)", "", "AWS cron needs 6 fields"},
		{"cron(0 12 * * ? *", "", "not closed"},
		{"cron(60 12 * * ? *)", "", `minute "60": value 60 is out of range: use 0-59`},
		{"cron(0 24 * * ? *)", "", `hour "24"`},
		{"cron(0 12 ? * 8 *)", "", "day-of-week \"8\": value 8 is out of range: use 1-7 or SUN-SAT"},
		{"cron(0 12 ? * 0 *)", "", "value 0 is out of range: use 1-7"},
		{"cron(0 12 ? * 5-2 *)", "", "range 5-2 is backwards"},
		{"cron(0 12 ? * 2#6 *)", "", "after '#' must be 1-5"},
		{"cron(0 12 ? * FOO *)", "", `"FOO" is not a value: use 1-7 or SUN-SAT`},
		{"cron(0 12 ? * MON,? *)", "", "not a value"},
		{"cron(0 12 1 * ? 2100)", "", "use 1970-2099"},
		{"cron(0 12 1 13 ? *)", "", "use 1-12 or JAN-DEC"},
		{"cron(0 12 32 * ? *)", "", "use 1-31"},
		{"cron(0 12 1W,* * ? *)", "", "use * alone"},
		{"cron(0 ? 1 * ? *)", "", "'?' is only for day-of-month or day-of-week"},
		{"cron(0 12 ? * 2W *)", "", "L, W and # are for"},
		{"cron(*/0 12 1 * ? *)", "", `step "0" is out of range: use 1-60`},
		{"* * * *", "", "a cron expression needs 5 fields"},
		{"0 0 * * 8", "", "use 0-7 or SUN-SAT"},
		{"*/61 * * * *", "", "step"},
		{"@every 5m", "", "unknown descriptor"},
		{"rate(1 minute)", "Mars/Olympus", `timezone "Mars/Olympus" is unknown: use an IANA name like Europe/Paris`},
		{"0 0 * * *", "Local", "timezone \"Local\" is unknown"},
		{"0 0 * * *", "../../etc/passwd", "is unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			s, err := Parse(tt.expr, tt.tz)
			if err == nil {
				t.Fatalf("Parse = %s, want an error", s)
			}
			var fe *fn.Error
			if !errors.As(err, &fe) || fe.Status != http.StatusBadRequest {
				t.Fatalf("error %v is not fn.Invalid", err)
			}
			prefix := "schedule " + `"` + tt.expr + `": `
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want it to start %q and contain %q", err, prefix, tt.want)
			}
		})
	}
}

// The brief's example message, whole.
func TestParseErrorMessage(t *testing.T) {
	_, err := Parse("cron(0 12 * * * *)", "")
	want := `schedule "cron(0 12 * * * *)": AWS cron needs '?' in day-of-month or day-of-week, e.g. cron(0 12 * * ? *)`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %s", err, want)
	}
}

func TestString(t *testing.T) {
	tests := []struct{ expr, want string }{
		{"rate(1 minutes)", "rate(1 minute)"},
		{"rate(5 minute)", "rate(5 minutes)"},
		{"RATE(2 Hours)", "rate(2 hours)"},
		{" rate( 1   day ) ", "rate(1 day)"},
		{"  cron(0  12 * * ? *) ", "cron(0 12 * * ? *)"},
		{"*/5  * * *   *", "*/5 * * * *"},
		{"@Daily", "@daily"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			s, err := Parse(tt.expr, "")
			if err != nil {
				t.Fatal(err)
			}
			if got := s.String(); got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

// A rate's ticks are the same whatever the node's start time: multiples of
// the period since the epoch.
func TestRateAligned(t *testing.T) {
	s, err := Parse("rate(7 minutes)", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{"2024-05-05T10:00:00Z", "2024-05-05T10:03:17Z", "1969-12-31T23:59:59Z"} {
		n := s.Next(mustTime(t, from))
		if n.Unix()%(7*60) != 0 || !n.After(mustTime(t, from)) || n.Sub(mustTime(t, from)) > 7*time.Minute {
			t.Errorf("Next(%s) = %s: not the next multiple of 7 minutes", from, n)
		}
	}
}
