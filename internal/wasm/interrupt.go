package wasm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// Stopping running code at a deadline. wazero's own way
// (RuntimeConfig.WithCloseOnContextDone) compiles, at every loop header, a
// call out of the compiled code into Go that asks whether the module was
// closed. Go's WebAssembly has a loop at the top of nearly every function
// (it resumes goroutines through it), so that call ran at almost every
// call and made a Go module's code three to four times slower.
//
// Instead, at compile time, each module gets a mutable i32 global of its
// own, exported as interruptExport, and every loop body starts with
//
//	global.get $interrupt
//	if
//	  unreachable
//	end
//
// a load and a branch in the compiled code. Code can run unboundedly only
// through a loop (recursion ends at the stack limit), so setting the
// global makes the instance trap at its next iteration. The host sets it
// from another goroutine when the call's context ends (interrupt.fire),
// which also wakes a sleep in progress; the instance is closed afterwards
// by the goroutine that called it, never under the running code.
//
// A start section would run its function inside instantiation, before the
// global can be found and so beyond any interrupt: the rewrite drops it
// and exports the function as startExport, which the host calls right
// after instantiating, as the start section would have, but under the
// interrupt (runStart).

// interruptExport is the name the added global is exported under, and
// startExport the name of a start section's function.
const (
	interruptExport = "aloft:interrupt"
	startExport     = "aloft:start"
)

// Section ids and instruction opcodes the rewrite needs.
const (
	sectionCustom = 0
	sectionImport = 2
	sectionGlobal = 6
	sectionExport = 7
	sectionStart  = 8
	sectionCode   = 10

	opLoop = 0x03

	// import and export kinds
	importFunc, importTable, importMemory, importGlobal, importTag = 0, 1, 2, 3, 4
	exportFunc, exportGlobal                                       = 0, 3
)

// sectionRank orders the known sections as the binary format requires
// (the tag section sits between memory and global).
var sectionRank = map[byte]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}

// interruptible returns wasm rewritten so that its code can be
// interrupted: the global and its export appended, the check at the start
// of every loop body, and a start section turned into an export. It fails
// on a malformed module and on any instruction outside WebAssembly 2.0
// (which wazero, as configured, rejects too): code that could not be
// checked would run past its timeout.
func interruptible(wasm []byte) ([]byte, error) {
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" {
		return nil, errors.New("not a WebAssembly binary: it does not start with the bytes \\0asm")
	}
	type section struct {
		id      byte
		content []byte
		raw     []byte
	}
	var secs []section
	importedGlobals, definedGlobals := 0, 0
	var start []byte // the start function's index (LEB128), if any
	for p := 8; p < len(wasm); {
		id := wasm[p]
		size, n := readUleb(wasm[p+1:])
		if n == 0 || uint64(len(wasm)-p-1-n) < size {
			return nil, fmt.Errorf("section %d at offset %d: size runs past the end", id, p)
		}
		next := p + 1 + n + int(size)
		s := section{id: id, content: wasm[p+1+n : next], raw: wasm[p:next]}
		var err error
		switch id {
		case sectionImport:
			importedGlobals, err = countImportedGlobals(s.content)
		case sectionGlobal:
			var c uint64
			if c, n = readUleb(s.content); n == 0 {
				err = errors.New("bad count")
			}
			definedGlobals = int(c)
		case sectionExport:
			err = checkExportNames(s.content)
		case sectionStart:
			if _, n := readUleb(s.content); n == 0 || n != len(s.content) {
				err = errors.New("bad function index")
			}
			start = s.content
		}
		if err != nil {
			return nil, fmt.Errorf("section %d: %w", id, err)
		}
		secs = append(secs, s)
		p = next
	}
	global := uint32(importedGlobals + definedGlobals)
	exports := func(count uint64, rest []byte) []byte { // the export section's content
		b := binary.AppendUvarint(nil, count+1+uint64(min(len(start), 1)))
		b = appendExport(append(b, rest...), interruptExport, exportGlobal, binary.AppendUvarint(nil, uint64(global)))
		if start != nil {
			b = appendExport(b, startExport, exportFunc, start)
		}
		return b
	}

	out := make([]byte, 0, len(wasm)+len(wasm)/16)
	out = append(out, wasm[:8]...)
	appendSection := func(id byte, content []byte) {
		out = append(out, id)
		out = binary.AppendUvarint(out, uint64(len(content)))
		out = append(out, content...)
	}
	var haveGlobal, haveExport bool
	// emitMissing writes the global and export sections a module lacks
	// before the first section that must follow them.
	emitMissing := func(rank int) {
		if !haveGlobal && rank > sectionRank[sectionGlobal] {
			appendSection(sectionGlobal, appendGlobal([]byte{1}))
			haveGlobal = true
		}
		if !haveExport && rank > sectionRank[sectionExport] {
			appendSection(sectionExport, exports(0, nil))
			haveExport = true
		}
	}
	for _, s := range secs {
		if s.id != sectionCustom {
			emitMissing(sectionRank[s.id])
		}
		switch s.id {
		case sectionGlobal:
			c, n := readUleb(s.content)
			appendSection(s.id, appendGlobal(append(binary.AppendUvarint(nil, c+1), s.content[n:]...)))
			haveGlobal = true
		case sectionExport:
			c, n := readUleb(s.content)
			appendSection(s.id, exports(c, s.content[n:]))
			haveExport = true
		case sectionStart:
			// dropped: exported instead
		case sectionCode:
			code, err := checkLoops(s.content, global)
			if err != nil {
				return nil, fmt.Errorf("code section: %w", err)
			}
			appendSection(s.id, code)
		default:
			out = append(out, s.raw...)
		}
	}
	emitMissing(len(sectionRank) + 1)
	return out, nil
}

// appendGlobal appends the interrupt global's entry to the content of a
// global section (whose count the caller wrote): a mutable i32, 0.
func appendGlobal(b []byte) []byte {
	return append(b, 0x7f, 0x01, opI32Const, 0x00, opEnd)
}

// appendExport appends an export entry: name, kind, index (LEB128).
func appendExport(b []byte, name string, kind byte, index []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	b = append(b, kind)
	return append(b, index...)
}

// countImportedGlobals reads an import section and counts its globals,
// which come before the module's own in the global index space.
func countImportedGlobals(b []byte) (int, error) {
	r := reader{b: b}
	globals := 0
	for i, count := uint64(0), r.uleb(); i < count && r.err == nil; i++ {
		r.name()
		r.name()
		switch kind := r.byte(); kind {
		case importFunc:
			r.uleb()
		case importTable:
			r.byte() // reference type
			r.limits()
		case importMemory:
			r.limits()
		case importGlobal:
			r.byte() // value type
			r.byte() // mutability
			globals++
		case importTag:
			r.byte()
			r.uleb()
		default:
			r.fail("import %d has unknown kind %#x", i, kind)
		}
	}
	return globals, r.err
}

// checkExportNames fails if the module already exports a name the
// rewrite adds.
func checkExportNames(b []byte) error {
	r := reader{b: b}
	for i, count := uint64(0), r.uleb(); i < count && r.err == nil; i++ {
		if name := r.name(); name == interruptExport || name == startExport {
			return fmt.Errorf("the module exports %q, a name Aloft reserves", name)
		}
		r.byte()
		r.uleb()
	}
	return r.err
}

// checkLoops rewrites a code section's content with the interrupt check
// at the start of every loop body.
func checkLoops(b []byte, global uint32) ([]byte, error) {
	check := []byte{0x23} // global.get
	check = binary.AppendUvarint(check, uint64(global))
	check = append(check, 0x04, 0x40, 0x00, opEnd) // if (empty) unreachable end

	r := reader{b: b}
	count := r.uleb()
	out := make([]byte, 0, len(b)+len(b)/8)
	out = binary.AppendUvarint(out, count)
	var body []byte
	for i := uint64(0); i < count && r.err == nil; i++ {
		size := r.uleb()
		if r.err != nil || size > uint64(len(r.b)-r.p) {
			return nil, fmt.Errorf("function %d: size runs past the end", i)
		}
		fr := reader{b: r.b[r.p : r.p+int(size)]}
		r.p += int(size)
		for j, groups := uint64(0), fr.uleb(); j < groups && fr.err == nil; j++ {
			fr.uleb() // how many locals
			fr.byte() // of which type
		}
		body = append(body[:0], fr.b[:fr.p]...)
		from := fr.p
		for fr.p < len(fr.b) && fr.err == nil {
			op := fr.instruction()
			if op == opLoop && fr.err == nil {
				body = append(body, fr.b[from:fr.p]...)
				body = append(body, check...)
				from = fr.p
			}
		}
		if fr.err != nil {
			return nil, fmt.Errorf("function %d (of the code section): %w", i, fr.err)
		}
		body = append(body, fr.b[from:]...)
		out = binary.AppendUvarint(out, uint64(len(body)))
		out = append(out, body...)
	}
	if r.err == nil && r.p != len(r.b) {
		r.fail("%d bytes after the last function", len(r.b)-r.p)
	}
	return out, r.err
}

// reader decodes a WebAssembly binary; the first failure sticks in err and
// later reads return zeros.
type reader struct {
	b   []byte
	p   int
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("offset %d: %s", r.p, fmt.Sprintf(format, args...))
	}
	r.p = len(r.b)
}

func (r *reader) byte() byte {
	if r.p >= len(r.b) {
		r.fail("unexpected end")
		return 0
	}
	r.p++
	return r.b[r.p-1]
}

// uleb reads an unsigned LEB128 of at most 32 bits.
func (r *reader) uleb() uint64 {
	v, n := readUleb(r.b[min(r.p, len(r.b)):])
	if n == 0 {
		r.fail("bad unsigned integer")
		return 0
	}
	r.p += n
	return v
}

// skipLeb skips a (signed or unsigned) LEB128 of at most max bytes.
func (r *reader) skipLeb(max int) {
	for i := 0; i < max; i++ {
		if r.byte() < 0x80 {
			return
		}
	}
	r.fail("integer longer than %d bytes", max)
}

func (r *reader) skip(n int) {
	if n > len(r.b)-r.p {
		r.fail("unexpected end")
		return
	}
	r.p += n
}

func (r *reader) name() string {
	n := r.uleb()
	if n > uint64(len(r.b)-r.p) {
		r.fail("name runs past the end")
		return ""
	}
	s := string(r.b[r.p : r.p+int(n)])
	r.p += int(n)
	return s
}

func (r *reader) limits() {
	flags := r.byte()
	r.uleb()
	if flags&1 != 0 {
		r.uleb()
	}
}

// memarg skips a load's or store's alignment and offset (and a memory
// index, which multi-memory marks with bit 6 of the alignment).
func (r *reader) memarg() {
	if r.uleb()&0x40 != 0 {
		r.uleb()
	}
	r.uleb()
}

// instruction reads one instruction and returns its opcode (the prefix,
// for prefixed ones). Immediates follow the WebAssembly 2.0 binary format.
func (r *reader) instruction() byte {
	op := r.byte()
	switch {
	case op == 0x02 || op == 0x03 || op == 0x04: // block, loop, if: block type (s33)
		r.skipLeb(5)
	case op == 0x0c || op == 0x0d: // br, br_if
		r.uleb()
	case op == 0x0e: // br_table
		n := r.uleb()
		for i := uint64(0); i <= n && r.err == nil; i++ {
			r.uleb()
		}
	case op == 0x10: // call
		r.uleb()
	case op == 0x11: // call_indirect: type, table
		r.uleb()
		r.uleb()
	case op == 0x1c: // select with types
		n := r.uleb()
		r.skip(int(n))
	case op >= 0x20 && op <= 0x26: // local.*, global.*, table.get/set
		r.uleb()
	case op >= 0x28 && op <= 0x3e: // loads and stores
		r.memarg()
	case op == 0x3f || op == 0x40: // memory.size, memory.grow
		r.uleb()
	case op == 0x41: // i32.const
		r.skipLeb(5)
	case op == 0x42: // i64.const
		r.skipLeb(10)
	case op == 0x43: // f32.const
		r.skip(4)
	case op == 0x44: // f64.const
		r.skip(8)
	case op == 0xd0: // ref.null: reference type
		r.byte()
	case op == 0xd2: // ref.func
		r.uleb()
	case op == 0xfc:
		r.prefixedFC()
	case op == 0xfd:
		r.prefixedSIMD()
	case op <= 0x01, op == 0x05, op == 0x0b, op == 0x0f, op == 0x1a, op == 0x1b,
		op >= 0x45 && op <= 0xc4, op == 0xd1:
		// no immediates
	default:
		r.p--
		r.fail("instruction %#x is outside WebAssembly 2.0", op)
	}
	return op
}

// prefixedFC skips the immediates of the 0xfc instructions: saturating
// truncations, bulk memory and table instructions.
func (r *reader) prefixedFC() {
	switch sub := r.uleb(); {
	case sub <= 7: // trunc_sat
	case sub == 8: // memory.init: data, memory
		r.uleb()
		r.uleb()
	case sub == 9, sub == 11, sub == 13, sub >= 15 && sub <= 17: // data.drop, memory.fill, elem.drop, table.grow/size/fill
		r.uleb()
	case sub == 10, sub == 12, sub == 14: // memory.copy, table.init, table.copy
		r.uleb()
		r.uleb()
	default:
		r.fail("instruction 0xfc %d is outside WebAssembly 2.0", sub)
	}
}

// prefixedSIMD skips the immediates of the 0xfd (128-bit SIMD)
// instructions.
func (r *reader) prefixedSIMD() {
	switch sub := r.uleb(); {
	case sub <= 11, sub == 92, sub == 93: // loads and stores
		r.memarg()
	case sub == 12, sub == 13: // v128.const, i8x16.shuffle
		r.skip(16)
	case sub >= 21 && sub <= 34: // extract_lane, replace_lane
		r.byte()
	case sub >= 84 && sub <= 91: // load_lane, store_lane
		r.memarg()
		r.byte()
	case sub <= 255:
		// no immediates
	default:
		r.fail("instruction 0xfd %d is outside WebAssembly 2.0", sub)
	}
}

// runStart calls the function of the module's start section, if it had
// one, as instantiation would have, but under the interrupt.
func runStart(ctx context.Context, mod api.Module, x *interrupt, mem *cappedMemory) error {
	f := mod.ExportedFunction(startExport)
	if f == nil {
		return nil
	}
	stop, err := x.during(ctx)
	if err != nil {
		return err
	}
	defer stop()
	if _, err := f.Call(ctx); err != nil {
		return runError(ctx, err, mem)
	}
	return nil
}

// interrupt stops one instance's running code from another goroutine.
type interrupt struct {
	runs *runs
	flag api.MutableGlobal // the module's interrupt global
	wake chan struct{}     // closed by fire: ends a sleep in progress
	once sync.Once
}

// attach finds the interrupt global of the instantiated module. It holds
// the engine's lock: stopAll may fire the interrupt meanwhile.
func (x *interrupt) attach(mod api.Module) error {
	g, ok := mod.ExportedGlobal(interruptExport).(api.MutableGlobal)
	if !ok {
		return fmt.Errorf("module has no interrupt global %q", interruptExport)
	}
	x.runs.mu.Lock()
	x.flag = g
	x.runs.mu.Unlock()
	return nil
}

// fire makes the instance trap at its next loop iteration and wakes it
// from a sleep. The instance serves nothing after that.
func (x *interrupt) fire() {
	x.once.Do(func() {
		if x.flag != nil {
			x.flag.Set(1)
		}
		close(x.wake)
	})
}

// during marks a call into the instance: ctx's end fires the interrupt,
// and the engine does not close under it, until the returned stop is
// called; stop reports false when the interrupt fired (or is firing).
// It fails, with nothing to stop, once the engine has closed.
func (x *interrupt) during(ctx context.Context) (stop func() bool, err error) {
	x.runs.calls.RLock()
	if x.runs.closed {
		x.runs.calls.RUnlock()
		return nil, errEngineClosed
	}
	after := context.AfterFunc(ctx, x.fire)
	return func() bool {
		x.runs.calls.RUnlock()
		return after()
	}, nil
}

// sleep is the instance's WASI sleep (poll_oneoff on a clock): it ends
// early when the instance is interrupted.
func (x *interrupt) sleep(ns int64) {
	t := time.NewTimer(time.Duration(ns))
	defer t.Stop()
	select {
	case <-t.C:
	case <-x.wake:
	}
}

// release forgets a closed instance's interrupt.
func (x *interrupt) release() {
	x.runs.mu.Lock()
	delete(x.runs.live, x)
	x.runs.mu.Unlock()
}

// runs are an engine's live instances and running calls. Closing the
// runtime frees every instance's memory, so the engine first stops what
// runs (stopAll).
type runs struct {
	mu      sync.Mutex
	closing bool
	live    map[*interrupt]struct{}

	calls  sync.RWMutex // read-held by each call into an instance
	closed bool         // set under calls' write lock: no call may start
}

var errEngineClosed = errors.New("the wasm engine is closed")

// newInterrupt registers the interrupt of an instance about to be
// created; it fails once the engine is closing.
func (r *runs) newInterrupt() (*interrupt, error) {
	x := &interrupt{runs: r, wake: make(chan struct{})}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return nil, errEngineClosed
	}
	if r.live == nil {
		r.live = make(map[*interrupt]struct{})
	}
	r.live[x] = struct{}{}
	return x, nil
}

// stopAll refuses new instances, interrupts the live ones and waits until
// no call runs, or ctx ends.
func (r *runs) stopAll(ctx context.Context) error {
	r.mu.Lock()
	r.closing = true
	for x := range r.live {
		x.fire()
	}
	r.mu.Unlock()
	idle := make(chan struct{})
	go func() {
		r.calls.Lock()
		r.closed = true
		r.calls.Unlock()
		close(idle)
	}()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for running wasm calls: %w", ctx.Err())
	}
}
