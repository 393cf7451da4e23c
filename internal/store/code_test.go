package store

import (
	"strings"
	"testing"
	"time"

	"aloft/internal/fn"
)

// TestCollectCode: packages named by a function or a version stay; others
// go once older than the grace, and storing one again restarts its grace.
func TestCollectCode(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := t.Context()
	put := func(body string) string {
		t.Helper()
		sha, _, err := s.PutCode(ctx, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return sha
	}
	fnSHA, verSHA, loose := put("function code"), put("version code"), put("no one's code")
	f := &fn.Function{Tenant: "default", Config: fn.Config{Name: "f", Runtime: fn.RuntimeHTTP}, CodeSHA256: fnSHA}
	if _, err := s.CreateFunction(ctx, f); err != nil {
		t.Fatal(err)
	}
	v := &fn.Version{Tenant: "default", Number: 1, Config: fn.Config{Name: "f", Runtime: fn.RuntimeHTTP}, CodeSHA256: verSHA}
	if err := s.CreateVersion(ctx, v); err != nil {
		t.Fatal(err)
	}
	exists := func(sha string) bool {
		_, err := s.obs.GetInfo(ctx, sha)
		return err == nil
	}

	if n, _, err := s.CollectCode(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("collect within the grace: %d, %v; want 0", n, err)
	}
	time.Sleep(150 * time.Millisecond)
	if put("no one's code") != loose { // a deploy storing it again
		t.Fatal("same bytes, different name")
	}
	if n, _, err := s.CollectCode(ctx, 100*time.Millisecond); err != nil || n != 0 || !exists(loose) {
		t.Fatalf("collect after the package was stored again: %d, %v; want it kept", n, err)
	}
	time.Sleep(150 * time.Millisecond)
	n, _, err := s.CollectCode(ctx, 100*time.Millisecond)
	if err != nil || n != 1 {
		t.Fatalf("collect: %d, %v; want 1", n, err)
	}
	if exists(loose) || !exists(fnSHA) || !exists(verSHA) {
		t.Errorf("after collect: loose %v, function's %v, version's %v", exists(loose), exists(fnSHA), exists(verSHA))
	}
	if n, _, err := s.CollectCode(ctx, 0); err != nil || n != 0 {
		t.Errorf("collect again: %d, %v", n, err)
	}
}
