package store

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"

	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/fn"
)

var shaRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// PutCode stores a code package read from r and returns the lower-case hex
// sha256 of its bytes, which names it, and its size. r is spooled to a
// temporary file under DataDir/tmp while it is hashed (the name must be
// known before the object is written); bytes already stored are not stored
// again. It does not bound the size: the caller limits r. Errors are
// internal (reading r, the spool file, NATS).
func (s *Store) PutCode(ctx context.Context, r io.Reader) (sha256hex string, size int64, err error) {
	f, err := os.CreateTemp(s.tmpDir, "code-*")
	if err != nil {
		return "", 0, fmt.Errorf("put code: spool: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(f, h), r)
	if err != nil {
		return "", 0, fmt.Errorf("put code: read: %w", err)
	}
	sum := h.Sum(nil)
	name := hex.EncodeToString(sum)
	info, err := s.obs.GetInfo(ctx, name)
	if err == nil && info.Size == uint64(size) {
		return name, size, nil
	}
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return "", 0, fmt.Errorf("put code %s: %w", name, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", 0, fmt.Errorf("put code %s: rewind spool: %w", name, err)
	}
	info, err = s.obs.Put(ctx, jetstream.ObjectMeta{Name: name}, f)
	if err != nil {
		return "", 0, fmt.Errorf("put code %s: %w", name, err)
	}
	if want := "SHA-256=" + base64.URLEncoding.EncodeToString(sum); info.Digest != want || info.Size != uint64(size) {
		return "", 0, fmt.Errorf("put code %s: stored digest %s (%d bytes) differs from the upload's %s (%d bytes)", name, info.Digest, info.Size, want, size)
	}
	return name, size, nil
}

// GetCode writes the code package named sha to w, checking while it copies
// that the bytes hash to sha. It returns fn.Invalid if sha is not a
// lower-case hex sha256, fn.NotFound if no such package is stored, and an
// internal error if the bytes do not match sha; w may then have received
// some or all of the bad bytes, so the caller discards what it wrote.
func (s *Store) GetCode(ctx context.Context, sha string, w io.Writer) error {
	if !shaRE.MatchString(sha) {
		return fn.Invalid("code sha256 %q is invalid: use 64 lower-case hex digits", sha)
	}
	res, err := s.obs.Get(ctx, sha)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fn.NotFound("code package %s not found", sha)
	}
	if err != nil {
		return fmt.Errorf("get code %s: %w", sha, err)
	}
	defer res.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(w, h), res); err != nil {
		return fmt.Errorf("get code %s: %w", sha, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return fmt.Errorf("get code %s: stored bytes hash to %s: the package is corrupt", sha, got)
	}
	return nil
}
