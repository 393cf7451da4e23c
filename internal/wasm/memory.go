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
		m.mapped = mmapReserve(reserve)
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
			munmap(m.mapped)
		}
		m.mapped, m.buf = nil, nil
	})
}
