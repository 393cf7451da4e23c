//go:build !linux

package wasm

func mmapReserve(uint64) []byte { return nil }

func munmap([]byte) {}
