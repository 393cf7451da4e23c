package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"aloft/internal/fn"
)

var update = flag.Bool("update", false, "rewrite the fuzz seeds in testdata/fuzz/FuzzExtract")

// outsideAbs is an absolute path archives in these tests try to write; it
// must never exist.
const outsideAbs = "/etc/aloft-archive-test-escape"

// entry describes one archive member for the builders below.
type entry struct {
	name string
	body string
	// mode carries the permission bits and the type (fs.ModeDir,
	// fs.ModeSymlink, fs.ModeNamedPipe, fs.ModeDevice|fs.ModeCharDevice).
	mode fs.FileMode
	link string // symlink target, or hard link target when hard is set
	hard bool
}

func file(name, body string, perm fs.FileMode) entry {
	return entry{name: name, body: body, mode: perm}
}
func dir(name string) entry { return entry{name: name, mode: fs.ModeDir | 0o755} }
func symlink(name, target string) entry {
	return entry{name: name, mode: fs.ModeSymlink | 0o777, link: target}
}
func hardlink(name, target string) entry { return entry{name: name, link: target, hard: true} }

func makeZip(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		if e.hard {
			t.Fatalf("zip has no hard links")
		}
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		h.SetMode(e.mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		body := e.body
		if e.mode&fs.ModeSymlink != 0 {
			body = e.link
		}
		if _, err := io.WriteString(w, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func makeTar(t testing.TB, gz bool, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var gzw *gzip.Writer
	if gz {
		gzw = gzip.NewWriter(&buf)
		w = gzw
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: int64(e.mode.Perm()), Typeflag: tar.TypeReg, Size: int64(len(e.body)), ModTime: time.Unix(1e9, 0)}
		switch {
		case e.hard:
			h.Typeflag, h.Linkname, h.Size = tar.TypeLink, e.link, 0
		case e.mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, e.link, 0
		case e.mode.IsDir():
			h.Typeflag, h.Size = tar.TypeDir, 0
		case e.mode&fs.ModeNamedPipe != 0:
			h.Typeflag, h.Size = tar.TypeFifo, 0
		case e.mode&fs.ModeDevice != 0:
			h.Typeflag, h.Size = tar.TypeChar, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if gzw != nil {
		if err := gzw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// streamOnly hides every method but Read, so Extract cannot use the input
// in place.
type streamOnly struct{ r io.Reader }

func (s streamOnly) Read(p []byte) (int, error) { return s.r.Read(p) }

// extract unpacks data into a fresh dir "code" under a fresh parent, then
// checks that nothing escaped it.
func extract(t testing.TB, data []byte, lim Limits, stream bool) (string, error) {
	t.Helper()
	parent := t.TempDir()
	dir := filepath.Join(parent, "code")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var r io.Reader = bytes.NewReader(data)
	if stream {
		r = streamOnly{r}
	}
	err := Extract(r, dir, lim)
	checkConfined(t, parent, dir)
	return dir, err
}

// checkConfined fails unless dir is all there is under parent, every
// symlink in dir stays inside it, and modes are normalised.
func checkConfined(t testing.TB, parent, dir string) {
	t.Helper()
	names, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0].Name() != "code" {
		t.Fatalf("files outside the target dir: %v", names)
	}
	if _, err := os.Lstat(outsideAbs); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s exists: %v", outsideAbs, err)
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch mode := fi.Mode(); {
		case mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if !inTree(filepath.ToSlash(rel), target) {
				t.Errorf("symlink %s -> %s leaves the tree", rel, target)
			}
		case mode.IsDir():
			if mode.Perm() != 0o755 {
				t.Errorf("dir %s has mode %v, want 0755", rel, mode.Perm())
			}
		case mode.IsRegular():
			if mode.Perm() != 0o644 && mode.Perm() != 0o755 {
				t.Errorf("file %s has mode %v, want 0644 or 0755", rel, mode.Perm())
			}
		default:
			t.Errorf("%s has mode %v: not a file, dir or symlink", rel, mode)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// diskBytes is the total size of the regular files under dir.
func diskBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// attack is an archive that Extract must refuse.
type attack struct {
	name   string
	data   func(t testing.TB) []byte
	lim    Limits
	status int
	// want is a substring of the message: usually the offending entry.
	want string
}

func zeros(n int) string { return string(make([]byte, n)) }

func attacks() []attack {
	both := func(name string, status int, want string, lim Limits, entries ...entry) []attack {
		return []attack{
			{name + "/zip", func(t testing.TB) []byte { return makeZip(t, entries...) }, lim, status, want},
			{name + "/tgz", func(t testing.TB) []byte { return makeTar(t, true, entries...) }, lim, status, want},
		}
	}
	tgz := func(name string, status int, want string, lim Limits, entries ...entry) attack {
		return attack{name + "/tgz", func(t testing.TB) []byte { return makeTar(t, true, entries...) }, lim, status, want}
	}
	var as []attack
	as = append(as, both("dotdot", 400, `"../x"`, Limits{}, file("ok.txt", "ok", 0o644), file("../x", "evil", 0o644))...)
	as = append(as, both("absolute", 400, outsideAbs, Limits{}, file(outsideAbs, "evil", 0o644))...)
	as = append(as, both("etc", 400, `"/etc/x"`, Limits{}, file("/etc/x", "evil", 0o644))...)
	as = append(as, both("inner-dotdot", 400, `"a/../../x"`, Limits{}, dir("a/"), file("a/../../x", "evil", 0o644))...)
	as = append(as, both("symlink-abs", 400, `"/etc"`, Limits{}, symlink("etc", "/etc"))...)
	as = append(as, both("symlink-up-then-through", 400, `"../.."`, Limits{}, symlink("a", "../.."), file("a/x", "evil", 0o644))...)
	as = append(as, both("through-in-tree-symlink", 400, `"a/x"`, Limits{}, dir("b/"), symlink("a", "b"), file("a/x", "evil", 0o644))...)
	as = append(as, both("symlink-chain", 400, `"d/s/t"`, Limits{}, dir("d/"), symlink("d/s", ".."), symlink("d/s/t", ".."))...)
	as = append(as, both("fifo", 400, `"p"`, Limits{}, entry{name: "p", mode: fs.ModeNamedPipe | 0o644})...)
	as = append(as, both("device", 400, `"dev"`, Limits{}, entry{name: "dev", mode: fs.ModeDevice | fs.ModeCharDevice | 0o644})...)
	as = append(as, both("too-many-files", 413, "more than 5 entries", Limits{MaxFiles: 5},
		file("1", "", 0o644), file("2", "", 0o644), file("3", "", 0o644), file("4", "", 0o644), dir("d/"), file("d/6", "", 0o644))...)
	as = append(as, both("unpacked-sum", 413, `"c"`, Limits{MaxUnpacked: 1000},
		file("a", zeros(400), 0o644), file("b", zeros(400), 0o644), file("c", zeros(400), 0o644))...)
	as = append(as, both("bomb", 413, `"bomb"`, Limits{MaxUnpacked: 1 << 20}, file("bomb", zeros(8<<20), 0o644))...)
	as = append(as,
		tgz("hardlink-outside", 400, `"../outside"`, Limits{}, hardlink("h", "../outside")),
		tgz("hardlink-abs", 400, `"/etc/passwd"`, Limits{}, hardlink("h", "/etc/passwd")),
		tgz("hardlink-missing", 400, `"nope"`, Limits{}, hardlink("h", "nope")),
		tgz("hardlink-through-symlink", 400, `symlink "l"`, Limits{}, dir("d/"), file("d/f", "x", 0o644), symlink("l", "d"), hardlink("h", "l/f")),
		attack{"zip-lying-header", lyingZip, Limits{MaxUnpacked: 1 << 20}, 400, `"liar"`},
		attack{"unknown-format", func(testing.TB) []byte { return []byte("just some text, not an archive") }, Limits{}, 400, "code must be a .zip or .tar.gz archive"},
		attack{"empty-input", func(testing.TB) []byte { return nil }, Limits{}, 400, "code must be a .zip or .tar.gz archive"},
		attack{"gzip-not-tar", func(testing.TB) []byte { return gzipped([]byte("plain text inside gzip")) }, Limits{}, 400, "code must be a .zip or .tar.gz archive"},
		attack{"truncated-tgz", func(t testing.TB) []byte {
			b := makeTar(t, true, file("a", strings.Repeat("data ", 2000), 0o644))
			return b[:len(b)/2]
		}, Limits{}, 400, "corrupt or truncated"},
		attack{"compressed-over/zip", func(t testing.TB) []byte { return makeZip(t, file("r", randomText(4000), 0o644)) }, Limits{MaxArchive: 1024}, 413, "larger than 1024 bytes"},
		attack{"compressed-over/tgz", func(t testing.TB) []byte { return makeTar(t, true, file("r", randomText(4000), 0o644)) }, Limits{MaxArchive: 1024}, 413, "larger than 1024 bytes"},
	)
	return as
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

func randomText(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// lyingZip holds an entry whose header claims 100 bytes while its deflate
// stream holds 4 MiB.
func lyingZip(t testing.TB) []byte {
	t.Helper()
	data := make([]byte, 4<<20)
	var comp bytes.Buffer
	fw, _ := flate.NewWriter(&comp, flate.BestSpeed)
	_, _ = fw.Write(data)
	_ = fw.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: "liar", Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(data),
		CompressedSize64: uint64(comp.Len()), UncompressedSize64: 100}
	h.SetMode(0o644)
	w, err := zw.CreateRaw(h)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(comp.Bytes())
	_ = zw.Close()
	return buf.Bytes()
}

func TestExtractRefusesAttacks(t *testing.T) {
	for _, a := range attacks() {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", a.name, stream), func(t *testing.T) {
				dir, err := extract(t, a.data(t), a.lim, stream)
				var ce *fn.Error
				if !errors.As(err, &ce) {
					t.Fatalf("got %v, want a client error", err)
				}
				if ce.Status != a.status || !strings.Contains(ce.Message, a.want) {
					t.Errorf("got %d %q, want %d containing %q", ce.Status, ce.Message, a.status, a.want)
				}
				lim := a.lim.withDefaults()
				if n := diskBytes(t, dir); n > lim.MaxUnpacked {
					t.Errorf("%d bytes written, over the %d limit", n, lim.MaxUnpacked)
				}
			})
		}
	}
}

// TestExtractKeepsModesAndLinks extracts well-formed archives and checks
// what lands on disk, under a umask that would otherwise hide permissions.
func TestExtractKeepsModesAndLinks(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	type want struct {
		mode fs.FileMode // type and permission
		body string      // content, or symlink target
	}
	tests := []struct {
		name string
		data func(t testing.TB) []byte
		want map[string]want
	}{
		{"zip", func(t testing.TB) []byte {
			return makeZip(t, file("bin/run", "#!/bin/sh\n", 0o700), file("data.txt", "d", 0o600),
				dir("lib/"), symlink("current", "bin/run"), file(`win\file.txt`, "w", 0o644),
				file("./dup", "first", 0o644), file("dup", "second", 0o755))
		}, map[string]want{
			"bin":          {fs.ModeDir | 0o755, ""},
			"bin/run":      {0o755, "#!/bin/sh\n"},
			"data.txt":     {0o644, "d"},
			"lib":          {fs.ModeDir | 0o755, ""},
			"current":      {fs.ModeSymlink | 0o777, "bin/run"},
			"win":          {fs.ModeDir | 0o755, ""},
			"win/file.txt": {0o644, "w"},
			"dup":          {0o755, "second"},
		}},
		{"tar", func(t testing.TB) []byte {
			return makeTar(t, false, dir("./"), file("./a", "aaa", 0o744), file("b/c", "c", 0o640),
				hardlink("b/hard", "./a"), symlink("b/up", "../a"))
		}, map[string]want{
			"a":      {0o755, "aaa"},
			"b":      {fs.ModeDir | 0o755, ""},
			"b/c":    {0o644, "c"},
			"b/hard": {0o755, "aaa"},
			"b/up":   {fs.ModeSymlink | 0o777, "../a"},
		}},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", tt.name, stream), func(t *testing.T) {
				dir, err := extract(t, tt.data(t), Limits{}, stream)
				if err != nil {
					t.Fatal(err)
				}
				got := readTree(t, dir)
				for name, w := range tt.want {
					g, ok := got[name]
					if !ok {
						t.Errorf("%s missing", name)
						continue
					}
					if g.mode != w.mode || g.body != w.body {
						t.Errorf("%s: got %v %q, want %v %q", name, g.mode, g.body, w.mode, w.body)
					}
				}
				if len(got) != len(tt.want) {
					t.Errorf("got %d entries, want %d: %v", len(got), len(tt.want), got)
				}
			})
		}
	}
}

type node struct {
	mode fs.FileMode
	body string
}

// readTree maps every path under dir to its type, permissions and content
// (or link target).
func readTree(t testing.TB, dir string) map[string]node {
	t.Helper()
	tree := map[string]node{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		n := node{mode: fi.Mode().Type() | fi.Mode().Perm()}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			n.body, err = os.Readlink(p)
		case fi.Mode().IsRegular():
			var b []byte
			b, err = os.ReadFile(p)
			n.body = string(b)
		}
		tree[filepath.ToSlash(rel)] = n
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// TestCopyCountsActualBytes feeds an entry whose data runs past what its
// header promised: the unpacked limit must hold on the bytes actually read.
func TestCopyCountsActualBytes(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "code")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	x := &extractor{root: root, lim: Limits{MaxUnpacked: 1000}.withDefaults(), links: map[string]bool{}}
	err = x.file("big", "big", strings.NewReader(zeros(100<<10)), 0o644)
	var ce *fn.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("got %v, want 413", err)
	}
	if n := diskBytes(t, dir); n > 1000 {
		t.Errorf("%d bytes written, over the 1000 limit", n)
	}
	checkConfined(t, parent, dir)
}

func TestExtractNeedsEmptyDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := Extract(bytes.NewReader(makeZip(t, file("a", "a", 0o644))), dir, Limits{})
	var ce *fn.Error
	if err == nil || errors.As(err, &ce) {
		t.Fatalf("got %v, want an internal error", err)
	}
}

// writeTree creates the test source tree for Pack.
func writeTree(t testing.TB, dir string, mtime time.Time, filePerm fs.FileMode) {
	t.Helper()
	files := map[string]string{
		"bootstrap":       "#!/bin/sh\nexec ./app\n",
		"app/main.js":     "console.log(1)\n",
		"app/lib/util.js": "module.exports = {}\n",
		".gitignore":      "node_modules\n",
		".git/HEAD":       "ref: refs/heads/main\n",
		"app/.git":        "gitdir: ../.git/modules/app\n",
		"data/é-unicode":  "ü\n",
		strings.Repeat("long-name-", 12) + ".txt": "long\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		perm := filePerm
		if name == "bootstrap" {
			perm = 0o700
		}
		if err := os.WriteFile(p, []byte(body), perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../bootstrap", filepath.Join(dir, "app", "boot")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "app", "main.js"), filepath.Join(dir, "app", "index.js")); err != nil {
		t.Fatal(err)
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			if d.Type()&fs.ModeSymlink == 0 {
				_ = os.Chtimes(p, mtime, mtime)
			}
		}
		return nil
	})
}

func packSum(t testing.TB, dir string) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := Pack(&buf, dir); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(buf.Bytes())), buf.Bytes()
}

func TestPackRoundTrip(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, time.Now(), 0o644)
	_, packed := packSum(t, src)
	dir, err := extract(t, packed, Limits{}, true)
	if err != nil {
		t.Fatal(err)
	}
	got := readTree(t, dir)
	want := readTree(t, src)
	for name, n := range want {
		if name == ".git" || strings.HasPrefix(name, ".git/") || name == "app/.git" {
			if _, ok := got[name]; ok {
				t.Errorf("%s was packed; .git must be left out", name)
			}
			continue
		}
		if n.mode.IsDir() {
			n.mode = fs.ModeDir | 0o755
		}
		if n.mode.IsRegular() && n.mode&0o111 != 0 {
			n.mode = 0o755
		}
		if g := got[name]; g != n {
			t.Errorf("%s: got %v %q, want %v %q", name, g.mode, g.body, n.mode, n.body)
		}
	}
	if len(got) != len(want)-3 {
		t.Errorf("got %d entries, want %d", len(got), len(want)-3)
	}
}

func TestPackDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	writeTree(t, a, time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC), 0o644)
	writeTree(t, b, time.Date(2024, 6, 7, 8, 9, 10, 11, time.UTC), 0o600)
	sumA1, _ := packSum(t, a)
	sumA2, _ := packSum(t, a)
	sumB, _ := packSum(t, b)
	if sumA1 != sumA2 || sumA1 != sumB {
		t.Errorf("sha256 differ: %s %s %s", sumA1, sumA2, sumB)
	}
	if err := os.WriteFile(filepath.Join(b, "app", "main.js"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if sumC, _ := packSum(t, b); sumC == sumA1 {
		t.Errorf("changing a file did not change the sha256")
	}
}

func TestPackRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(dir string) error
		want  string
	}{
		{"symlink out", func(d string) error { return os.Symlink("../../etc/passwd", filepath.Join(d, "x")) }, `"x"`},
		{"absolute symlink", func(d string) error { return os.Symlink("/etc", filepath.Join(d, "etc")) }, `"etc"`},
		{"fifo", func(d string) error { return syscall.Mkfifo(filepath.Join(d, "pipe"), 0o644) }, `"pipe"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tt.setup(dir); err != nil {
				t.Fatal(err)
			}
			err := Pack(io.Discard, dir)
			var ce *fn.Error
			if !errors.As(err, &ce) || ce.Status != http.StatusBadRequest || !strings.Contains(ce.Message, tt.want) {
				t.Errorf("got %v, want a 400 naming %s", err, tt.want)
			}
		})
	}
}

// fuzzLimits keep each fuzz run small.
var fuzzLimits = Limits{MaxArchive: 1 << 20, MaxUnpacked: 1 << 20, MaxFiles: 64}

func FuzzExtract(f *testing.F) {
	if *update {
		writeSeeds(f)
	}
	f.Add(makeZip(f, file("a", "a", 0o755), symlink("l", "a")))
	f.Add(makeTar(f, true, dir("d/"), file("d/f", "f", 0o644), hardlink("h", "d/f")))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, stream := range []bool{false, true} {
			_, err := extract(t, data, fuzzLimits, stream)
			var ce *fn.Error
			if err != nil && !errors.As(err, &ce) {
				t.Fatalf("stream=%v: an archive problem surfaced as an internal error: %v", stream, err)
			}
		}
	})
}

// writeSeeds writes each attack archive (except the large ones) as a fuzz
// corpus entry.
func writeSeeds(t testing.TB) {
	dir := filepath.Join("testdata", "fuzz", "FuzzExtract")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range attacks() {
		data := a.data(t)
		if len(data) > 64<<10 {
			continue
		}
		entry := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		name := strings.ReplaceAll(a.name, "/", "-")
		if err := os.WriteFile(filepath.Join(dir, name), []byte(entry), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
