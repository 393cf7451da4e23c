package wasm

import (
	"bytes"
	"context"
	"testing"

	"github.com/tetratelabs/wazero"
)

// memoryModule is a module with an exported memory of pages pages and the
// given data section content (nil: none), plus extra sections appended.
func memoryModule(pages uint32, data []byte, extra ...[]byte) []byte {
	m := cat([]byte("\x00asm\x01\x00\x00\x00"),
		section(5, vec(cat([]byte{0x00}, uleb(pages)))),
		section(7, vec(cat(name("memory"), []byte{0x02}, uleb(0)))))
	for _, e := range extra {
		m = append(m, e...)
	}
	if data != nil {
		m = append(m, section(11, data)...)
	}
	return m
}

// active encodes active segments at i32.const offsets.
func active(segs ...segment) []byte {
	var items [][]byte
	for _, s := range segs {
		items = append(items, cat([]byte{0x00}, i32const(s.offset), []byte{0x0b}, uleb(uint32(len(s.data))), s.data))
	}
	return vec(items...)
}

// image instantiates wasm in a plain wazero runtime and returns its whole
// memory, or the instantiation error.
func image(t testing.TB, wasm []byte) ([]byte, error) {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	mod, err := rt.Instantiate(ctx, wasm)
	if err != nil {
		return nil, err
	}
	mem, _ := mod.Memory().Read(0, mod.Memory().Size())
	return bytes.Clone(mem), nil
}

func dataSegments(t testing.TB, wasm []byte) int {
	t.Helper()
	for p := 8; p < len(wasm); {
		size, n := readUleb(wasm[p+1:])
		if wasm[p] == sectionData {
			segs, ok := parseSegments(wasm[p+1+n : p+1+n+int(size)])
			if !ok {
				t.Fatal("coalesced data section does not parse")
			}
			return len(segs)
		}
		p += 1 + n + int(size)
	}
	return 0
}

func TestCoalesceData(t *testing.T) {
	fill := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	segs := []segment{
		{offset: 100, data: fill(1, 10)},
		{offset: 112, data: fill(2, 3)},       // small gap: merged
		{offset: 20000, data: fill(3, 5)},     // a gap over coalesceGap: a new segment
		{offset: 105, data: fill(4, 10)},      // back, overlapping the first two: later wins
		{offset: 19998, data: fill(5, 4)},     // overlapping the third from below
		{offset: 65536 + 7, data: fill(6, 1)}, // the second page
	}
	orig := memoryModule(2, active(segs...))
	got := coalesceData(orig)
	if bytes.Equal(got, orig) {
		t.Fatal("module not coalesced")
	}
	if n := dataSegments(t, got); n != 3 {
		t.Errorf("coalesced into %d segments, want 3", n)
	}
	want, err := image(t, orig)
	if err != nil {
		t.Fatal(err)
	}
	have, err := image(t, got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, have) {
		t.Error("the coalesced module's memory differs from the original's")
	}

	// A segment past the memory fails instantiation either way.
	bad := memoryModule(1, active(segment{offset: 10, data: fill(1, 2)}, segment{offset: 65535, data: fill(2, 2)}))
	if _, err := image(t, coalesceData(bad)); err == nil {
		t.Error("coalesced out-of-bounds segment instantiated")
	}
}

func TestCoalesceDataDeclines(t *testing.T) {
	two := []segment{{offset: 1, data: []byte{1}}, {offset: 3, data: []byte{2}}}
	passive := cat(vec(cat([]byte{0x01}, uleb(1), []byte{9}), cat([]byte{0x00}, i32const(3), []byte{0x0b}, uleb(1), []byte{2})))
	globalOffset := vec(cat([]byte{0x00, 0x23, 0x00, 0x0b}, uleb(1), []byte{1}), cat([]byte{0x00}, i32const(3), []byte{0x0b}, uleb(1), []byte{2}))
	full := memoryModule(1, active(two...))
	truncated := full[:len(full)-2]
	for name, wasm := range map[string][]byte{
		"data count section": memoryModule(1, active(two...), section(12, uleb(2))),
		"passive segment":    memoryModule(1, passive),
		"global offset":      memoryModule(1, globalOffset),
		"empty segment":      memoryModule(1, active(segment{offset: 1, data: []byte{1}}, segment{offset: 9})),
		"one segment":        memoryModule(1, active(two[0])),
		"no data":            memoryModule(1, nil),
		"truncated":          truncated,
		"huge span":          memoryModule(1, active(segment{offset: 0, data: []byte{1}}, segment{offset: 1 << 30, data: []byte{1}})),
		"not wasm":           []byte("hello"),
	} {
		if got := coalesceData(wasm); !bytes.Equal(got, wasm) {
			t.Errorf("%s: module changed", name)
		}
	}
}

// TestCoalesceGoModule: Go's linker writes tens of thousands of segments;
// what instances start with is one.
func TestCoalesceGoModule(t *testing.T) {
	needGo(t)
	got := coalesceData(cgiWasm)
	if n := dataSegments(t, cgiWasm); n < 1000 {
		t.Logf("the Go module has only %d segments", n)
	}
	if n := dataSegments(t, got); n > 10 {
		t.Errorf("coalesced Go module has %d segments", n)
	}
}

func FuzzCoalesceData(f *testing.F) {
	f.Add(memoryModule(1, active(segment{offset: 1, data: []byte{1}}, segment{offset: 3, data: []byte{2, 3}})))
	f.Add(memoryModule(2, active(segment{offset: 70000, data: []byte{1}}, segment{offset: 3, data: []byte{2}}, segment{offset: 2, data: []byte{5, 6}})))
	f.Add(memoryModule(1, active(segment{offset: 65535, data: []byte{1, 2}}, segment{offset: 0, data: []byte{2}})))
	f.Fuzz(func(t *testing.T, wasm []byte) {
		got := coalesceData(wasm)
		if bytes.Equal(got, wasm) {
			return
		}
		want, werr := image(t, wasm)
		have, herr := image(t, got)
		if (werr == nil) != (herr == nil) {
			t.Fatalf("instantiate: original %v, coalesced %v", werr, herr)
		}
		if !bytes.Equal(want, have) {
			t.Fatal("memory images differ")
		}
	})
}

// TestMappingReuse: a reservation given back is zero when taken again.
func TestMappingReuse(t *testing.T) {
	const size = 4 << 20
	b := takeMapping(size)
	if b == nil {
		t.Skip("no mmap here")
	}
	for i := range b[:3<<20] {
		b[i] = 0xAA
	}
	putMapping(b, 3<<20)
	c := takeMapping(size)
	defer putMapping(c, 0)
	if len(c) != size {
		t.Fatalf("len %d", len(c))
	}
	for i, v := range c {
		if v != 0 {
			t.Fatalf("byte %d of a reused reservation is %#x, want 0", i, v)
		}
	}
}
