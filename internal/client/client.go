// Package client is the Go client of Aloft's REST API (/v1). The CLI and the
// end-to-end tests use it; it speaks only the documented wire contract.
//
// Every call that gets a non-2xx answer returns an *APIError carrying the
// server's status, code and message. Transport failures are returned wrapped
// with the operation.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"aloft/internal/fn"
)

// maxBody caps how much of any non-streamed response is read (an invoke
// result, a function list). Results larger than this are refused, not
// truncated.
const maxBody = 64 << 20

// Client talks to one Aloft server. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// New returns a client of the server at baseURL (e.g.
// "http://127.0.0.1:8080") that sends token as a bearer token. The client has
// no overall timeout: bound calls with their context (logs with follow stream
// until the context ends).
func New(baseURL, token string) *Client {
	return &Client{
		base:  strings.TrimRight(baseURL, "/"),
		token: token,
		hc:    &http.Client{},
	}
}

// APIError is a non-2xx answer from the server.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the server's machine-readable error code ("not_found"), or ""
	// when the body was not an Aloft error document.
	Code string
	// Message says what went wrong; for a body that was not an Aloft error
	// document it is the status text and the start of the body.
	Message string
	// RetryAfter is the Retry-After header in seconds (429), or 0.
	RetryAfter int
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
}

// IsNotFound reports whether err is an *APIError with status 404.
func IsNotFound(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// Health checks GET /healthz. It returns an error if the server does not
// answer 200 with {"status":"ok"}.
func (c *Client) Health(ctx context.Context) error {
	var body struct {
		Status string `json:"status"`
	}
	if err := c.do(ctx, http.MethodGet, "/healthz", nil, "", nil, &body); err != nil {
		return fmt.Errorf("health: %w", err)
	}
	if body.Status != "ok" {
		return fmt.Errorf("health: server status is %q, not \"ok\"", body.Status)
	}
	return nil
}

// Deploy creates or replaces the $LATEST code and configuration of the
// function cfg.Name. code is a .zip or .tar.gz archive; it is streamed to the
// server as it is read, never held whole in memory. created reports whether
// the function is new (201) rather than updated (200).
func (c *Client) Deploy(ctx context.Context, cfg fn.Config, code io.Reader) (f *fn.Function, created bool, err error) {
	if cfg.Name == "" {
		return nil, false, errors.New("deploy: function name is empty")
	}
	if code == nil {
		return nil, false, fmt.Errorf("deploy %s: no code given", cfg.Name)
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, false, fmt.Errorf("deploy %s: encode config: %w", cfg.Name, err)
	}
	br := bufio.NewReader(code)
	filename, ctype := sniffArchive(br)

	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	done := make(chan error, 1)
	go func() {
		err := writeDeployParts(mw, cfgJSON, filename, ctype, br)
		pw.CloseWithError(err)
		done <- err
	}()

	var out fn.Function
	status, err := c.send(ctx, http.MethodPut, functionPath(cfg.Name), nil, mw.FormDataContentType(), pr, &out)
	// The server may answer before reading the whole body (an early 401 or
	// 413); closing the reader unblocks the writer so it can be waited for.
	pr.CloseWithError(errRequestDone)
	werr := <-done
	if err != nil {
		return nil, false, fmt.Errorf("deploy %s: %w", cfg.Name, err)
	}
	if werr != nil && !errors.Is(werr, errRequestDone) {
		return nil, false, fmt.Errorf("deploy %s: read code: %w", cfg.Name, werr)
	}
	return &out, status == http.StatusCreated, nil
}

// errRequestDone stops the multipart writer once the request has ended.
var errRequestDone = errors.New("request finished")

func writeDeployParts(mw *multipart.Writer, cfgJSON []byte, filename, ctype string, code io.Reader) error {
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="config"`)
	h.Set("Content-Type", "application/json")
	w, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := w.Write(cfgJSON); err != nil {
		return err
	}
	h = textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="code"; filename=%q`, filename))
	h.Set("Content-Type", ctype)
	if w, err = mw.CreatePart(h); err != nil {
		return err
	}
	if _, err := io.Copy(w, code); err != nil {
		return err
	}
	return mw.Close()
}

// sniffArchive names the code part from the archive's magic bytes; the
// server decides by content, the name is a courtesy.
func sniffArchive(br *bufio.Reader) (filename, contentType string) {
	head, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")), bytes.HasPrefix(head, []byte("PK\x05\x06")):
		return "code.zip", "application/zip"
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return "code.tar.gz", "application/gzip"
	}
	return "code", "application/octet-stream"
}

// UpdateConfig replaces the configuration of the existing function cfg.Name,
// keeping its code.
func (c *Client) UpdateConfig(ctx context.Context, cfg fn.Config) (*fn.Function, error) {
	if cfg.Name == "" {
		return nil, errors.New("update config: function name is empty")
	}
	var out fn.Function
	if err := c.doJSON(ctx, http.MethodPut, functionPath(cfg.Name), nil, cfg, &out); err != nil {
		return nil, fmt.Errorf("update config of %s: %w", cfg.Name, err)
	}
	return &out, nil
}

// List returns every function.
func (c *Client) List(ctx context.Context) ([]*fn.Function, error) {
	var out struct {
		Functions []*fn.Function `json:"functions"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/functions", nil, "", nil, &out); err != nil {
		return nil, fmt.Errorf("list functions: %w", err)
	}
	return out.Functions, nil
}

// Get returns one function's $LATEST state.
func (c *Client) Get(ctx context.Context, name string) (*fn.Function, error) {
	var out fn.Function
	if err := c.do(ctx, http.MethodGet, functionPath(name), nil, "", nil, &out); err != nil {
		return nil, fmt.Errorf("get function %s: %w", name, err)
	}
	return &out, nil
}

// Delete deletes a function with its versions and aliases.
func (c *Client) Delete(ctx context.Context, name string) error {
	if err := c.do(ctx, http.MethodDelete, functionPath(name), nil, "", nil, nil); err != nil {
		return fmt.Errorf("delete function %s: %w", name, err)
	}
	return nil
}

// Publish freezes $LATEST as the next numbered version.
func (c *Client) Publish(ctx context.Context, name, description string) (*fn.Version, error) {
	in := struct {
		Description string `json:"description,omitempty"`
	}{description}
	var out fn.Version
	if err := c.doJSON(ctx, http.MethodPost, functionPath(name)+"/versions", nil, in, &out); err != nil {
		return nil, fmt.Errorf("publish %s: %w", name, err)
	}
	return &out, nil
}

// Versions lists a function's published versions.
func (c *Client) Versions(ctx context.Context, name string) ([]*fn.Version, error) {
	var out struct {
		Versions []*fn.Version `json:"versions"`
	}
	if err := c.do(ctx, http.MethodGet, functionPath(name)+"/versions", nil, "", nil, &out); err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", name, err)
	}
	return out.Versions, nil
}

// SetAlias creates or moves the alias to a published version.
func (c *Client) SetAlias(ctx context.Context, name, alias string, version int, description string) (*fn.Alias, error) {
	in := struct {
		Version     int    `json:"version"`
		Description string `json:"description,omitempty"`
	}{version, description}
	var out fn.Alias
	if err := c.doJSON(ctx, http.MethodPut, aliasPath(name, alias), nil, in, &out); err != nil {
		return nil, fmt.Errorf("set alias %s of %s: %w", alias, name, err)
	}
	return &out, nil
}

// Aliases lists a function's aliases.
func (c *Client) Aliases(ctx context.Context, name string) ([]*fn.Alias, error) {
	var out struct {
		Aliases []*fn.Alias `json:"aliases"`
	}
	if err := c.do(ctx, http.MethodGet, functionPath(name)+"/aliases", nil, "", nil, &out); err != nil {
		return nil, fmt.Errorf("list aliases of %s: %w", name, err)
	}
	return out.Aliases, nil
}

// DeleteAlias deletes an alias.
func (c *Client) DeleteAlias(ctx context.Context, name, alias string) error {
	if err := c.do(ctx, http.MethodDelete, aliasPath(name, alias), nil, "", nil, nil); err != nil {
		return fmt.Errorf("delete alias %s of %s: %w", alias, name, err)
	}
	return nil
}

// InvokeOptions tunes one synchronous invocation.
type InvokeOptions struct {
	// Qualifier selects a version number or alias; empty means $LATEST.
	Qualifier string
	// LogTail asks for the last 4 KB of the invocation's log.
	LogTail bool
}

// InvokeResult is the answer of a synchronous invocation.
type InvokeResult struct {
	// Payload is the function's result, or its error JSON when
	// FunctionError is set.
	Payload []byte
	// FunctionError is "Unhandled" when the function failed, else "".
	FunctionError   string
	InvocationID    string
	ExecutedVersion string
	// LogTail is the decoded end of the invocation's log (with LogTail).
	LogTail string
}

// Invoke calls a function synchronously with payload. A function that fails
// is not an error here: its error JSON is in the result and FunctionError is
// set. Errors are the server refusing the call (*APIError: not found,
// throttled, timeout) or transport failures.
func (c *Client) Invoke(ctx context.Context, name string, payload []byte, opt InvokeOptions) (*InvokeResult, error) {
	q := url.Values{}
	if opt.Qualifier != "" {
		q.Set("qualifier", opt.Qualifier)
	}
	if opt.LogTail {
		q.Set("log", "tail")
	}
	resp, err := c.request(ctx, http.MethodPost, functionPath(name)+"/invoke", q, "application/json", bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("invoke %s: %w", name, err)
	}
	defer resp.Body.Close()
	body, err := readLimited(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("invoke %s: read result: %w", name, err)
	}
	res := &InvokeResult{
		Payload:         body,
		FunctionError:   resp.Header.Get("X-Aloft-Function-Error"),
		InvocationID:    resp.Header.Get("X-Aloft-Invocation-Id"),
		ExecutedVersion: resp.Header.Get("X-Aloft-Executed-Version"),
	}
	if tail := resp.Header.Get("X-Aloft-Log-Result"); tail != "" {
		b, err := base64.StdEncoding.DecodeString(tail)
		if err != nil {
			return nil, fmt.Errorf("invoke %s: decode X-Aloft-Log-Result: %w", name, err)
		}
		res.LogTail = string(b)
	}
	return res, nil
}

// LogsOptions selects log lines.
type LogsOptions struct {
	// Since, when set, skips lines older than it.
	Since time.Time
	// Limit, when positive, caps the number of lines (the most recent).
	Limit int
	// Follow keeps the stream open, delivering new lines as they are
	// written, until ctx ends.
	Follow bool
}

// Logs streams a function's log lines to each, in order. It returns the first
// error each returns. With Follow it returns only when ctx ends (with an
// error wrapping ctx.Err()), the server closes the stream, or each fails.
func (c *Client) Logs(ctx context.Context, name string, opt LogsOptions, each func(fn.LogLine) error) error {
	q := url.Values{}
	if !opt.Since.IsZero() {
		q.Set("since", opt.Since.UTC().Format(time.RFC3339Nano))
	}
	if opt.Limit > 0 {
		q.Set("limit", strconv.Itoa(opt.Limit))
	}
	if opt.Follow {
		q.Set("follow", "true")
	}
	resp, err := c.request(ctx, http.MethodGet, functionPath(name)+"/logs", q, "", nil)
	if err != nil {
		return fmt.Errorf("logs of %s: %w", name, err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var l fn.LogLine
		if err := dec.Decode(&l); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if ctx.Err() != nil {
				return fmt.Errorf("logs of %s: %w", name, ctx.Err())
			}
			return fmt.Errorf("logs of %s: read stream: %w", name, err)
		}
		if err := each(l); err != nil {
			return err
		}
	}
}

func functionPath(name string) string {
	return "/v1/functions/" + url.PathEscape(name)
}

func aliasPath(name, alias string) string {
	return functionPath(name) + "/aliases/" + url.PathEscape(alias)
}

// doJSON sends in as a JSON body and decodes the answer into out.
func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	return c.do(ctx, method, path, q, "application/json", bytes.NewReader(b), out)
}

// do sends a request and decodes a 2xx JSON answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, ctype string, body io.Reader, out any) error {
	_, err := c.send(ctx, method, path, q, ctype, body, out)
	return err
}

func (c *Client) send(ctx context.Context, method, path string, q url.Values, ctype string, body io.Reader, out any) (int, error) {
	resp, err := c.request(ctx, method, path, q, ctype, body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := readLimited(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("read response: %w", err)
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return 0, fmt.Errorf("decode response: %w", err)
		}
	}
	return resp.StatusCode, nil
}

// request sends a request and returns a 2xx response for the caller to read
// and close; any other status becomes an *APIError.
func (c *Client) request(ctx context.Context, method, path string, q url.Values, ctype string, body io.Reader) (*http.Response, error) {
	h := http.Header{}
	if ctype != "" {
		h.Set("Content-Type", ctype)
	}
	return c.requestHeader(ctx, method, path, q, h, body)
}

// requestHeader is request with the request's headers (other than
// Authorization) given whole.
func (c *Client) requestHeader(ctx context.Context, method, path string, q url.Values, h http.Header, body io.Reader) (*http.Response, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, apiError(resp)
}

func apiError(resp *http.Response) *APIError {
	e := &APIError{Status: resp.StatusCode}
	if s := resp.Header.Get("Retry-After"); s != "" {
		e.RetryAfter, _ = strconv.Atoi(s)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var doc struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &doc) == nil && doc.Error.Message != "" {
		e.Code, e.Message = doc.Error.Code, doc.Error.Message
		return e
	}
	e.Message = http.StatusText(resp.StatusCode)
	if s := strings.TrimSpace(string(b)); s != "" {
		if len(s) > 200 {
			s = s[:200] + "…"
		}
		e.Message += ": " + s
	}
	return e
}

func readLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxBody+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("response is over %d bytes", maxBody)
	}
	return b, nil
}
