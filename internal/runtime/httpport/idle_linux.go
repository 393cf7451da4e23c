package httpport

import (
	"errors"
	"net"
	"syscall"
)

// idleOpen reports whether an idle connection is still open and quiet:
// a non-blocking peek sees neither the end of the stream nor stray bytes.
func idleOpen(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	open := true
	var b [1]byte
	_ = raw.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read is the only good answer; 0 bytes is the end of
		// the stream, and bytes before a request are not an answer to it.
		open = errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR)
		return true // never wait
	})
	return open
}
