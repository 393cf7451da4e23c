package wasm

import (
	"io"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	xsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"
)

// memFS is the private, in-memory, writable /tmp of one instance: wazero
// offers only host directories and read-only fs.FS mounts, and a host
// directory per request would cost a mkdir and a removal each and could
// fill a disk. It holds files and directories (no links), at most limit
// bytes of file data; a write past it fails with EIO (wazero's errno set
// has no ENOSPC). It lives and dies with the instance.
type memFS struct {
	xsys.UnimplementedFS
	mu    sync.Mutex
	root  *memNode
	used  int64
	limit int64
	inos  uint64
}

type memNode struct {
	ino      uint64
	dir      bool
	children map[string]*memNode // dir only
	data     []byte
	mode     fs.FileMode
	mtim     int64
}

// tmpLimit is the size cap of /tmp: the memory cap again, since its data
// is host memory too.
func tmpLimit(memoryMB int) int64 {
	if memoryMB <= 0 {
		memoryMB = DefaultMemoryMB
	}
	return int64(memoryMB) << 20
}

func newMemFS(limit int64) *memFS {
	f := &memFS{limit: limit}
	f.root = f.newNode(true, fs.ModeDir|0o777)
	return f
}

func (f *memFS) newNode(dir bool, mode fs.FileMode) *memNode {
	f.inos++
	n := &memNode{ino: f.inos, dir: dir, mode: mode, mtim: time.Now().UnixNano()}
	if dir {
		n.children = make(map[string]*memNode)
	}
	return n
}

// lookup resolves a cleaned relative path; parent is its directory.
func (f *memFS) lookup(p string) (parent, n *memNode, name string, errno xsys.Errno) {
	p = strings.Trim(path.Clean("/"+p), "/")
	if p == "" {
		return nil, f.root, "", 0
	}
	dir := f.root
	elems := strings.Split(p, "/")
	for i, e := range elems {
		if !dir.dir {
			return nil, nil, "", xsys.ENOTDIR
		}
		c := dir.children[e]
		if i == len(elems)-1 {
			return dir, c, e, 0
		}
		if c == nil {
			return nil, nil, "", xsys.ENOENT
		}
		dir = c
	}
	return nil, nil, "", xsys.ENOENT // unreachable: elems is not empty
}

func (f *memFS) OpenFile(p string, flag xsys.Oflag, perm fs.FileMode) (xsys.File, xsys.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	parent, n, name, errno := f.lookup(p)
	if errno != 0 {
		return nil, errno
	}
	switch {
	case n == nil && flag&xsys.O_CREAT == 0:
		return nil, xsys.ENOENT
	case n == nil && flag&xsys.O_DIRECTORY != 0:
		return nil, xsys.ENOENT
	case n == nil:
		n = f.newNode(false, perm&fs.ModePerm)
		parent.children[name] = n
	case flag&xsys.O_CREAT != 0 && flag&xsys.O_EXCL != 0:
		return nil, xsys.EEXIST
	case flag&xsys.O_DIRECTORY != 0 && !n.dir:
		return nil, xsys.ENOTDIR
	case n.dir && flag&(xsys.O_WRONLY|xsys.O_RDWR) != 0:
		return nil, xsys.EISDIR
	}
	if flag&xsys.O_TRUNC != 0 && !n.dir {
		f.used -= int64(len(n.data))
		n.data = nil
	}
	return &memFile{fs: f, n: n, flag: flag}, 0
}

func (f *memFS) stat(p string) (sys.Stat_t, xsys.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, n, _, errno := f.lookup(p)
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	if n == nil {
		return sys.Stat_t{}, xsys.ENOENT
	}
	return n.stat(), 0
}

func (f *memFS) Stat(p string) (sys.Stat_t, xsys.Errno)  { return f.stat(p) }
func (f *memFS) Lstat(p string) (sys.Stat_t, xsys.Errno) { return f.stat(p) }

func (f *memFS) Mkdir(p string, perm fs.FileMode) xsys.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	parent, n, name, errno := f.lookup(p)
	switch {
	case errno != 0:
		return errno
	case n != nil:
		return xsys.EEXIST
	}
	parent.children[name] = f.newNode(true, fs.ModeDir|perm&fs.ModePerm)
	return 0
}

func (f *memFS) remove(p string, dir bool) xsys.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	parent, n, name, errno := f.lookup(p)
	switch {
	case errno != 0:
		return errno
	case n == nil:
		return xsys.ENOENT
	case parent == nil:
		return xsys.EPERM // the root
	case dir && !n.dir:
		return xsys.ENOTDIR
	case !dir && n.dir:
		return xsys.EISDIR
	case dir && len(n.children) > 0:
		return xsys.ENOTEMPTY
	}
	delete(parent.children, name)
	f.used -= int64(len(n.data)) // open files keep their data; the quota frees now
	return 0
}

func (f *memFS) Rmdir(p string) xsys.Errno  { return f.remove(p, true) }
func (f *memFS) Unlink(p string) xsys.Errno { return f.remove(p, false) }

func (f *memFS) Rename(from, to string) xsys.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	fp, fn, fname, errno := f.lookup(from)
	if errno != 0 {
		return errno
	}
	if fn == nil || fp == nil {
		return xsys.ENOENT
	}
	tp, tn, tname, errno := f.lookup(to)
	switch {
	case errno != 0:
		return errno
	case tp == nil:
		return xsys.EPERM
	case tn == fn:
		return 0
	case tn != nil && tn.dir != fn.dir:
		if tn.dir {
			return xsys.EISDIR
		}
		return xsys.ENOTDIR
	case tn != nil && tn.dir && len(tn.children) > 0:
		return xsys.ENOTEMPTY
	}
	if tn != nil {
		f.used -= int64(len(tn.data))
	}
	delete(fp.children, fname)
	tp.children[tname] = fn
	return 0
}

func (f *memFS) Chmod(string, fs.FileMode) xsys.Errno    { return 0 }
func (f *memFS) Utimens(string, int64, int64) xsys.Errno { return 0 }

func (n *memNode) stat() sys.Stat_t {
	st := sys.Stat_t{Ino: n.ino, Mode: n.mode, Nlink: 1, Size: int64(len(n.data)), Atim: n.mtim, Mtim: n.mtim, Ctim: n.mtim}
	if n.dir {
		st.Nlink = 2
	}
	return st
}

// memFile is an open file or directory of a memFS.
type memFile struct {
	xsys.UnimplementedFile
	fs   *memFS
	n    *memNode
	flag xsys.Oflag
	off  int64
	ents []xsys.Dirent // directory listing, read on the first Readdir
	read bool
}

func (m *memFile) Ino() (sys.Inode, xsys.Errno) { return m.n.ino, 0 }
func (m *memFile) IsDir() (bool, xsys.Errno)    { return m.n.dir, 0 }
func (m *memFile) IsAppend() bool               { return m.flag&xsys.O_APPEND != 0 }

func (m *memFile) SetAppend(on bool) xsys.Errno {
	if on {
		m.flag |= xsys.O_APPEND
	} else {
		m.flag &^= xsys.O_APPEND
	}
	return 0
}

func (m *memFile) Stat() (sys.Stat_t, xsys.Errno) {
	m.fs.mu.Lock()
	defer m.fs.mu.Unlock()
	return m.n.stat(), 0
}

func (m *memFile) Read(buf []byte) (int, xsys.Errno) {
	n, errno := m.Pread(buf, m.off)
	m.off += int64(n)
	return n, errno
}

func (m *memFile) Pread(buf []byte, off int64) (int, xsys.Errno) {
	if m.n.dir {
		return 0, xsys.EISDIR
	}
	if m.flag&xsys.O_WRONLY != 0 {
		return 0, xsys.EBADF
	}
	m.fs.mu.Lock()
	defer m.fs.mu.Unlock()
	if off >= int64(len(m.n.data)) {
		return 0, 0
	}
	return copy(buf, m.n.data[off:]), 0
}

// seekOffset is int64 under another name: Seek implements sys.File, not
// io.Seeker, and go vet's stdmethods check matches on the spelling "int64".
type seekOffset = int64

func (m *memFile) Seek(offset seekOffset, whence int) (int64, xsys.Errno) {
	if m.n.dir {
		if offset != 0 || whence != io.SeekStart {
			return 0, xsys.EINVAL
		}
		m.ents, m.read = nil, false
		return 0, 0
	}
	m.fs.mu.Lock()
	size := int64(len(m.n.data))
	m.fs.mu.Unlock()
	switch whence {
	case io.SeekCurrent:
		offset += m.off
	case io.SeekEnd:
		offset += size
	}
	if offset < 0 {
		return 0, xsys.EINVAL
	}
	m.off = offset
	return offset, 0
}

func (m *memFile) Readdir(n int) ([]xsys.Dirent, xsys.Errno) {
	if !m.n.dir {
		return nil, xsys.EBADF
	}
	if !m.read {
		m.fs.mu.Lock()
		for _, name := range slices.Sorted(maps.Keys(m.n.children)) {
			c := m.n.children[name]
			m.ents = append(m.ents, xsys.Dirent{Ino: c.ino, Name: name, Type: c.mode.Type()})
		}
		m.fs.mu.Unlock()
		m.read = true
	}
	if n <= 0 || n > len(m.ents) {
		n = len(m.ents)
	}
	out := m.ents[:n]
	m.ents = m.ents[n:]
	return out, 0
}

func (m *memFile) Write(buf []byte) (int, xsys.Errno) {
	if m.IsAppend() {
		m.fs.mu.Lock()
		m.off = int64(len(m.n.data))
		m.fs.mu.Unlock()
	}
	n, errno := m.Pwrite(buf, m.off)
	m.off += int64(n)
	return n, errno
}

func (m *memFile) Pwrite(buf []byte, off int64) (int, xsys.Errno) {
	if m.n.dir {
		return 0, xsys.EISDIR
	}
	if m.flag&(xsys.O_WRONLY|xsys.O_RDWR) == 0 {
		return 0, xsys.EBADF
	}
	m.fs.mu.Lock()
	defer m.fs.mu.Unlock()
	end := off + int64(len(buf))
	if errno := m.fs.resize(m.n, max(end, int64(len(m.n.data)))); errno != 0 {
		return 0, errno
	}
	return copy(m.n.data[off:], buf), 0
}

func (m *memFile) Truncate(size int64) xsys.Errno {
	if m.n.dir {
		return xsys.EISDIR
	}
	if size < 0 {
		return xsys.EINVAL
	}
	m.fs.mu.Lock()
	defer m.fs.mu.Unlock()
	return m.fs.resize(m.n, size)
}

// resize sets n's length within the quota; f.mu is held.
func (f *memFS) resize(n *memNode, size int64) xsys.Errno {
	grow := size - int64(len(n.data))
	if f.used+grow > f.limit {
		return xsys.EIO
	}
	f.used += grow
	if grow > 0 {
		n.data = append(n.data, make([]byte, grow)...)
	} else {
		clear(n.data[size:])
		n.data = n.data[:size]
	}
	n.mtim = time.Now().UnixNano()
	return 0
}

func (m *memFile) Utimens(int64, int64) xsys.Errno { return 0 }
