package wasm

import (
	"io/fs"
	"testing"

	xsys "github.com/tetratelabs/wazero/experimental/sys"
)

func TestMemFS(t *testing.T) {
	f := newMemFS(10)
	must := func(errno xsys.Errno) {
		t.Helper()
		if errno != 0 {
			t.Fatal(errno)
		}
	}
	must(f.Mkdir("d", 0o755))
	if errno := f.Mkdir("d", 0o755); errno != xsys.EEXIST {
		t.Errorf("mkdir twice: %v", errno)
	}
	file, errno := f.OpenFile("d/a", xsys.O_RDWR|xsys.O_CREAT, 0o644)
	must(errno)
	if n, errno := file.Write([]byte("0123456789")); n != 10 || errno != 0 {
		t.Fatalf("write: %d %v", n, errno)
	}
	if _, errno := file.Write([]byte("x")); errno != xsys.EIO {
		t.Errorf("write over the quota: %v, want EIO", errno)
	}
	buf := make([]byte, 4)
	if n, _ := file.Pread(buf, 6); n != 4 || string(buf) != "6789" {
		t.Errorf("pread: %q", buf[:n])
	}
	must(file.Close())
	must(f.Rename("d/a", "b"))
	if _, errno := f.Stat("d/a"); errno != xsys.ENOENT {
		t.Errorf("stat of the old name: %v", errno)
	}
	st, errno := f.Stat("b")
	must(errno)
	if st.Size != 10 || st.Mode.Type() != 0 {
		t.Errorf("stat: %+v", st)
	}
	if errno := f.Rmdir("b"); errno != xsys.ENOTDIR {
		t.Errorf("rmdir of a file: %v", errno)
	}
	must(f.Unlink("b"))
	if f.used != 0 {
		t.Errorf("quota in use after unlink: %d", f.used)
	}
	dir, errno := f.OpenFile("", xsys.O_RDONLY, 0)
	must(errno)
	ents, errno := dir.Readdir(-1)
	must(errno)
	if len(ents) != 1 || ents[0].Name != "d" || ents[0].Type != fs.ModeDir {
		t.Errorf("readdir: %+v", ents)
	}
	if _, errno := f.OpenFile("missing/x", xsys.O_RDWR|xsys.O_CREAT, 0o644); errno != xsys.ENOENT {
		t.Errorf("create in a missing dir: %v", errno)
	}
}
