package wasm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// cgiShape says what a command module must write, for the errors of
// parseCGI.
const cgiShape = "a command module writes headers such as Content-Type: text/plain, a blank line, then the body; Go's net/http/cgi.Serve does"

// parseCGI parses a CGI response (RFC 3875 §6): header lines ending in \n
// or \r\n, a blank line, the body. Content-Type or Location must be
// present; Status ("404" or "404 Not Found") sets the status, Location
// without Status means 302.
func parseCGI(out []byte) (status int, h http.Header, body []byte, err error) {
	if len(out) == 0 {
		return 0, nil, nil, errors.New("the function wrote no response on stdout")
	}
	rd := bytes.NewReader(out)
	br := bufio.NewReader(rd)
	mh, err := textproto.NewReader(br).ReadMIMEHeader()
	if err != nil {
		return 0, nil, nil, fmt.Errorf("the function's response has unparsable CGI headers: %v (%s)", err, cgiShape)
	}
	h = http.Header(mh)
	status = http.StatusOK
	if s := h.Get("Status"); s != "" {
		code, _, _ := strings.Cut(strings.TrimSpace(s), " ")
		status, err = strconv.Atoi(code)
		if err != nil || status < 100 || status > 999 {
			return 0, nil, nil, fmt.Errorf("the function's response has an invalid Status header %q", s)
		}
		h.Del("Status")
	} else if h.Get("Location") != "" {
		status = http.StatusFound
	}
	if h.Get("Content-Type") == "" && h.Get("Location") == "" {
		return 0, nil, nil, fmt.Errorf("the function's CGI response has neither Content-Type nor Location (%s)", cgiShape)
	}
	// What bufio read ahead is the start of the body.
	body = out[len(out)-rd.Len()-br.Buffered():]
	return status, h, body, nil
}
