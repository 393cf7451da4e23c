package wasm

import (
	"encoding/binary"
	"math/bits"
)

// Go's linker writes a module's initial memory as tens of thousands of
// small data segments (it starts a new one at every run of zeros: 58,000
// for a net/http/cgi handler), and instantiating pays for every one: in
// wazero a constant-expression evaluation, bounds checks and a copy each,
// which made most of the 10 ms a fresh Go instance costs. coalesceData
// rewrites such a data section, at compile time, as the few segments that
// leave the same memory image: the bytes every segment writes, in order,
// with gaps shorter than coalesceGap filled with the zeros a fresh memory
// holds anyway.

// coalesceGap is the longest run of never-written bytes merged into a
// segment; a page, so the pages an instance touches stay about the same.
const coalesceGap = 4096

// maxCoalesceSpan bounds the memory image built while coalescing.
const maxCoalesceSpan = 64 << 20

const (
	sectionData      = 11
	sectionDataCount = 12
	opI32Const       = 0x41
	opEnd            = 0x0b
)

// coalesceData returns wasm with its data segments coalesced, or wasm
// itself when the module does not qualify: every segment must be active, in
// memory 0, at an i32.const offset, and not empty, and there must be no
// data count section (bulk-memory instructions name segments by index).
// Anything malformed is also returned unchanged, for the compiler to
// report.
func coalesceData(wasm []byte) []byte {
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" {
		return wasm
	}
	var dataStart, dataEnd, contentStart int // the data section, and its content
	for p := 8; p < len(wasm); {
		id := wasm[p]
		size, n := readUleb(wasm[p+1:])
		if n == 0 || uint64(len(wasm)-p-1-n) < size {
			return wasm
		}
		next := p + 1 + n + int(size)
		switch id {
		case sectionDataCount:
			return wasm
		case sectionData:
			dataStart, contentStart, dataEnd = p, p+1+n, next
		}
		p = next
	}
	if dataStart == 0 {
		return wasm
	}
	segs, ok := parseSegments(wasm[contentStart:dataEnd])
	if !ok || len(segs) < 2 {
		return wasm
	}
	content := encodeSegments(segs)
	if content == nil {
		return wasm
	}
	out := make([]byte, 0, len(wasm)-(dataEnd-dataStart)+len(content)+6)
	out = append(out, wasm[:dataStart]...)
	out = append(out, sectionData)
	out = binary.AppendUvarint(out, uint64(len(content)))
	out = append(out, content...)
	return append(out, wasm[dataEnd:]...)
}

type segment struct {
	offset uint32
	data   []byte
}

// parseSegments reads a data section's content; ok is false when a
// segment does not qualify or the content is malformed.
func parseSegments(b []byte) (segs []segment, ok bool) {
	count, n := readUleb(b)
	if n == 0 || count > uint64(len(b)) {
		return nil, false
	}
	b = b[n:]
	segs = make([]segment, 0, count)
	for range count {
		if len(b) < 2 || b[0] != 0 || b[1] != opI32Const {
			return nil, false
		}
		off, n := readSleb32(b[2:])
		if n == 0 || len(b) < 2+n+1 || b[2+n] != opEnd {
			return nil, false
		}
		b = b[2+n+1:]
		size, n := readUleb(b)
		if n == 0 || size == 0 || uint64(len(b)-n) < size {
			return nil, false
		}
		segs = append(segs, segment{offset: uint32(off), data: b[n : n+int(size)]})
		b = b[n+int(size):]
	}
	return segs, len(b) == 0
}

// encodeSegments applies segs, in order, to a memory image and encodes the
// image's written runs as a data section's content; nil when the image
// would be too large.
func encodeSegments(segs []segment) []byte {
	lo, hi, total := uint64(1)<<32, uint64(0), uint64(0)
	for _, s := range segs {
		lo = min(lo, uint64(s.offset))
		hi = max(hi, uint64(s.offset)+uint64(len(s.data)))
		total += uint64(len(s.data))
	}
	span := hi - lo
	if span > maxCoalesceSpan || span > 8*total+1<<20 {
		return nil
	}
	image := make([]byte, span)
	written := make([]uint64, (span+63)/64)
	for _, s := range segs {
		at := uint64(s.offset) - lo
		copy(image[at:], s.data)
		for i := at; i < at+uint64(len(s.data)); {
			if i%64 == 0 && at+uint64(len(s.data))-i >= 64 {
				written[i/64] = ^uint64(0)
				i += 64
				continue
			}
			written[i/64] |= 1 << (i % 64)
			i++
		}
	}
	isWritten := func(i uint64) bool { return written[i/64]&(1<<(i%64)) != 0 }
	// nextWritten returns the first written index >= i, or span.
	nextWritten := func(i uint64) uint64 {
		for i < span {
			w := written[i/64] >> (i % 64)
			if w != 0 {
				return i + uint64(bits.TrailingZeros64(w))
			}
			i = (i/64 + 1) * 64
		}
		return span
	}
	var runs [][2]uint64
	for i := nextWritten(0); i < span; {
		start := i
		for i < span && isWritten(i) {
			i++
		}
		end := i
		if len(runs) > 0 && start-runs[len(runs)-1][1] <= coalesceGap {
			runs[len(runs)-1][1] = end
		} else {
			runs = append(runs, [2]uint64{start, end})
		}
		i = nextWritten(end)
	}
	out := binary.AppendUvarint(nil, uint64(len(runs)))
	for _, r := range runs {
		out = append(out, 0, opI32Const)
		out = appendSleb(out, int64(int32(uint32(lo+r[0]))))
		out = append(out, opEnd)
		out = binary.AppendUvarint(out, r[1]-r[0])
		out = append(out, image[r[0]:r[1]]...)
	}
	return out
}

// readUleb decodes an unsigned LEB128 of at most 32 bits; n is 0 when b does
// not hold one.
func readUleb(b []byte) (v uint64, n int) {
	for i := 0; i < len(b) && i < 5; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			if v > 1<<32-1 {
				return 0, 0
			}
			return v, i + 1
		}
	}
	return 0, 0
}

// readSleb32 decodes a signed LEB128 of at most 32 bits; n is 0 when b does
// not hold one.
func readSleb32(b []byte) (v int64, n int) {
	var shift uint
	for i := 0; i < len(b) && i < 5; i++ {
		v |= int64(b[i]&0x7f) << shift
		shift += 7
		if b[i] < 0x80 {
			if b[i]&0x40 != 0 {
				v -= 1 << shift
			}
			if v < -1<<31 || v > 1<<31-1 {
				return 0, 0
			}
			return v, i + 1
		}
	}
	return 0, 0
}

func appendSleb(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
