package store

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

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
		// Stored already: refresh its time, so that CollectCode's grace
		// covers this deploy, whose function does not name it yet.
		if err := s.obs.UpdateMeta(ctx, name, info.ObjectMeta); err != nil {
			return "", 0, fmt.Errorf("put code %s: touch: %w", name, err)
		}
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

// CollectCode deletes the code packages that no function and no published
// version names, among those stored (or stored again by a deploy) more than
// grace ago: a deploy stores its package before the function that names
// it, and grace must cover that window. It returns how many it deleted and
// the packages in use it found (see CodeInUse), for the node's own copies.
// Nodes may run it concurrently.
func (s *Store) CollectCode(ctx context.Context, grace time.Duration) (int, map[string]bool, error) {
	// Objects first: a package stored after this listing is not considered,
	// and one stored before it is either named by the functions read next
	// or old enough to go.
	infos, err := s.obs.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return 0, nil, fmt.Errorf("collect code: list packages: %w", err)
	}
	used, err := s.CodeInUse(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("collect code: %w", err)
	}
	cutoff := time.Now().Add(-grace)
	deleted := 0
	for _, info := range infos {
		if info.Deleted || used[info.Name] || !info.ModTime.Before(cutoff) {
			continue
		}
		if err := s.obs.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return deleted, used, fmt.Errorf("collect code: delete %s: %w", info.Name, err)
		}
		deleted++
	}
	return deleted, used, nil
}

// CodeInUse returns the code packages a function or a published version
// names, by sha256.
func (s *Store) CodeInUse(ctx context.Context) (map[string]bool, error) {
	used := map[string]bool{}
	for _, filter := range []string{"*." + kindFunction + ".*", "*." + kindVersion + ".*.*"} {
		entries, err := s.values(ctx, filter)
		if err != nil {
			return nil, fmt.Errorf("code in use: %w", err)
		}
		for _, e := range entries {
			var ref struct {
				SHA string `json:"code_sha256"`
			}
			if err := json.Unmarshal(e.Value(), &ref); err != nil {
				return nil, fmt.Errorf("code in use: decode %s: %w", e.Key(), err)
			}
			used[ref.SHA] = true
		}
	}
	return used, nil
}
