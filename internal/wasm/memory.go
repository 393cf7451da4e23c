package wasm

import (
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
)

// pageSize is the WebAssembly page size.
const pageSize = 65536

// mmapThreshold is the initial memory size from which an instance's
// memory is mmap-backed.
const mmapThreshold = 1 << 20

// DefaultMemoryMB is the memory cap when Limits.MemoryMB is 0.
const DefaultMemoryMB = 128

// cappedMemory is the allocator of one instance's linear memory. wazero's
// own cap (RuntimeConfig.WithMemoryLimitPages) is per runtime, and a
// compiled module belongs to one runtime; an allocator is passed per
// instantiation (through the context), so one runtime and one compiled
// module serve every cap. Growth past the cap fails like any failed
// memory.grow, and the instance remembers it, so that the failure it causes
// (a trap, or Go's "out of memory" exit) is reported as Runtime.OutOfMemory.
//
// On Linux a memory that starts at mmapThreshold or more (a Go module's
// does) is one anonymous mapping of the capped size, reserved without
// committing (MAP_NORESERVE): pages cost memory only when touched, growing
// never copies, and Free returns everything at once. Smaller memories are
// Go slices: a munmap costs tens of microseconds (TLB shootdown), more
// than a small module's whole run.

type cappedMemory struct {
	limit   uint64 // bytes
	refused atomic.Bool

	once   sync.Once
	mapped []byte // the reservation, when mmap worked
	used   uint64 // how much of mapped the instance could touch
	buf    []byte // otherwise a Go slice
}

var _ experimental.MemoryAllocator = (*cappedMemory)(nil)

func newCappedMemory(memoryMB int) *cappedMemory {
	if memoryMB <= 0 {
		memoryMB = DefaultMemoryMB
	}
	return &cappedMemory{limit: uint64(memoryMB) << 20}
}

// Allocate implements experimental.MemoryAllocator; it is called once per
// instance (modules have at most one memory).
func (m *cappedMemory) Allocate(capBytes, maxBytes uint64) experimental.LinearMemory {
	reserve := min(maxBytes, m.limit)
	if capBytes >= mmapThreshold && reserve > 0 {
		m.mapped = takeMapping(reserve)
	}
	return m
}

// Reallocate implements experimental.LinearMemory.
func (m *cappedMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		m.refused.Store(true)
		if m.mapped == nil && m.buf == nil {
			// The module's initial memory is over the cap: wazero cannot
			// take a nil here. The caller checks refused and fails.
			m.buf = make([]byte, size)
			return m.buf
		}
		return nil
	}
	if m.mapped != nil {
		m.used = max(m.used, size)
		return m.mapped[:size:size]
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	grown := make([]byte, size, min(max(size, 2*uint64(cap(m.buf))), m.limit))
	copy(grown, m.buf)
	m.buf = grown
	return m.buf
}

// Free implements experimental.LinearMemory. wazero calls it when the
// instance closes; the instance's own Close calls it again, for the case of
// an instance closed by its context after its call had returned. Both run
// after the module's code has stopped.
func (m *cappedMemory) Free() {
	m.once.Do(func() {
		if m.mapped != nil {
			// Clearing megabytes takes a while: not on the request's path.
			go putMapping(m.mapped, m.used)
		}
		m.mapped, m.buf = nil, nil
	})
}

// The reservations of freed instances are kept for reuse. A page an
// instance touches for the first time costs a page fault, about 10 us on
// the virtual machines Aloft was measured on, and a fresh Go instance
// touches about a thousand; clearing the pages a previous instance used
// costs a fraction of that. A reused reservation is zero, like a fresh one:
// putMapping clears everything its instance could reach before keeping it.
var mappings = struct {
	sync.Mutex
	free map[uint64][][]byte // by size
}{free: map[uint64][][]byte{}}

// maxFreeMappings bounds the kept reservations of one size; what they hold
// resident is what their last instances touched.
const maxFreeMappings = 8

// takeMapping returns a zeroed reservation of n bytes, or nil.
func takeMapping(n uint64) []byte {
	mappings.Lock()
	l := mappings.free[n]
	if len(l) > 0 {
		b := l[len(l)-1]
		mappings.free[n] = l[:len(l)-1]
		mappings.Unlock()
		return b
	}
	mappings.Unlock()
	return mmapReserve(n)
}

// putMapping takes back b, of which the first used bytes may have been
// written, for reuse.
func putMapping(b []byte, used uint64) {
	n := uint64(len(b))
	mappings.Lock()
	keep := len(mappings.free[n]) < maxFreeMappings
	mappings.Unlock()
	if !keep {
		munmap(b)
		return
	}
	clear(b[:used])
	mappings.Lock()
	if len(mappings.free[n]) < maxFreeMappings {
		mappings.free[n] = append(mappings.free[n], b)
		b = nil
	}
	mappings.Unlock()
	if b != nil {
		munmap(b)
	}
}
