package archive

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"aloft/internal/fn"
)

// Pack writes a deterministic tar.gz of the tree under dir to w: the same
// tree always gives the same bytes, so the same sha256.
//
// Entries come in the lexical order of a depth-first walk, with names
// relative to dir; times are zero, owners 0/0 without names; directories and
// files with any execute bit have mode 0755, other files 0644, symlinks 0777.
// Directories and files named .git are left out. A symlink is stored as a
// symlink when it is relative and stays inside the tree; any other symlink
// is an fn.Invalid error naming it, as is a device, fifo or socket. A hard
// linked file is stored once per name, as a plain file.
func Pack(w io.Writer, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	defer root.Close()
	gz := gzip.NewWriter(w) // zero header: no name, no time
	tw := tar.NewWriter(gz)
	p := packer{root: root, tw: tw}
	if err := fs.WalkDir(root.FS(), ".", p.entry); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	return nil
}

type packer struct {
	root *os.Root
	tw   *tar.Writer
}

// epoch is the modification time of every entry.
var epoch = time.Unix(0, 0)

func (p *packer) entry(name string, d fs.DirEntry, err error) error {
	if err != nil {
		return err
	}
	if name == "." {
		return nil
	}
	if d.Name() == ".git" {
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	}
	// The tar writer picks the format (USTAR when it can, else PAX) from
	// the header alone, so that choice is deterministic too.
	h := &tar.Header{Name: name, ModTime: epoch}
	switch t := d.Type(); {
	case t.IsDir():
		h.Typeflag, h.Name, h.Mode = tar.TypeDir, name+"/", 0o755
		return p.tw.WriteHeader(h)
	case t&fs.ModeSymlink != 0:
		target, err := p.root.Readlink(name)
		if err != nil {
			return err
		}
		if !inTree(name, target) {
			return fn.Invalid("%q is a symlink to %q, outside the code directory; only relative links within it can be packed", name, target)
		}
		h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, target, 0o777
		return p.tw.WriteHeader(h)
	case t.IsRegular():
		return p.file(h)
	default:
		return fn.Invalid("%q is a device, fifo or socket; remove it from the code directory", name)
	}
}

func (p *packer) file(h *tar.Header) error {
	f, err := p.root.Open(h.Name)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s changed while packing", h.Name)
	}
	h.Typeflag, h.Size, h.Mode = tar.TypeReg, fi.Size(), 0o644
	if fi.Mode()&0o111 != 0 {
		h.Mode = 0o755
	}
	if err := p.tw.WriteHeader(h); err != nil {
		return err
	}
	if _, err := io.CopyN(p.tw, f, h.Size); err != nil {
		return fmt.Errorf("%s changed while packing: %w", h.Name, err)
	}
	return nil
}
