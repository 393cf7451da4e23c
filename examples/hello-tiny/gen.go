//go:build ignore

// gen writes hello.wasm: a WASI command module of about 200 bytes, written
// byte by byte (no compiler), whose _start prints a fixed CGI response with
// a single fd_write. It shows what a module costs when it is not a whole Go
// runtime. Run: go run gen.go
package main

import (
	"encoding/binary"
	"os"
)

const response = "Content-Type: text/plain\n\nHello from a tiny WebAssembly module (not Go: about 200 bytes)\n"

func main() {
	if err := os.WriteFile("hello.wasm", module(response), 0o644); err != nil {
		panic(err)
	}
}

func uleb(v uint32) []byte { return binary.AppendUvarint(nil, uint64(v)) }

func vec(items ...[]byte) []byte {
	out := uleb(uint32(len(items)))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

func name(s string) []byte { return append(uleb(uint32(len(s))), s...) }

func section(id byte, body []byte) []byte {
	return append(append([]byte{id}, uleb(uint32(len(body)))...), body...)
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// i32const encodes a small non-negative constant (signed LEB128).
func i32const(v uint32) []byte {
	out := []byte{0x41}
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if v == 0 && b&0x40 == 0 {
			return append(out, b)
		}
		out = append(out, b|0x80)
	}
}

func module(response string) []byte {
	const i32 = 0x7f
	types := section(1, vec(
		cat([]byte{0x60}, vec([]byte{i32}, []byte{i32}, []byte{i32}, []byte{i32}), vec([]byte{i32})), // fd_write
		cat([]byte{0x60}, vec(), vec()), // _start
	))
	imports := section(2, vec(cat(name("wasi_snapshot_preview1"), name("fd_write"), []byte{0x00}, uleb(0))))
	funcs := section(3, vec(uleb(1)))
	memory := section(5, vec([]byte{0x00, 0x01})) // one page
	exports := section(7, vec(
		cat(name("memory"), []byte{0x02}, uleb(0)),
		cat(name("_start"), []byte{0x00}, uleb(1)),
	))
	// fd_write(stdout, iovs=0, iovs_len=1, nwritten=8); drop the errno.
	body := cat([]byte{0x00}, i32const(1), i32const(0), i32const(1), i32const(8), []byte{0x10, 0x00, 0x1a, 0x0b})
	code := section(10, vec(cat(uleb(uint32(len(body))), body)))
	// Memory: the iovec {16, len} at 0, nwritten at 8, the response at 16.
	data := binary.LittleEndian.AppendUint32(nil, 16)
	data = binary.LittleEndian.AppendUint32(data, uint32(len(response)))
	data = append(data, make([]byte, 8)...)
	data = append(data, response...)
	datas := section(11, vec(cat([]byte{0x00}, i32const(0), []byte{0x0b}, uleb(uint32(len(data))), data)))
	return cat([]byte("\x00asm\x01\x00\x00\x00"), types, imports, funcs, memory, exports, code, datas)
}
