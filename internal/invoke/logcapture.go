package invoke

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"aloft/internal/fn"
)

// maxLineBytes bounds one captured line; longer output is split.
const maxLineBytes = 16 * 1024

// tailBytes is how much of an invocation's log the invoke API returns.
const tailBytes = 4096

// capture reads one instance's stdout or stderr pipe, splits it into lines
// and hands each line, tagged with the invocation in flight, to the sink.
// The sandbox hands it the pipe (sandbox.OutputReader).
//
// All reads of the pipe happen under mu with non-blocking syscalls, so
// sync can drain whatever the function wrote before it answered: every line
// printed before the response is attributed to the right invocation.
type capture struct {
	stream   string
	sink     *lineSink
	attached chan struct{} // closed once ReadOutput has the pipe

	mu      sync.Mutex // guards reads of the pipe, partial and buf
	raw     syscall.RawConn
	partial []byte
	buf     []byte
}

func newCapture(stream string, sink *lineSink) *capture {
	return &capture{stream: stream, sink: sink, attached: make(chan struct{}), buf: make([]byte, 32*1024)}
}

// ReadOutput reads r until the function's side is closed (the instance
// exited). The sandbox calls it on a goroutine it owns.
func (c *capture) ReadOutput(r *os.File) {
	raw, err := r.SyscallConn()
	if err != nil {
		close(c.attached)
		_, _ = io.Copy(io.Discard, r)
		return
	}
	c.mu.Lock()
	c.raw = raw
	c.mu.Unlock()
	close(c.attached)
	done := false
	for !done {
		err := raw.Read(func(fd uintptr) bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			eof, again := c.readOnce(int(fd))
			if eof {
				done = true
				return true
			}
			return !again
		})
		if err != nil {
			done = true
		}
	}
	c.mu.Lock()
	c.flushPartial()
	c.mu.Unlock()
}

// readOnce reads what is available. Called with mu held.
func (c *capture) readOnce(fd int) (eof, again bool) {
	n, err := syscall.Read(fd, c.buf)
	if n > 0 {
		c.consume(c.buf[:n])
		return false, false
	}
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
		return false, true
	}
	return true, false
}

// sync drains everything already written to the pipe and flushes a
// partial last line, so the invocation that just ended gets its lines.
func (c *capture) sync() {
	<-c.attached
	c.mu.Lock()
	raw := c.raw
	c.mu.Unlock()
	if raw == nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i := 0; i < 64; i++ {
			eof, again := c.readOnce(int(fd))
			if eof || again {
				break
			}
		}
		c.flushPartial()
	})
}

func (c *capture) consume(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			c.partial = append(c.partial, b...)
			if len(c.partial) >= maxLineBytes {
				c.flushPartial()
			}
			return
		}
		if len(c.partial) > 0 {
			c.partial = append(c.partial, b[:i]...)
			c.sink.emit(c.stream, c.partial)
			c.partial = c.partial[:0]
		} else {
			c.sink.emit(c.stream, b[:i])
		}
		b = b[i+1:]
	}
}

func (c *capture) flushPartial() {
	if len(c.partial) > 0 {
		c.sink.emit(c.stream, c.partial)
		c.partial = c.partial[:0]
	}
}

// lineSink tags lines with the instance's current invocation and keeps the
// tail of that invocation's log.
type lineSink struct {
	base   fn.LogLine // tenant, function, version, instance
	append func(fn.LogLine)

	mu      sync.Mutex
	current string // invocation id in flight ("" when idle or ambiguous)
	tail    *tailBuffer
}

func (s *lineSink) emit(stream string, line []byte) {
	l := s.base
	l.Time = time.Now().UTC()
	l.Stream = stream
	l.Text = string(bytes.TrimRight(line, "\r"))
	s.mu.Lock()
	l.InvocationID = s.current
	if s.tail != nil {
		s.tail.add(l.Text)
	}
	s.mu.Unlock()
	s.append(l)
}

// platform writes a line of Aloft's own about an invocation (START, END,
// REPORT, errors), like Lambda's platform lines.
func (s *lineSink) platform(invocationID, text string) {
	l := s.base
	l.Time = time.Now().UTC()
	l.Stream = "platform"
	l.Text = text
	l.InvocationID = invocationID
	s.mu.Lock()
	if s.tail != nil && s.current == invocationID {
		s.tail.add(text)
	}
	s.mu.Unlock()
	s.append(l)
}

// begin marks id as the invocation in flight; with tail, its log tail is
// kept. Instances serving several requests at once pass id "" (ambiguous).
func (s *lineSink) begin(id string, tail bool) {
	s.mu.Lock()
	s.current = id
	s.tail = nil
	if tail {
		s.tail = &tailBuffer{}
	}
	s.mu.Unlock()
}

// end clears the invocation in flight and returns its log tail.
func (s *lineSink) end() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current = ""
	t := s.tail
	s.tail = nil
	if t == nil {
		return nil
	}
	return t.bytes()
}

// tailBuffer keeps the last tailBytes of text lines.
type tailBuffer struct {
	b []byte
}

func (t *tailBuffer) add(line string) {
	t.b = append(t.b, line...)
	t.b = append(t.b, '\n')
	if len(t.b) > 2*tailBytes {
		t.b = append(t.b[:0], t.b[len(t.b)-tailBytes:]...)
	}
}

func (t *tailBuffer) bytes() []byte {
	if len(t.b) > tailBytes {
		return t.b[len(t.b)-tailBytes:]
	}
	return t.b
}

// Write takes output handed over as writes rather than as a pipe.
func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.consume(p)
	c.mu.Unlock()
	return len(p), nil
}

// flush hands over a partial last line (output written through Write).
func (c *capture) flush() {
	c.mu.Lock()
	c.flushPartial()
	c.mu.Unlock()
}
