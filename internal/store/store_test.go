package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"aloft/internal/fn"
)

// openTest opens a Store on an embedded server in dir and closes it at the
// end of the test.
func openTest(t *testing.T, dir string, mod ...func(*Config)) *Store {
	t.Helper()
	cfg := Config{
		DataDir: dir,
		NodeID:  "node-1",
		Logger:  slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// wantStatus fails unless err is an *fn.Error with the given status.
func wantStatus(t *testing.T, err error, status int) {
	t.Helper()
	var e *fn.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *fn.Error with status %d", err, err, status)
	}
	if e.Status != status {
		t.Fatalf("error %q has status %d, want %d", e.Message, e.Status, status)
	}
}

func newFunction(tenant, name string) *fn.Function {
	f := &fn.Function{Tenant: tenant, Config: fn.Config{Name: name, Runtime: fn.RuntimeLambda}}
	f.Normalize()
	return f
}

func TestOpenConfigErrors(t *testing.T) {
	_, err := Open(t.Context(), Config{NodeID: "bad id", Replicas: 3, LogMaxAge: -time.Second})
	if err == nil {
		t.Fatal("open with a bad config succeeded")
	}
	for _, want := range []string{"node id", "data dir", "log max age", "replicas 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestFunctionsCRUD(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := t.Context()

	for _, name := range []string{"charlie", "alpha", "bravo"} {
		if _, err := s.CreateFunction(ctx, newFunction(fn.DefaultTenant, name)); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	if _, err := s.CreateFunction(ctx, newFunction("other", "zulu")); err != nil {
		t.Fatalf("create in another tenant: %v", err)
	}
	_, err := s.CreateFunction(ctx, newFunction(fn.DefaultTenant, "alpha"))
	wantStatus(t, err, http.StatusConflict)

	f, rev, err := s.GetFunction(ctx, fn.DefaultTenant, "alpha")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if f.Name != "alpha" || f.Tenant != fn.DefaultTenant || f.Runtime != fn.RuntimeLambda || rev == 0 {
		t.Fatalf("get returned %+v rev %d", f, rev)
	}
	_, _, err = s.GetFunction(ctx, fn.DefaultTenant, "missing")
	wantStatus(t, err, http.StatusNotFound)
	_, _, err = s.GetFunction(ctx, "other", "alpha")
	wantStatus(t, err, http.StatusNotFound)
	_, _, err = s.GetFunction(ctx, "bad.tenant", "alpha")
	wantStatus(t, err, http.StatusBadRequest)
	_, _, err = s.GetFunction(ctx, fn.DefaultTenant, "Bad*Name")
	wantStatus(t, err, http.StatusBadRequest)

	f.CodeSHA256 = strings.Repeat("a", 64)
	newRev, err := s.UpdateFunction(ctx, f, rev)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if newRev <= rev {
		t.Fatalf("update returned revision %d after %d", newRev, rev)
	}
	_, err = s.UpdateFunction(ctx, f, rev)
	wantStatus(t, err, http.StatusConflict)
	_, err = s.UpdateFunction(ctx, newFunction(fn.DefaultTenant, "missing"), rev)
	wantStatus(t, err, http.StatusNotFound)
	got, gotRev, err := s.GetFunction(ctx, fn.DefaultTenant, "alpha")
	if err != nil || got.CodeSHA256 != f.CodeSHA256 || gotRev != newRev {
		t.Fatalf("after update got %+v rev %d err %v, want code %s rev %d", got, gotRev, err, f.CodeSHA256, newRev)
	}

	list, err := s.ListFunctions(ctx, fn.DefaultTenant)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var names []string
	for _, f := range list {
		names = append(names, f.Name)
	}
	if strings.Join(names, ",") != "alpha,bravo,charlie" {
		t.Fatalf("list = %v, want alpha,bravo,charlie", names)
	}
	empty, err := s.ListFunctions(ctx, "nobody")
	if err != nil || len(empty) != 0 {
		t.Fatalf("list of an empty tenant = %v, %v", empty, err)
	}
	if _, err := s.CreateFunction(ctx, newFunction("acme", "zulu")); err != nil {
		t.Fatalf("create in another tenant: %v", err)
	}
	all, err := s.AllFunctions(ctx)
	if err != nil {
		t.Fatalf("all functions: %v", err)
	}
	names = names[:0]
	for _, f := range all {
		names = append(names, f.Tenant+"/"+f.Name)
	}
	if strings.Join(names, ",") != "acme/zulu,default/alpha,default/bravo,default/charlie,other/zulu" {
		t.Fatalf("all functions = %v", names)
	}

	if err := s.DeleteFunction(ctx, fn.DefaultTenant, "bravo"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	wantStatus(t, s.DeleteFunction(ctx, fn.DefaultTenant, "bravo"), http.StatusNotFound)
	_, _, err = s.GetFunction(ctx, fn.DefaultTenant, "bravo")
	wantStatus(t, err, http.StatusNotFound)
	// A deleted name can be created again.
	if _, err := s.CreateFunction(ctx, newFunction(fn.DefaultTenant, "bravo")); err != nil {
		t.Fatalf("re-create after delete: %v", err)
	}
}

func TestVersionsAliasesAndCascade(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := t.Context()
	const tenant, name = fn.DefaultTenant, "app"
	if _, err := s.CreateFunction(ctx, newFunction(tenant, name)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{2, 10, 1} {
		v := &fn.Version{Tenant: tenant, Number: n, Config: fn.Config{Name: name}, Description: fmt.Sprint("v", n)}
		if err := s.CreateVersion(ctx, v); err != nil {
			t.Fatalf("create version %d: %v", n, err)
		}
	}
	wantStatus(t, s.CreateVersion(ctx, &fn.Version{Tenant: tenant, Number: 2, Config: fn.Config{Name: name}}), http.StatusConflict)
	wantStatus(t, s.CreateVersion(ctx, &fn.Version{Tenant: tenant, Number: 0, Config: fn.Config{Name: name}}), http.StatusBadRequest)
	v, err := s.GetVersion(ctx, tenant, name, 10)
	if err != nil || v.Number != 10 || v.Description != "v10" {
		t.Fatalf("get version 10 = %+v, %v", v, err)
	}
	_, err = s.GetVersion(ctx, tenant, name, 3)
	wantStatus(t, err, http.StatusNotFound)
	vs, err := s.ListVersions(ctx, tenant, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 3 || vs[0].Number != 1 || vs[1].Number != 2 || vs[2].Number != 10 {
		t.Fatalf("versions not ascending: %v", versionNumbers(vs))
	}

	for _, a := range []string{"prod", "beta_1", "Canary-x"} {
		if err := s.PutAlias(ctx, &fn.Alias{Tenant: tenant, Function: name, Name: a, Version: 1}); err != nil {
			t.Fatalf("put alias %s: %v", a, err)
		}
	}
	if err := s.PutAlias(ctx, &fn.Alias{Tenant: tenant, Function: name, Name: "prod", Version: 2}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, s.PutAlias(ctx, &fn.Alias{Tenant: tenant, Function: name, Name: "1bad", Version: 2}), http.StatusBadRequest)
	a, err := s.GetAlias(ctx, tenant, name, "prod")
	if err != nil || a.Version != 2 {
		t.Fatalf("get alias prod = %+v, %v; want version 2", a, err)
	}
	_, err = s.GetAlias(ctx, tenant, name, "nope")
	wantStatus(t, err, http.StatusNotFound)
	as, err := s.ListAliases(ctx, tenant, name)
	if err != nil {
		t.Fatal(err)
	}
	if got := aliasNames(as); got != "Canary-x,beta_1,prod" {
		t.Fatalf("aliases = %s", got)
	}
	if err := s.DeleteAlias(ctx, tenant, name, "beta_1"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, s.DeleteAlias(ctx, tenant, name, "beta_1"), http.StatusNotFound)

	// Another function whose name extends this one's must survive the cascade.
	if _, err := s.CreateFunction(ctx, newFunction(tenant, name+"-2")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateVersion(ctx, &fn.Version{Tenant: tenant, Number: 1, Config: fn.Config{Name: name + "-2"}}); err != nil {
		t.Fatal(err)
	}

	if err := s.DeleteFunction(ctx, tenant, name); err != nil {
		t.Fatalf("delete: %v", err)
	}
	_, err = s.GetVersion(ctx, tenant, name, 1)
	wantStatus(t, err, http.StatusNotFound)
	_, err = s.GetAlias(ctx, tenant, name, "prod")
	wantStatus(t, err, http.StatusNotFound)
	if vs, err := s.ListVersions(ctx, tenant, name); err != nil || len(vs) != 0 {
		t.Fatalf("versions after delete = %v, %v", versionNumbers(vs), err)
	}
	if as, err := s.ListAliases(ctx, tenant, name); err != nil || len(as) != 0 {
		t.Fatalf("aliases after delete = %s, %v", aliasNames(as), err)
	}
	if _, err := s.GetVersion(ctx, tenant, name+"-2", 1); err != nil {
		t.Fatalf("the other function's version went with the cascade: %v", err)
	}
	// Re-created, the function starts with no versions and can publish 1 again.
	if _, err := s.CreateFunction(ctx, newFunction(tenant, name)); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateVersion(ctx, &fn.Version{Tenant: tenant, Number: 1, Config: fn.Config{Name: name}}); err != nil {
		t.Fatalf("version 1 after re-create: %v", err)
	}
}

func versionNumbers(vs []*fn.Version) []int {
	var ns []int
	for _, v := range vs {
		ns = append(ns, v.Number)
	}
	return ns
}

func aliasNames(as []*fn.Alias) string {
	var ns []string
	for _, a := range as {
		ns = append(ns, a.Name)
	}
	return strings.Join(ns, ",")
}

func TestRestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	start := time.Now()
	s, err := Open(ctx, Config{DataDir: dir, NodeID: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("open on a fresh dir: %s", time.Since(start))
	f := newFunction(fn.DefaultTenant, "keep")
	if _, err := s.CreateFunction(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateVersion(ctx, &fn.Version{Tenant: fn.DefaultTenant, Number: 1, Config: f.Config}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAlias(ctx, &fn.Alias{Tenant: fn.DefaultTenant, Function: "keep", Name: "prod", Version: 1}); err != nil {
		t.Fatal(err)
	}
	sha, _, err := s.PutCode(ctx, strings.NewReader("package bytes"))
	if err != nil {
		t.Fatal(err)
	}
	s.AppendLog(fn.LogLine{Tenant: fn.DefaultTenant, Function: "keep", Stream: "stdout", Text: "before restart"})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	start = time.Now()
	s2 := openTest(t, dir)
	t.Logf("open on an existing dir: %s", time.Since(start))
	if _, _, err := s2.GetFunction(ctx, fn.DefaultTenant, "keep"); err != nil {
		t.Errorf("function lost: %v", err)
	}
	if _, err := s2.GetVersion(ctx, fn.DefaultTenant, "keep", 1); err != nil {
		t.Errorf("version lost: %v", err)
	}
	if a, err := s2.GetAlias(ctx, fn.DefaultTenant, "keep", "prod"); err != nil || a.Version != 1 {
		t.Errorf("alias lost: %+v, %v", a, err)
	}
	var buf bytes.Buffer
	if err := s2.GetCode(ctx, sha, &buf); err != nil || buf.String() != "package bytes" {
		t.Errorf("code lost: %q, %v", buf.String(), err)
	}
	lines := readAll(t, s2, LogQuery{Tenant: fn.DefaultTenant, Function: "keep"})
	if len(lines) != 1 || lines[0].Text != "before restart" {
		t.Errorf("logs after restart = %v", texts(lines))
	}
}

func TestCode(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := t.Context()

	big := make([]byte, 20<<20)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(big)
	wantSum := sha256.Sum256(big)
	start := time.Now()
	sha, size, err := s.PutCode(ctx, bytes.NewReader(big))
	if err != nil {
		t.Fatalf("put 20 MiB: %v", err)
	}
	if sha != hex.EncodeToString(wantSum[:]) || size != int64(len(big)) {
		t.Fatalf("put returned %s, %d; want %x, %d", sha, size, wantSum, len(big))
	}
	t.Logf("put 20 MiB: %s", time.Since(start))
	start = time.Now()
	var out bytes.Buffer
	if err := s.GetCode(ctx, sha, &out); err != nil {
		t.Fatalf("get 20 MiB: %v", err)
	}
	t.Logf("get 20 MiB: %s", time.Since(start))
	if !bytes.Equal(out.Bytes(), big) {
		t.Fatal("20 MiB object came back different")
	}

	// Dedup: the same bytes again add nothing to the bucket.
	before, err := s.obs.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sha2, _, err := s.PutCode(ctx, bytes.NewReader(big))
	if err != nil || sha2 != sha {
		t.Fatalf("second put = %s, %v", sha2, err)
	}
	after, err := s.obs.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != before.Size() {
		t.Fatalf("bucket grew from %d to %d bytes on a duplicate put", before.Size(), after.Size())
	}

	// Empty package.
	emptySHA, n, err := s.PutCode(ctx, strings.NewReader(""))
	if err != nil || n != 0 {
		t.Fatalf("put empty = %d, %v", n, err)
	}
	out.Reset()
	if err := s.GetCode(ctx, emptySHA, &out); err != nil || out.Len() != 0 {
		t.Fatalf("get empty = %d bytes, %v", out.Len(), err)
	}

	wantStatus(t, s.GetCode(ctx, strings.Repeat("0", 64), io.Discard), http.StatusNotFound)
	wantStatus(t, s.GetCode(ctx, "../etc/passwd", io.Discard), http.StatusBadRequest)

	// An object whose bytes do not hash to its name fails the check.
	good := sha256.Sum256([]byte("good"))
	if _, err := s.obs.PutBytes(ctx, hex.EncodeToString(good[:]), []byte("evil")); err != nil {
		t.Fatal(err)
	}
	err = s.GetCode(ctx, hex.EncodeToString(good[:]), io.Discard)
	var fe *fn.Error
	if err == nil || errors.As(err, &fe) || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("get of a corrupt object = %v, want an internal digest error", err)
	}
}

func TestWatchThroughAnotherStore(t *testing.T) {
	s1 := openTest(t, t.TempDir(), func(c *Config) { c.listen = true })
	url := s1.clientURL()
	if url == "" {
		t.Fatal("embedded server has no client URL")
	}
	s2 := openTest(t, "", func(c *Config) { c.NATSURL = url; c.NodeID = "node-2" })

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	changes, err := s1.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next := func() Change {
		t.Helper()
		select {
		case c, ok := <-changes:
			if !ok {
				t.Fatal("watch channel closed early")
			}
			return c
		case <-t.Context().Done():
			t.Fatal("test ended before a change arrived")
		}
		return Change{}
	}

	const name = "watched"
	rev, err := s2.CreateFunction(t.Context(), newFunction(fn.DefaultTenant, name))
	if err != nil {
		t.Fatal(err)
	}
	if c := next(); c != (Change{Kind: "function", Tenant: fn.DefaultTenant, Function: name, Rev: rev}) {
		t.Fatalf("change = %+v", c)
	}
	if err := s2.CreateVersion(t.Context(), &fn.Version{Tenant: fn.DefaultTenant, Number: 3, Config: fn.Config{Name: name}}); err != nil {
		t.Fatal(err)
	}
	if c := next(); c.Kind != "version" || c.Function != name || c.Name != "3" || c.Deleted {
		t.Fatalf("change = %+v", c)
	}
	if err := s2.PutAlias(t.Context(), &fn.Alias{Tenant: fn.DefaultTenant, Function: name, Name: "live", Version: 3}); err != nil {
		t.Fatal(err)
	}
	if c := next(); c.Kind != "alias" || c.Name != "live" || c.Deleted {
		t.Fatalf("change = %+v", c)
	}
	// The data written through s2 is readable through s1.
	if a, err := s1.GetAlias(t.Context(), fn.DefaultTenant, name, "live"); err != nil || a.Version != 3 {
		t.Fatalf("alias through s1 = %+v, %v", a, err)
	}
	if err := s2.DeleteFunction(t.Context(), fn.DefaultTenant, name); err != nil {
		t.Fatal(err)
	}
	deleted := map[string]bool{}
	for range 3 {
		c := next()
		if !c.Deleted {
			t.Fatalf("change after delete = %+v", c)
		}
		deleted[c.Kind] = true
	}
	if len(deleted) != 3 {
		t.Fatalf("deletes seen: %v", deleted)
	}

	cancel()
	for range changes {
	}
}

func TestLogs(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := t.Context()
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	for i := range 10 {
		s.AppendLog(fn.LogLine{Time: base.Add(time.Duration(i) * time.Minute), Tenant: fn.DefaultTenant, Function: "a", Stream: "stdout", Text: fmt.Sprint("a", i)})
		s.AppendLog(fn.LogLine{Time: base.Add(time.Duration(i) * time.Minute), Tenant: fn.DefaultTenant, Function: "b", Stream: "stderr", Text: fmt.Sprint("b", i)})
	}
	s.AppendLog(fn.LogLine{Tenant: "other", Function: "a", Text: "other tenant"})
	s.AppendLog(fn.LogLine{Tenant: "bad.tenant", Function: "a", Text: "dropped"})
	if err := s.FlushLogs(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.LogsDropped(); got != 1 {
		t.Fatalf("dropped = %d, want 1 (the line with an invalid tenant)", got)
	}

	tests := []struct {
		name string
		q    LogQuery
		want string
	}{
		{"all of a", LogQuery{Function: "a"}, "a0 a1 a2 a3 a4 a5 a6 a7 a8 a9"},
		{"last 3", LogQuery{Function: "a", Limit: 3}, "a7 a8 a9"},
		{"limit over count", LogQuery{Function: "b", Limit: 50}, "b0 b1 b2 b3 b4 b5 b6 b7 b8 b9"},
		{"since", LogQuery{Function: "a", Since: base.Add(6 * time.Minute)}, "a6 a7 a8 a9"},
		{"since and limit", LogQuery{Function: "a", Since: base.Add(6 * time.Minute), Limit: 2}, "a8 a9"},
		{"whole tenant", LogQuery{Limit: 4}, "a8 b8 a9 b9"},
		{"no such function", LogQuery{Function: "zzz"}, ""},
		{"since after the last", LogQuery{Function: "a", Since: base.Add(11 * time.Minute)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.q.Tenant = fn.DefaultTenant
			if got := strings.Join(texts(readAll(t, s, tt.q)), " "); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	wantStatus(t, s.ReadLogs(ctx, LogQuery{Tenant: "x.y"}, nil), http.StatusBadRequest)
	info, err := s.logs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Fatalf("%d consumers left on the logs stream after the reads", info.State.Consumers)
	}

	// An error from each stops the read and comes back as it is.
	stop := errors.New("enough")
	n := 0
	err = s.ReadLogs(ctx, LogQuery{Tenant: fn.DefaultTenant, Function: "a"}, func(fn.LogLine) error { n++; return stop })
	if err != stop || n != 1 {
		t.Fatalf("read with a failing callback = %v after %d lines", err, n)
	}
}

func TestLogsFollow(t *testing.T) {
	s := openTest(t, t.TempDir())
	for _, fname := range []string{"f", "empty"} {
		t.Run(fname, func(t *testing.T) {
			if fname == "f" {
				for i := range 5 {
					s.AppendLog(fn.LogLine{Tenant: fn.DefaultTenant, Function: fname, Text: fmt.Sprint("old", i)})
				}
				if err := s.FlushLogs(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(t.Context())
			got := make(chan string)
			var wg sync.WaitGroup
			var readErr error
			wg.Go(func() {
				readErr = s.ReadLogs(ctx, LogQuery{Tenant: fn.DefaultTenant, Function: fname, Limit: 2, Follow: true}, func(l fn.LogLine) error {
					select {
					case got <- l.Text:
					case <-ctx.Done():
					}
					return nil
				})
			})
			defer func() {
				cancel()
				wg.Wait()
				if readErr != nil {
					t.Errorf("follow ended with %v, want nil", readErr)
				}
			}()
			recv := func() string {
				select {
				case s := <-got:
					return s
				case <-t.Context().Done():
					t.Fatal("test ended before a line arrived")
					return ""
				}
			}
			if fname == "f" {
				if a, b := recv(), recv(); a != "old3" || b != "old4" {
					t.Fatalf("history = %s %s, want old3 old4", a, b)
				}
			}
			s.AppendLog(fn.LogLine{Tenant: fn.DefaultTenant, Function: fname, Text: "new"})
			if l := recv(); l != "new" {
				t.Fatalf("followed line = %q, want new", l)
			}
		})
	}
}

func TestLogStreamBound(t *testing.T) {
	const bound = 64 << 10
	s := openTest(t, t.TempDir(), func(c *Config) { c.LogMaxBytes = bound })
	ctx := t.Context()
	const lines = 2000
	for i := range lines {
		s.AppendLog(fn.LogLine{Tenant: fn.DefaultTenant, Function: "chatty", Stream: "stdout", Text: fmt.Sprintf("line %04d %s", i, strings.Repeat("x", 80))})
	}
	if err := s.FlushLogs(ctx); err != nil {
		t.Fatal(err)
	}
	if d := s.LogsDropped(); d != 0 {
		t.Fatalf("%d lines dropped", d)
	}
	info, err := s.logs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Bytes > bound {
		t.Fatalf("logs stream holds %d bytes, bound %d", info.State.Bytes, bound)
	}
	got := texts(readAll(t, s, LogQuery{Tenant: fn.DefaultTenant, Function: "chatty"}))
	if len(got) == 0 || len(got) >= lines {
		t.Fatalf("kept %d of %d lines", len(got), lines)
	}
	if last := got[len(got)-1]; !strings.HasPrefix(last, fmt.Sprintf("line %04d", lines-1)) {
		t.Fatalf("last line kept = %q", last)
	}
	if first := got[0]; strings.HasPrefix(first, "line 0000") {
		t.Fatalf("the oldest line survived: %q", first)
	}
	t.Logf("bound %d bytes keeps %d of %d lines (%d bytes)", bound, len(got), lines, info.State.Bytes)
}

func readAll(t *testing.T, s *Store, q LogQuery) []fn.LogLine {
	t.Helper()
	var out []fn.LogLine
	if err := s.ReadLogs(t.Context(), q, func(l fn.LogLine) error { out = append(out, l); return nil }); err != nil {
		t.Fatalf("read logs %+v: %v", q, err)
	}
	return out
}

func texts(ls []fn.LogLine) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Text)
	}
	return out
}

// TestUpdateHammer races UpdateFunction calls on one revision: exactly one
// wins each round, the others get 409.
func TestUpdateHammer(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := t.Context()
	const workers, rounds = 8, 20
	if _, err := s.CreateFunction(ctx, newFunction(fn.DefaultTenant, "hot")); err != nil {
		t.Fatal(err)
	}
	for round := range rounds {
		f, rev, err := s.GetFunction(ctx, fn.DefaultTenant, "hot")
		if err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, conflicts := 0, 0
		for w := range workers {
			wg.Go(func() {
				mine := *f
				mine.Revision = fmt.Sprintf("r%d-w%d", round, w)
				mine.LatestPublished = round + 1
				<-start
				_, err := s.UpdateFunction(ctx, &mine, rev)
				var fe *fn.Error
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.As(err, &fe) && fe.Status == http.StatusConflict:
					conflicts++
				default:
					t.Errorf("update: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if wins != 1 || conflicts != workers-1 {
			t.Fatalf("round %d: %d wins, %d conflicts; want 1 and %d", round, wins, conflicts, workers-1)
		}
	}

	// Free-running read-modify-write with retries loses no increment.
	const each = 10
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				for {
					f, rev, err := s.GetFunction(ctx, fn.DefaultTenant, "hot")
					if err != nil {
						t.Error(err)
						return
					}
					f.LatestPublished++
					_, err = s.UpdateFunction(ctx, f, rev)
					if err == nil {
						break
					}
					var fe *fn.Error
					if !errors.As(err, &fe) || fe.Status != http.StatusConflict {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	f, _, err := s.GetFunction(ctx, fn.DefaultTenant, "hot")
	if err != nil {
		t.Fatal(err)
	}
	if want := rounds + workers*each; f.LatestPublished != want {
		t.Fatalf("counter = %d, want %d", f.LatestPublished, want)
	}
}

// BenchmarkAppendLog measures the cost AppendLog adds to the invoke path.
func BenchmarkAppendLog(b *testing.B) {
	s, err := Open(b.Context(), Config{DataDir: b.TempDir(), NodeID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	l := fn.LogLine{Tenant: fn.DefaultTenant, Function: "bench", Version: "$LATEST", Stream: "stdout",
		InvocationID: "8c6b1a52-3d5e-4d7e-9f7a-2f0f5b7f4a11", Text: strings.Repeat("x", 100)}
	b.ReportAllocs()
	var slowest time.Duration
	for b.Loop() {
		start := time.Now()
		s.AppendLog(l)
		slowest = max(slowest, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(float64(slowest.Microseconds()), "max-µs")
	if err := s.FlushLogs(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(s.LogsDropped())/float64(b.N), "dropped/op")
}

// lockedBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestServerLogGoesToSlogAtDebug(t *testing.T) {
	var debug, info lockedBuffer
	openTest(t, t.TempDir(), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&debug, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	openTest(t, t.TempDir(), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&info, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	if !strings.Contains(debug.String(), `level=DEBUG msg="nats server" text="Starting nats-server"`) {
		t.Fatalf("the server's start notice is not in the debug log:\n%s", debug.String())
	}
	if strings.Contains(info.String(), "nats server") {
		t.Fatalf("server notices reached an info-level log:\n%s", info.String())
	}
}

// TestAppendLogNeverWaits fills the queue of a store whose publisher is not
// running: AppendLog must return and count the lines it cannot queue, by
// line count and by bytes.
func TestAppendLogNeverWaits(t *testing.T) {
	line := fn.LogLine{Tenant: fn.DefaultTenant, Function: "f", Text: "short"}
	s := &Store{logQueue: make(chan logItem, 3)}
	for range 5 {
		s.AppendLog(line)
	}
	if got := s.LogsDropped(); got != 2 {
		t.Fatalf("dropped %d lines of 5 with room for 3, want 2", got)
	}

	s = &Store{logQueue: make(chan logItem, 2*logQueueBytes/maxLogText)}
	line.Text = strings.Repeat("y", 2*maxLogText) // cut to maxLogText
	for range logQueueBytes/maxLogText + 1 {
		s.AppendLog(line)
	}
	if got := s.LogsDropped(); got != 1 {
		t.Fatalf("dropped %d lines past the byte bound, want 1", got)
	}
	if q := s.logQueued.Load(); q != logQueueBytes {
		t.Fatalf("queued bytes = %d, want %d", q, logQueueBytes)
	}
}

func TestAppendLogAfterClose(t *testing.T) {
	s, err := Open(t.Context(), Config{DataDir: t.TempDir(), NodeID: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.AppendLog(fn.LogLine{Tenant: fn.DefaultTenant, Function: "f", Text: "late"})
	if got := s.LogsDropped(); got != 1 {
		t.Fatalf("dropped = %d after appending to a closed store, want 1", got)
	}
	if err := s.FlushLogs(t.Context()); err == nil {
		t.Fatal("flush on a closed store succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

// TestListenWithToken checks the embedded server's listener for outside
// NATS clients: a client with the token connects, one without is refused,
// and the store's own connection works with the listener on.
func TestListenWithToken(t *testing.T) {
	s := openTest(t, t.TempDir(), func(c *Config) { c.Listen = "127.0.0.1:0"; c.ListenToken = "secret-1" })
	url := s.ListenURL()
	if url == "" {
		t.Fatal("no listen URL")
	}
	if _, _, err := s.GetFunction(t.Context(), fn.DefaultTenant, "missing"); !fn.IsNotFound(err) {
		t.Fatalf("the store's own connection: %v", err)
	}
	nc, err := nats.Connect(url, nats.Token("secret-1"))
	if err != nil {
		t.Fatalf("connect with the token: %v", err)
	}
	nc.Close()
	if nc, err := nats.Connect(url, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a client without the token connected")
	}
	if _, err := Open(t.Context(), Config{DataDir: t.TempDir(), NodeID: "x", Listen: "nowhere"}); err == nil ||
		!strings.Contains(err.Error(), "HOST:PORT") || !strings.Contains(err.Error(), "token") {
		t.Fatalf("a bad listen config: %v", err)
	}
}
