package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/fn"
)

const (
	logSubjectPrefix = "logs."
	// maxLogText bounds one line's text; longer text is cut (a function
	// printing megabytes without a newline must not fill the stream with
	// one message or fail the publish).
	maxLogText = 32 << 10
	// maxLogMsgBytes bounds one stored message: maxLogText of text escaped
	// in the worst case (\u00XX, 6 bytes a byte) plus the other fields.
	maxLogMsgBytes = 6*maxLogText + 4<<10
	// sinceSlack is how far before LogQuery.Since the scan starts, by the
	// server's receive time, so a line stamped just before it was published
	// (or by a node whose clock runs ahead) is not missed; lines are then
	// filtered on their own Time.
	sinceSlack = 10 * time.Second
	// consumerInactive is when the server removes a log reader's consumer
	// that was not deleted (its node died mid-read).
	consumerInactive = 30 * time.Second
	// deleteTimeout bounds the deletion of a finished reader's consumer.
	deleteTimeout = 5 * time.Second
)

// LogQuery selects log lines.
type LogQuery struct {
	// Tenant is required.
	Tenant string
	// Function selects one function's lines; empty selects every function
	// of the tenant.
	Function string
	// Since drops lines whose Time is before it (zero: from the oldest).
	Since time.Time
	// Limit, when positive, delivers only the last Limit lines that exist
	// when ReadLogs starts (then, with Follow, every new line).
	Limit int
	// Follow keeps delivering new lines until ctx ends.
	Follow bool
}

// AppendLog queues a log line for the logs stream and returns at once: it
// never waits for NATS, whose publishes happen on the store's own
// goroutine. A line is dropped, and counted in LogsDropped, when the queue is
// full (16384 lines or 16 MiB of text), when the tenant or function cannot
// be a subject token, after Close, or when its publish fails later. A zero
// Time is set to now; text over 32 KiB is cut.
func (s *Store) AppendLog(l fn.LogLine) {
	if s.logsClosed.Load() || !subjectToken(l.Tenant) || !subjectToken(l.Function) {
		s.logsDropped.Add(1)
		return
	}
	if l.Time.IsZero() {
		l.Time = time.Now()
	}
	if len(l.Text) > maxLogText {
		l.Text = strings.ToValidUTF8(l.Text[:maxLogText], "")
	}
	size := int64(len(l.Text))
	if s.logQueued.Add(size) > logQueueBytes {
		s.logQueued.Add(-size)
		s.logsDropped.Add(1)
		return
	}
	select {
	case s.logQueue <- logItem{line: l}:
	default:
		s.logQueued.Add(-size)
		s.logsDropped.Add(1)
	}
}

// logItem is a queued line, or (flushed set) a flush marker.
type logItem struct {
	line    fn.LogLine
	flushed chan struct{}
}

// publishLogs hands queued lines to NATS until the store closes; lines
// still queued then are counted as dropped.
func (s *Store) publishLogs() {
	var batch logBatch
	window := time.NewTimer(time.Hour)
	window.Stop()
	for {
		select {
		case it := <-s.logQueue:
			batch.add(s, it)
			// Let the lines of the next few milliseconds gather: one wake-up
			// and one message per window instead of one per line, which
			// keeps the publisher off the invoke path's CPUs. A flush
			// marker ends the window at once.
			if it.flushed == nil {
				window.Reset(logGather)
				select {
				case <-window.C:
				case <-s.flushNow:
					window.Stop()
				case <-s.done:
					window.Stop()
				}
			}
			for more := true; more; {
				select {
				case it := <-s.logQueue:
					batch.add(s, it)
				default:
					more = false
				}
			}
			batch.publish(s)
		case <-s.done:
			for {
				select {
				case it := <-s.logQueue:
					if it.flushed != nil {
						close(it.flushed)
						continue
					}
					s.logQueued.Add(-int64(len(it.line.Text)))
					s.logsDropped.Add(1)
				default:
					return
				}
			}
		}
	}
}

// logGather is how long the publisher gathers lines before storing them.
const logGather = 2 * time.Millisecond

// maxLogBatch bounds the lines the publisher takes at once.
const maxLogBatch = 256

// logBatch collects consecutive queued lines of one function into one
// message of newline-separated JSON lines; a line of another function
// starts a new message, so the stream keeps the order lines were queued in.
type logBatch struct {
	n       int
	subject string
	lines   int
	buf     []byte
	line    []byte // one line's encoding, reused
}

func (b *logBatch) add(s *Store, it logItem) {
	if it.flushed != nil {
		// Every line queued before the marker goes out before it closes.
		b.publish(s)
		close(it.flushed)
		return
	}
	s.logQueued.Add(-int64(len(it.line.Text)))
	b.line = it.line.AppendJSON(b.line[:0])
	subject := logSubjectPrefix + it.line.Tenant + "." + it.line.Function
	if subject != b.subject || len(b.buf)+len(b.line) > s.logBatchBytes {
		b.publish(s)
		b.subject = subject
	}
	if b.lines > 0 {
		b.buf = append(b.buf, '\n')
	}
	b.buf = append(b.buf, b.line...)
	b.lines++
	b.n++
}

func (b *logBatch) publish(s *Store) {
	if b.lines > 0 {
		msg := append([]byte(nil), b.buf...)
		if _, err := s.logJS.PublishAsync(b.subject, msg, jetstream.WithStallWait(logAckTimeout)); err != nil {
			s.logsDropped.Add(uint64(b.lines))
		}
	}
	b.buf = b.buf[:0]
	b.lines = 0
	b.subject = ""
	b.n = 0
}

// LogsDropped is how many log lines AppendLog has dropped since Open.
func (s *Store) LogsDropped() uint64 { return s.logsDropped.Load() }

// FlushLogs waits until every line AppendLog queued before the call has
// been stored (or failed and been counted as dropped), or ctx ends.
func (s *Store) FlushLogs(ctx context.Context) error {
	marker := logItem{flushed: make(chan struct{})}
	select {
	case s.logQueue <- marker:
		select {
		case s.flushNow <- struct{}{}:
		default:
		}
	case <-s.done:
		return errors.New("flush logs: store closed")
	case <-ctx.Done():
		return fmt.Errorf("flush logs: %w", ctx.Err())
	}
	select {
	case <-marker.flushed:
	case <-s.done:
		return errors.New("flush logs: store closed")
	case <-ctx.Done():
		return fmt.Errorf("flush logs: %w", ctx.Err())
	}
	select {
	case <-s.logJS.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush logs: %w", ctx.Err())
	}
}

// ReadLogs calls each with the lines q selects, oldest first. Without
// q.Follow it returns after the last line that existed when it started;
// with q.Follow it keeps delivering new lines and returns nil when ctx ends.
// An error from each stops the read and is returned as it is. It returns
// fn.Invalid if q.Tenant or q.Function cannot name one.
//
// With q.Limit it still reads every selected line from the start (or from
// q.Since) to find the last ones: the stream has no index from the end.
func (s *Store) ReadLogs(ctx context.Context, q LogQuery, each func(fn.LogLine) error) error {
	if err := validTenant(q.Tenant); err != nil {
		return err
	}
	subject := logSubjectPrefix + q.Tenant + ".>"
	if q.Function != "" {
		if err := fn.ValidateName(q.Function); err != nil {
			return err
		}
		subject = logSubjectPrefix + q.Tenant + "." + q.Function
	}
	info, err := s.logs.Info(ctx)
	if err != nil {
		return fmt.Errorf("read logs: %w", err)
	}
	endSeq := info.State.LastSeq
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{subject},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: consumerInactive,
	}
	if !q.Since.IsZero() {
		start := q.Since.Add(-sinceSlack)
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &start
	}
	cons, err := s.js.OrderedConsumer(ctx, LogsStream, cfg)
	if err != nil {
		return fmt.Errorf("read logs: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read logs: %w", err)
	}
	defer func() {
		it.Stop()
		s.deleteConsumer(ctx, cons)
	}()
	r := logReader{q: q, each: each, tail: newRing(q.Limit)}
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		// Nothing stored yet: every line from here on is new.
		if !q.Follow {
			return nil
		}
		r.live = true
	}
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				if q.Follow {
					return nil
				}
				return fmt.Errorf("read logs: %w", ctx.Err())
			}
			return fmt.Errorf("read logs: %w", err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read logs: %w", err)
		}
		seq := meta.Sequence.Stream
		if !r.live && seq > endSeq {
			// The first line newer than the snapshot ends the history.
			if done, err := r.endHistory(); done || err != nil {
				return err
			}
		}
		if err := r.add(m.Data()); err != nil {
			return err
		}
		if !r.live && (meta.NumPending == 0 || seq >= endSeq) {
			if done, err := r.endHistory(); done || err != nil {
				return err
			}
		}
	}
}

// deleteConsumer removes a finished read's consumer at once rather than
// leaving it to the server's inactivity threshold.
func (s *Store) deleteConsumer(ctx context.Context, cons jetstream.Consumer) {
	ci := cons.CachedInfo()
	if ci == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
	defer cancel()
	if err := s.js.DeleteConsumer(ctx, LogsStream, ci.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.log.Debug("delete log consumer", "consumer", ci.Name, "error", err)
	}
}

// logReader delivers lines: while reading history (lines that existed when
// the read started) through the tail ring when a limit is set, then live.
type logReader struct {
	q    LogQuery
	each func(fn.LogLine) error
	tail *ring
	live bool
}

// add delivers the lines of one message: newline-separated JSON lines.
func (r *logReader) add(data []byte) error {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if err := r.addLine(line); err != nil {
			return err
		}
	}
	return nil
}

func (r *logReader) addLine(data []byte) error {
	var l fn.LogLine
	if err := json.Unmarshal(data, &l); err != nil {
		return fmt.Errorf("read logs: decode: %w", err)
	}
	if !r.q.Since.IsZero() && l.Time.Before(r.q.Since) {
		return nil
	}
	if !r.live && r.tail != nil {
		r.tail.add(l)
		return nil
	}
	return r.each(l)
}

// endHistory delivers the tail and switches to live lines; done is true
// when the query does not follow.
func (r *logReader) endHistory() (done bool, err error) {
	r.live = true
	if r.tail != nil {
		for _, l := range r.tail.lines() {
			if err := r.each(l); err != nil {
				return true, err
			}
		}
		r.tail = nil
	}
	return !r.q.Follow, nil
}

// ring keeps the last n lines added.
type ring struct {
	n    int
	buf  []fn.LogLine
	next int // where the next line goes once buf holds n
}

// newRing returns a ring of n lines, or nil when n is not positive.
func newRing(n int) *ring {
	if n <= 0 {
		return nil
	}
	return &ring{n: n}
}

func (r *ring) add(l fn.LogLine) {
	if len(r.buf) < r.n {
		r.buf = append(r.buf, l)
		return
	}
	r.buf[r.next] = l
	r.next = (r.next + 1) % r.n
}

// lines returns the kept lines, oldest first.
func (r *ring) lines() []fn.LogLine {
	return append(append([]fn.LogLine(nil), r.buf[r.next:]...), r.buf[:r.next]...)
}

// subjectToken reports whether s can be one token of a NATS subject.
func subjectToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ". *>\t\r\n")
}
