package wasm

import "syscall"

// mmapReserve maps n bytes of anonymous memory without committing it, or
// returns nil (the caller falls back to Go slices).
func mmapReserve(n uint64) []byte {
	b, err := syscall.Mmap(-1, 0, int(n), syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return nil
	}
	return b
}

func munmap(b []byte) { _ = syscall.Munmap(b) }
