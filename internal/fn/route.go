package fn

import (
	"strings"
)

// Route is a parsed HTTP route pattern: an optional method and a path of
// literal segments, {name} wildcards matching one segment and an optional
// final {name...} (or API Gateway's {name+}) matching the rest of the path.
type Route struct {
	// Method is upper-case, or "" for any method.
	Method   string
	Segments []Segment
	// Raw is the pattern as written, normalised ("GET /a/{b}").
	Raw string
}

// Segment is one path segment of a route.
type Segment struct {
	Literal string // set when the segment is literal
	Param   string // set when the segment is a wildcard
	Rest    bool   // the wildcard takes the rest of the path
}

const maxRouteLen = 512

var methods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true,
	"DELETE": true, "OPTIONS": true, "ANY": true,
}

// ParseRoute parses "METHOD /path" or "/path". Paths under /v1/, /fn/ and
// /healthz belong to Aloft and are refused.
func ParseRoute(s string) (Route, error) {
	orig := s
	if len(s) > maxRouteLen {
		return Route{}, Invalid("route is %d bytes: keep it under %d", len(s), maxRouteLen)
	}
	s = strings.TrimSpace(s)
	var r Route
	if i := strings.IndexByte(s, ' '); i >= 0 {
		m := strings.ToUpper(s[:i])
		if !methods[m] {
			return Route{}, Invalid("route %q: method %q is unknown: use GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or ANY", orig, s[:i])
		}
		if m != "ANY" {
			r.Method = m
		}
		s = strings.TrimSpace(s[i+1:])
	}
	if !strings.HasPrefix(s, "/") {
		return Route{}, Invalid("route %q: the path must start with '/'", orig)
	}
	if s == "/v1" || s == "/fn" || s == "/healthz" || strings.HasPrefix(s, "/v1/") || strings.HasPrefix(s, "/fn/") {
		return Route{}, Invalid("route %q: paths /v1/, /fn/ and /healthz belong to Aloft; choose another path", orig)
	}
	seen := map[string]bool{}
	parts := strings.Split(s[1:], "/")
	if s == "/" {
		parts = nil
	}
	for i, p := range parts {
		if p == "" {
			if i == len(parts)-1 {
				// A trailing slash is kept as an empty literal segment.
				r.Segments = append(r.Segments, Segment{Literal: ""})
				continue
			}
			return Route{}, Invalid("route %q: empty path segment ('//')", orig)
		}
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") {
			name := p[1 : len(p)-1]
			rest := strings.HasSuffix(name, "...") || strings.HasSuffix(name, "+")
			// {name+} is API Gateway's spelling of {name...}.
			name = strings.TrimSuffix(strings.TrimSuffix(name, "..."), "+")
			if !envKeyRE.MatchString(name) {
				return Route{}, Invalid("route %q: wildcard {%s} needs a name of letters, digits and '_'", orig, name)
			}
			if seen[name] {
				return Route{}, Invalid("route %q: wildcard {%s} appears twice", orig, name)
			}
			if rest && i != len(parts)-1 {
				return Route{}, Invalid("route %q: {%s...} must be the last segment", orig, name)
			}
			seen[name] = true
			r.Segments = append(r.Segments, Segment{Param: name, Rest: rest})
			continue
		}
		if strings.ContainsAny(p, "{}") {
			return Route{}, Invalid("route %q: segment %q mixes text and a wildcard; a wildcard must be a whole segment", orig, p)
		}
		if p == "." || p == ".." {
			return Route{}, Invalid("route %q: '.' and '..' segments are not allowed", orig)
		}
		r.Segments = append(r.Segments, Segment{Literal: p})
	}
	r.Raw = s
	if r.Method != "" {
		r.Raw = r.Method + " " + s
	}
	return r, nil
}

// Key is r without its wildcards' names: two routes with one Key match
// the same requests ("/a/{id}", "/a/{name}"; "/a/{p+}", "/a/{rest...}").
func (r Route) Key() string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte(' ')
	for _, seg := range r.Segments {
		b.WriteByte('/')
		switch {
		case seg.Rest:
			b.WriteString("{...}")
		case seg.Param != "":
			b.WriteString("{}")
		default:
			b.WriteString(seg.Literal)
		}
	}
	if len(r.Segments) == 0 {
		b.WriteByte('/')
	}
	return b.String()
}

// Match matches an unescaped request path against r, returning the
// wildcard values, or ok=false.
func (r Route) Match(method, path string) (params map[string]string, ok bool) {
	if r.Method != "" && r.Method != method && !(r.Method == "GET" && method == "HEAD") {
		return nil, false
	}
	if !strings.HasPrefix(path, "/") {
		return nil, false
	}
	rest := path[1:]
	for i, seg := range r.Segments {
		if seg.Rest {
			if params == nil {
				params = map[string]string{}
			}
			params[seg.Param] = rest
			return params, true
		}
		var part string
		last := i == len(r.Segments)-1
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			part, rest = rest, ""
			if !last {
				return nil, false
			}
		} else {
			part, rest = rest[:j], rest[j+1:]
			if last {
				return nil, false
			}
		}
		if seg.Param != "" {
			if part == "" {
				return nil, false
			}
			if params == nil {
				params = map[string]string{}
			}
			params[seg.Param] = part
			continue
		}
		if part != seg.Literal {
			return nil, false
		}
	}
	if len(r.Segments) == 0 {
		return params, rest == ""
	}
	return params, true
}

// Specificity orders routes: more literal segments first, rest wildcards last.
func (r Route) Specificity() int {
	n := 0
	for _, s := range r.Segments {
		switch {
		case s.Rest:
			n += 1
		case s.Param != "":
			n += 10
		default:
			n += 100
		}
	}
	if r.Method != "" {
		n++
	}
	return n
}
