package fn

import (
	"time"
	"unicode/utf8"
)

// AppendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it with HTML escaping off: '"', '\\' and control characters,
// U+2028 and U+2029, and each byte of invalid UTF-8 as U+FFFD.
func AppendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += n
			continue
		}
		i += n
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// AppendJSON appends l as the JSON object encoding/json makes of it, without
// its reflection: the store encodes every log line, three of them (START,
// END, REPORT) for every invocation.
func (l *LogLine) AppendJSON(b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = l.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","tenant":`...)
	b = AppendJSONString(b, l.Tenant)
	b = append(b, `,"function":`...)
	b = AppendJSONString(b, l.Function)
	b = append(b, `,"version":`...)
	b = AppendJSONString(b, l.Version)
	if l.Instance != "" {
		b = append(b, `,"instance":`...)
		b = AppendJSONString(b, l.Instance)
	}
	if l.InvocationID != "" {
		b = append(b, `,"invocation_id":`...)
		b = AppendJSONString(b, l.InvocationID)
	}
	b = append(b, `,"stream":`...)
	b = AppendJSONString(b, l.Stream)
	b = append(b, `,"text":`...)
	b = AppendJSONString(b, l.Text)
	return append(b, '}')
}
