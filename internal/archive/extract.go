// Package archive unpacks untrusted code packages (zip, tar.gz, tar) safely
// and packs a directory into a deterministic tar.gz.
//
// Extract writes only beneath its target directory: every file operation
// goes through an os.Root, and entries are refused before that when their
// names are absolute or hold "..", when they pass through a symlink, or when
// a link points outside the tree. Sizes are limited by the bytes actually
// read and written, not by what headers claim.
package archive

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"aloft/internal/fn"
)

// Limits bound what Extract accepts. A zero field takes its default.
type Limits struct {
	// MaxArchive is the most compressed bytes read (default 64 MiB).
	MaxArchive int64
	// MaxUnpacked is the most bytes written, over all files (default 256 MiB).
	MaxUnpacked int64
	// MaxFiles is the most entries of any kind, directories included
	// (default 10000).
	MaxFiles int
}

// DefaultLimits returns the limits a zero Limits stands for.
func DefaultLimits() Limits {
	return Limits{MaxArchive: 64 << 20, MaxUnpacked: 256 << 20, MaxFiles: 10000}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxArchive <= 0 {
		l.MaxArchive = d.MaxArchive
	}
	if l.MaxUnpacked <= 0 {
		l.MaxUnpacked = d.MaxUnpacked
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	return l
}

// errUnknownFormat is the client error for anything that is not an archive.
var errUnknownFormat = fn.Invalid("code must be a .zip or .tar.gz archive")

// Extract unpacks the zip, tar.gz or tar archive read from r into dir, which
// must exist and be empty. The format is found from the first bytes.
//
// A *bytes.Reader or *strings.Reader that has not been read from is used in
// place; from any other reader a zip is first copied to a temporary file in
// os.TempDir (removed before Extract returns), as zip needs random access.
// tar and tar.gz are streamed.
//
// Files are written world-readable: 0755 when the archive marks any execute
// bit (for zip: in the Unix mode of the external attributes), else 0644;
// directories, dir itself included, 0755. Relative symlinks that stay inside the tree, and hard
// links to files earlier in the archive, are kept.
//
// Problems with the archive are client errors (*fn.Error) naming the entry:
// fn.Invalid for an unknown format, a corrupt or truncated archive, an
// absolute path, a ".." path element, a symlink or hard link that points
// outside the tree or is absolute, an entry whose path goes through a
// symlink, a device, fifo or other special entry; fn.TooLarge when the
// archive is over lim.MaxArchive bytes, holds over lim.MaxFiles entries, or
// unpacks to over lim.MaxUnpacked bytes. Any other error is internal (the
// directory cannot be written). Extract writes nothing outside dir; on error
// dir may hold part of the archive and the caller removes it.
func Extract(r io.Reader, dir string, lim Limits) error {
	lim = lim.withDefaults()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("extract archive: %w", err)
	}
	defer root.Close()
	if err := checkEmpty(root); err != nil {
		return fmt.Errorf("extract archive into %s: %w", dir, err)
	}
	if err := root.Chmod(".", 0o755); err != nil {
		return fmt.Errorf("extract archive into %s: %w", dir, err)
	}
	x := &extractor{root: root, lim: lim, links: map[string]bool{}}
	if err := x.extract(r); err != nil {
		var ce *fn.Error
		if errors.As(err, &ce) {
			return ce
		}
		return fmt.Errorf("extract archive into %s: %w", dir, err)
	}
	return nil
}

func checkEmpty(root *os.Root) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if len(names) > 0 {
		return errors.New("directory is not empty")
	}
	return nil
}

// extractor holds the state of one Extract.
type extractor struct {
	root    *os.Root
	lim     Limits
	entries int
	written int64
	// links are the symlinks created so far; no later entry may pass
	// through one, so the lexical checks below stay sound.
	links map[string]bool
	buf   []byte
}

// sizedReaderAt is a reader that can be used in place for zip.
type sizedReaderAt interface {
	io.ReaderAt
	Size() int64
	Len() int
}

func (x *extractor) extract(r io.Reader) error {
	if ra, ok := r.(sizedReaderAt); ok && int64(ra.Len()) == ra.Size() {
		if ra.Size() > x.lim.MaxArchive {
			return x.archiveTooLarge()
		}
		var magic [4]byte
		n, _ := ra.ReadAt(magic[:], 0)
		if isZip(magic[:n]) {
			return x.extractZip(ra, ra.Size())
		}
		r = io.NewSectionReader(ra, 0, ra.Size())
	}
	lr := &limitReader{r: r, left: x.lim.MaxArchive}
	br := bufio.NewReaderSize(lr, 64<<10)
	magic, _ := br.Peek(512)
	var err error
	switch {
	case isZip(magic):
		err = x.spoolZip(br)
	case isGzip(magic):
		err = x.extractGzip(br)
	case isTar(magic):
		err = x.extractTar(tar.NewReader(br))
	default:
		err = errUnknownFormat
	}
	if lr.over {
		return x.archiveTooLarge()
	}
	return err
}

func (x *extractor) archiveTooLarge() error {
	return fn.TooLarge("code archive is larger than %d bytes; leave out what the function does not need at run time", x.lim.MaxArchive)
}

func isZip(b []byte) bool {
	return bytes.HasPrefix(b, []byte("PK\x03\x04")) || bytes.HasPrefix(b, []byte("PK\x05\x06"))
}

func isGzip(b []byte) bool { return bytes.HasPrefix(b, []byte{0x1f, 0x8b}) }

// isTar looks for the ustar magic (POSIX "ustar\x00" or GNU "ustar ").
func isTar(b []byte) bool { return len(b) >= 262 && string(b[257:262]) == "ustar" }

// limitReader reads at most left bytes and then fails, recording that the
// limit was hit (io.LimitReader would pass for a clean end of file).
type limitReader struct {
	r    io.Reader
	left int64
	over bool
}

var errLimit = errors.New("archive over the size limit")

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// One byte more tells a file of exactly the limit from a larger one.
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			l.over = true
			return 0, errLimit
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// spoolZip copies a zip stream to a temporary file, for random access.
func (x *extractor) spoolZip(r io.Reader) error {
	f, err := os.CreateTemp("", "aloft-code-*.zip")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, err := io.Copy(f, r)
	if err != nil {
		if errors.Is(err, errLimit) {
			return x.archiveTooLarge()
		}
		return err
	}
	return x.extractZip(f, n)
}

func (x *extractor) extractZip(ra io.ReaderAt, size int64) error {
	zr, err := zip.NewReader(ra, size)
	if err != nil {
		return fn.Invalid("code archive is not a valid zip file (%v); rebuild it with zip or a build tool", err)
	}
	if len(zr.File) > x.lim.MaxFiles {
		return x.tooManyFiles()
	}
	for _, f := range zr.File {
		if err := x.zipEntry(f); err != nil {
			return err
		}
	}
	return nil
}

func (x *extractor) zipEntry(f *zip.File) error {
	raw := strings.ReplaceAll(f.Name, `\`, "/") // zips written on Windows
	mode := f.Mode()
	switch {
	case mode.IsDir() || strings.HasSuffix(raw, "/"):
		return x.dir(raw)
	case mode&fs.ModeSymlink != 0:
		target, err := x.readLinkTarget(f)
		if err != nil {
			return err
		}
		return x.symlink(raw, target)
	case mode.IsRegular():
		name, err := x.begin(raw)
		if err != nil {
			return err
		}
		if f.UncompressedSize64 > uint64(x.lim.MaxUnpacked-x.written) {
			return x.unpackedTooLarge(raw)
		}
		rc, err := f.Open()
		if err != nil {
			return fn.Invalid("archive entry %q cannot be read (%v); rebuild the archive with standard deflate compression", raw, err)
		}
		defer rc.Close()
		return x.file(raw, name, rc, mode)
	default:
		return special(raw)
	}
}

// readLinkTarget reads a zip symlink's target, which is the entry's content.
func (x *extractor) readLinkTarget(f *zip.File) (string, error) {
	rc, err := f.Open()
	if err != nil {
		return "", fn.Invalid("archive entry %q cannot be read (%v)", f.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 4097))
	if err != nil {
		return "", fn.Invalid("archive entry %q is corrupt (%v); rebuild the archive", f.Name, err)
	}
	if len(b) > 4096 {
		return "", fn.Invalid("archive entry %q: symlink target is too long", f.Name)
	}
	return string(b), nil
}

func (x *extractor) extractGzip(r io.Reader) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return corrupt(err)
	}
	defer gz.Close()
	br := bufio.NewReaderSize(gz, 32<<10)
	magic, perr := br.Peek(512)
	if !isTar(magic) {
		if perr != nil && !errors.Is(perr, io.EOF) {
			return corrupt(perr)
		}
		return errUnknownFormat
	}
	return x.extractTar(tar.NewReader(br))
}

func (x *extractor) extractTar(tr *tar.Reader) error {
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return corrupt(err)
		}
		if err := x.tarEntry(tr, h); err != nil {
			return err
		}
	}
}

func (x *extractor) tarEntry(tr *tar.Reader, h *tar.Header) error {
	switch h.Typeflag {
	case tar.TypeDir:
		return x.dir(h.Name)
	case tar.TypeReg, tar.TypeRegA:
		name, err := x.begin(h.Name)
		if err != nil {
			return err
		}
		if h.Size > x.lim.MaxUnpacked-x.written {
			return x.unpackedTooLarge(h.Name)
		}
		return x.file(h.Name, name, tr, fs.FileMode(h.Mode))
	case tar.TypeSymlink:
		return x.symlink(h.Name, h.Linkname)
	case tar.TypeLink:
		return x.hardlink(h.Name, h.Linkname)
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return special(h.Name)
	}
}

func corrupt(err error) error {
	if errors.Is(err, errLimit) {
		return err // reported as too large by extract
	}
	return fn.Invalid("code archive is corrupt or truncated (%v); rebuild it", err)
}

func special(raw string) error {
	return fn.Invalid("archive entry %q is a device, fifo or other special file; only files, directories and links are allowed: remove it", raw)
}

func (x *extractor) tooManyFiles() error {
	return fn.TooLarge("code archive has more than %d entries; leave out what the function does not need at run time", x.lim.MaxFiles)
}

func (x *extractor) unpackedTooLarge(raw string) error {
	return fn.TooLarge("archive entry %q: code unpacks to more than %d bytes; leave out what the function does not need at run time", raw, x.lim.MaxUnpacked)
}

// begin counts an entry and returns its cleaned name after checking that it
// is relative, holds no "..", and passes through no symlink.
func (x *extractor) begin(raw string) (string, error) {
	x.entries++
	if x.entries > x.lim.MaxFiles {
		return "", x.tooManyFiles()
	}
	name, err := cleanName(raw)
	if err != nil {
		return "", err
	}
	if name == "" {
		return "", nil
	}
	if err := x.checkParents(raw, name); err != nil {
		return "", err
	}
	return name, nil
}

// cleanName turns an archive path into a relative slash path ("" for the
// root itself), refusing absolute paths and ".." elements.
func cleanName(raw string) (string, error) {
	if strings.IndexByte(raw, 0) >= 0 {
		return "", fn.Invalid("archive entry %q has a NUL byte in its name; rename it", raw)
	}
	if strings.HasPrefix(raw, "/") {
		return "", fn.Invalid("archive entry %q has an absolute path; archive paths relative to the code root", raw)
	}
	var elems []string
	for e := range strings.SplitSeq(raw, "/") {
		switch e {
		case "", ".":
		case "..":
			return "", fn.Invalid("archive entry %q has a \"..\" path element; archive paths relative to the code root, without \"..\"", raw)
		default:
			elems = append(elems, e)
		}
	}
	return strings.Join(elems, "/"), nil
}

// checkParents refuses a name that passes through a symlink made earlier.
func (x *extractor) checkParents(raw, name string) error {
	for i := 0; i < len(name); i++ {
		if name[i] == '/' && x.links[name[:i]] {
			return fn.Invalid("archive entry %q goes through the symlink %q; archive the real directory instead", raw, name[:i])
		}
	}
	return nil
}

// inTree reports whether a relative symlink target, resolved from the
// directory holding the link, stays inside the tree.
func inTree(linkName, target string) bool {
	if target == "" || strings.HasPrefix(target, "/") || strings.IndexByte(target, 0) >= 0 {
		return false
	}
	p := path.Join(path.Dir(linkName), target)
	return p != ".." && !strings.HasPrefix(p, "../")
}

func (x *extractor) dir(raw string) error {
	name, err := x.begin(raw)
	if err != nil || name == "" {
		return err
	}
	return x.mkdirAll(raw, name)
}

// mkdirAll makes name and its parents (mode 0755, whatever the umask).
func (x *extractor) mkdirAll(raw, name string) error {
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '/' {
			continue
		}
		p := name[:i]
		fi, err := x.root.Lstat(p)
		switch {
		case err == nil && fi.IsDir():
			continue
		case err == nil:
			return fn.Invalid("archive entry %q needs %q to be a directory, but an earlier entry made it a file", raw, p)
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
		if err := x.root.Mkdir(p, 0o755); err != nil {
			return err
		}
		if err := x.root.Chmod(p, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// prepare makes the parents of name and removes an earlier entry of the
// same name (the later entry wins, as with tar).
func (x *extractor) prepare(raw, name string) error {
	if dir := path.Dir(name); dir != "." {
		if err := x.mkdirAll(raw, dir); err != nil {
			return err
		}
	}
	fi, err := x.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.IsDir():
		return fn.Invalid("archive entry %q replaces a directory of the same name; remove one of them", raw)
	}
	delete(x.links, name)
	return x.root.Remove(name)
}

func (x *extractor) file(raw, name string, src io.Reader, mode fs.FileMode) error {
	if name == "" {
		return fn.Invalid("archive entry %q is a file without a name", raw)
	}
	if err := x.prepare(raw, name); err != nil {
		return err
	}
	perm := fs.FileMode(0o644)
	if mode&0o111 != 0 {
		perm = 0o755
	}
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	err = x.copy(raw, f, src)
	if cerr := f.Chmod(perm); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// copy writes src to f, stopping as soon as the unpacked total would pass
// the limit. Read errors are the archive's fault, write errors ours.
func (x *extractor) copy(raw string, f *os.File, src io.Reader) error {
	if x.buf == nil {
		x.buf = make([]byte, 32<<10)
	}
	for {
		n, rerr := src.Read(x.buf)
		if n > 0 {
			if int64(n) > x.lim.MaxUnpacked-x.written {
				return x.unpackedTooLarge(raw)
			}
			if _, err := f.Write(x.buf[:n]); err != nil {
				return err
			}
			x.written += int64(n)
		}
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			if errors.Is(rerr, errLimit) {
				return rerr
			}
			return fn.Invalid("archive entry %q is corrupt or truncated (%v); rebuild the archive", raw, rerr)
		}
	}
}

func (x *extractor) symlink(raw, target string) error {
	name, err := x.begin(raw)
	if err != nil {
		return err
	}
	if name == "" {
		return fn.Invalid("archive entry %q is a symlink without a name", raw)
	}
	if strings.HasPrefix(target, "/") {
		return fn.Invalid("archive entry %q is a symlink to the absolute path %q; use a relative link within the code", raw, target)
	}
	if !inTree(name, target) {
		return fn.Invalid("archive entry %q is a symlink to %q, outside the code; only links within the code are allowed", raw, target)
	}
	if err := x.prepare(raw, name); err != nil {
		return err
	}
	if err := x.root.Symlink(target, name); err != nil {
		return err
	}
	x.links[name] = true
	return nil
}

func (x *extractor) hardlink(raw, target string) error {
	name, err := x.begin(raw)
	if err != nil {
		return err
	}
	old, err := cleanName(target)
	if err != nil || old == "" || name == "" {
		return fn.Invalid("archive entry %q is a hard link to %q, outside the code; only links to files earlier in the archive are allowed", raw, target)
	}
	if err := x.checkParents(raw, old); err != nil {
		return err
	}
	fi, err := x.root.Lstat(old)
	if err != nil || !fi.Mode().IsRegular() {
		return fn.Invalid("archive entry %q is a hard link to %q, which is not a file earlier in the archive; link only to files archived before the link", raw, target)
	}
	if old == name {
		return nil
	}
	if err := x.prepare(raw, name); err != nil {
		return err
	}
	return x.root.Link(old, name)
}
