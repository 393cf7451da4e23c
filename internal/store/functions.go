package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"aloft/internal/fn"
)

// Key kinds inside the functions bucket.
const (
	kindFunction = "fn"
	kindVersion  = "ver"
	kindAlias    = "alias"
)

var tenantRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func validTenant(tenant string) error {
	if !tenantRE.MatchString(tenant) {
		return fn.Invalid("tenant %q is invalid: use 1-64 letters, digits, '-' or '_'", tenant)
	}
	return nil
}

// validKey checks the tenant and function name that make up a key.
func validKey(tenant, name string) error {
	if err := validTenant(tenant); err != nil {
		return err
	}
	return fn.ValidateName(name)
}

func functionKey(tenant, name string) string { return tenant + "." + kindFunction + "." + name }

func versionPrefix(tenant, name string) string { return tenant + "." + kindVersion + "." + name + "." }

func versionKey(tenant, name string, n int) string {
	return fmt.Sprintf("%s%010d", versionPrefix(tenant, name), n)
}

func aliasPrefix(tenant, name string) string { return tenant + "." + kindAlias + "." + name + "." }

func aliasKey(tenant, name, alias string) string { return aliasPrefix(tenant, name) + alias }

// GetFunction returns the $LATEST state of a function and the KV revision to
// pass to UpdateFunction. It returns fn.NotFound if the function does not
// exist and fn.Invalid if tenant or name cannot name one.
func (s *Store) GetFunction(ctx context.Context, tenant, name string) (*fn.Function, uint64, error) {
	if err := validKey(tenant, name); err != nil {
		return nil, 0, err
	}
	e, err := s.kv.Get(ctx, functionKey(tenant, name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fn.NotFound("function %q not found", name)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("get function %q: %w", name, err)
	}
	var f fn.Function
	if err := json.Unmarshal(e.Value(), &f); err != nil {
		return nil, 0, fmt.Errorf("get function %q: decode: %w", name, err)
	}
	return &f, e.Revision(), nil
}

// CreateFunction stores a new function and returns its revision. It returns
// fn.Conflict if a function of that name exists in f.Tenant and fn.Invalid
// if f.Tenant or f.Name cannot name one. It does not validate the rest of
// f's configuration.
func (s *Store) CreateFunction(ctx context.Context, f *fn.Function) (uint64, error) {
	if err := validKey(f.Tenant, f.Name); err != nil {
		return 0, err
	}
	b, err := json.Marshal(f)
	if err != nil {
		return 0, fmt.Errorf("create function %q: encode: %w", f.Name, err)
	}
	rev, err := s.kv.Create(ctx, functionKey(f.Tenant, f.Name), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fn.Conflict("function %q already exists", f.Name)
	}
	if err != nil {
		return 0, fmt.Errorf("create function %q: %w", f.Name, err)
	}
	return rev, nil
}

// UpdateFunction replaces a function if its revision is still rev
// (compare-and-set) and returns the new revision. It returns fn.Conflict if
// the function changed since rev was read, fn.NotFound if it no longer
// exists, and fn.Invalid if f.Tenant or f.Name cannot name one.
func (s *Store) UpdateFunction(ctx context.Context, f *fn.Function, rev uint64) (uint64, error) {
	if err := validKey(f.Tenant, f.Name); err != nil {
		return 0, err
	}
	if rev == 0 {
		return 0, fmt.Errorf("update function %q: revision 0 is not a revision (read the function first)", f.Name)
	}
	b, err := json.Marshal(f)
	if err != nil {
		return 0, fmt.Errorf("update function %q: encode: %w", f.Name, err)
	}
	newRev, err := s.kv.Update(ctx, functionKey(f.Tenant, f.Name), b, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		if _, _, gerr := s.GetFunction(ctx, f.Tenant, f.Name); fn.IsNotFound(gerr) {
			return 0, gerr
		}
		return 0, fn.Conflict("function %q was changed concurrently; retry", f.Name)
	}
	if err != nil {
		return 0, fmt.Errorf("update function %q: %w", f.Name, err)
	}
	return newRev, nil
}

// ListFunctions returns a tenant's functions sorted by name. It returns
// fn.Invalid if tenant cannot name one.
func (s *Store) ListFunctions(ctx context.Context, tenant string) ([]*fn.Function, error) {
	if err := validTenant(tenant); err != nil {
		return nil, err
	}
	entries, err := s.values(ctx, functionKey(tenant, "*"))
	if err != nil {
		return nil, fmt.Errorf("list functions: %w", err)
	}
	fs := make([]*fn.Function, 0, len(entries))
	for _, e := range entries {
		var f fn.Function
		if err := json.Unmarshal(e.Value(), &f); err != nil {
			return nil, fmt.Errorf("list functions: decode %s: %w", e.Key(), err)
		}
		fs = append(fs, &f)
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	return fs, nil
}

// AllFunctions returns the $LATEST of every function of every tenant,
// sorted by tenant and name: what the event triggers follow.
func (s *Store) AllFunctions(ctx context.Context) ([]*fn.Function, error) {
	entries, err := s.values(ctx, "*.fn.*")
	if err != nil {
		return nil, fmt.Errorf("list all functions: %w", err)
	}
	fs := make([]*fn.Function, 0, len(entries))
	for _, e := range entries {
		var f fn.Function
		if err := json.Unmarshal(e.Value(), &f); err != nil {
			return nil, fmt.Errorf("list all functions: decode %s: %w", e.Key(), err)
		}
		fs = append(fs, &f)
	}
	sort.Slice(fs, func(i, j int) bool {
		if fs[i].Tenant != fs[j].Tenant {
			return fs[i].Tenant < fs[j].Tenant
		}
		return fs[i].Name < fs[j].Name
	})
	return fs, nil
}

// DeleteFunction removes a function with its versions and aliases. It
// returns fn.NotFound if the function does not exist, fn.Conflict if it
// changed while its versions and aliases were removed, and fn.Invalid if
// tenant or name cannot name one. Versions and aliases go first, so a
// failed delete leaves the function in place to retry. Code packages stay
// (other versions or functions may share them) until CollectCode finds no
// one names them.
func (s *Store) DeleteFunction(ctx context.Context, tenant, name string) error {
	_, rev, err := s.GetFunction(ctx, tenant, name)
	if err != nil {
		return err
	}
	for _, prefix := range []string{aliasPrefix(tenant, name), versionPrefix(tenant, name)} {
		entries, err := s.values(ctx, prefix+"*")
		if err != nil {
			return fmt.Errorf("delete function %q: %w", name, err)
		}
		for _, e := range entries {
			if err := s.kv.Delete(ctx, e.Key()); err != nil {
				return fmt.Errorf("delete function %q: delete %s: %w", name, e.Key(), err)
			}
		}
	}
	err = s.kv.Delete(ctx, functionKey(tenant, name), jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return fn.Conflict("function %q was changed concurrently; retry", name)
	}
	if err != nil {
		return fmt.Errorf("delete function %q: %w", name, err)
	}
	return nil
}

// CreateVersion stores an immutable published version. The function is
// v.Name. It returns fn.Conflict if that version number exists and
// fn.Invalid if v.Tenant, v.Name or v.Number cannot name one.
func (s *Store) CreateVersion(ctx context.Context, v *fn.Version) error {
	if err := validKey(v.Tenant, v.Name); err != nil {
		return err
	}
	if v.Number < 1 {
		return fn.Invalid("version %d is invalid: versions start at 1", v.Number)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("create version %d of %q: encode: %w", v.Number, v.Name, err)
	}
	_, err = s.kv.Create(ctx, versionKey(v.Tenant, v.Name, v.Number), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fn.Conflict("version %d of function %q already exists", v.Number, v.Name)
	}
	if err != nil {
		return fmt.Errorf("create version %d of %q: %w", v.Number, v.Name, err)
	}
	return nil
}

// GetVersion returns a published version. It returns fn.NotFound if it does
// not exist and fn.Invalid if tenant or name cannot name one.
func (s *Store) GetVersion(ctx context.Context, tenant, name string, n int) (*fn.Version, error) {
	if err := validKey(tenant, name); err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, fn.NotFound("version %d of function %q not found", n, name)
	}
	e, err := s.kv.Get(ctx, versionKey(tenant, name, n))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fn.NotFound("version %d of function %q not found", n, name)
	}
	if err != nil {
		return nil, fmt.Errorf("get version %d of %q: %w", n, name, err)
	}
	var v fn.Version
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return nil, fmt.Errorf("get version %d of %q: decode: %w", n, name, err)
	}
	return &v, nil
}

// ListVersions returns a function's published versions in ascending order
// (none if the function has none or does not exist). It returns fn.Invalid
// if tenant or name cannot name one.
func (s *Store) ListVersions(ctx context.Context, tenant, name string) ([]*fn.Version, error) {
	if err := validKey(tenant, name); err != nil {
		return nil, err
	}
	entries, err := s.values(ctx, versionPrefix(tenant, name)+"*")
	if err != nil {
		return nil, fmt.Errorf("list versions of %q: %w", name, err)
	}
	vs := make([]*fn.Version, 0, len(entries))
	for _, e := range entries {
		var v fn.Version
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			return nil, fmt.Errorf("list versions of %q: decode %s: %w", name, e.Key(), err)
		}
		vs = append(vs, &v)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].Number < vs[j].Number })
	return vs, nil
}

// PutAlias creates or replaces an alias. It returns fn.Invalid if a.Tenant,
// a.Function or a.Name cannot name one. It does not check that the function
// or the version exists: the caller (which holds the function's revision)
// does.
func (s *Store) PutAlias(ctx context.Context, a *fn.Alias) error {
	if err := validAlias(a.Tenant, a.Function, a.Name); err != nil {
		return err
	}
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("put alias %q of %q: encode: %w", a.Name, a.Function, err)
	}
	if _, err := s.kv.Put(ctx, aliasKey(a.Tenant, a.Function, a.Name), b); err != nil {
		return fmt.Errorf("put alias %q of %q: %w", a.Name, a.Function, err)
	}
	return nil
}

// GetAlias returns an alias. It returns fn.NotFound if it does not exist and
// fn.Invalid if tenant, name or alias cannot name one.
func (s *Store) GetAlias(ctx context.Context, tenant, name, alias string) (*fn.Alias, error) {
	if err := validAlias(tenant, name, alias); err != nil {
		return nil, err
	}
	e, err := s.kv.Get(ctx, aliasKey(tenant, name, alias))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fn.NotFound("alias %q of function %q not found", alias, name)
	}
	if err != nil {
		return nil, fmt.Errorf("get alias %q of %q: %w", alias, name, err)
	}
	var a fn.Alias
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return nil, fmt.Errorf("get alias %q of %q: decode: %w", alias, name, err)
	}
	return &a, nil
}

// ListAliases returns a function's aliases sorted by name. It returns
// fn.Invalid if tenant or name cannot name one.
func (s *Store) ListAliases(ctx context.Context, tenant, name string) ([]*fn.Alias, error) {
	if err := validKey(tenant, name); err != nil {
		return nil, err
	}
	entries, err := s.values(ctx, aliasPrefix(tenant, name)+"*")
	if err != nil {
		return nil, fmt.Errorf("list aliases of %q: %w", name, err)
	}
	as := make([]*fn.Alias, 0, len(entries))
	for _, e := range entries {
		var a fn.Alias
		if err := json.Unmarshal(e.Value(), &a); err != nil {
			return nil, fmt.Errorf("list aliases of %q: decode %s: %w", name, e.Key(), err)
		}
		as = append(as, &a)
	}
	sort.Slice(as, func(i, j int) bool { return as[i].Name < as[j].Name })
	return as, nil
}

// DeleteAlias removes an alias. It returns fn.NotFound if it does not exist
// and fn.Invalid if tenant, name or alias cannot name one.
func (s *Store) DeleteAlias(ctx context.Context, tenant, name, alias string) error {
	if _, err := s.GetAlias(ctx, tenant, name, alias); err != nil {
		return err
	}
	if err := s.kv.Delete(ctx, aliasKey(tenant, name, alias)); err != nil {
		return fmt.Errorf("delete alias %q of %q: %w", alias, name, err)
	}
	return nil
}

func validAlias(tenant, name, alias string) error {
	if err := validKey(tenant, name); err != nil {
		return err
	}
	return fn.ValidateAliasName(alias)
}

// values returns the live entries whose keys match filter (a key with
// wildcards), read through one ordered consumer rather than a get per key.
func (s *Store) values(ctx context.Context, filter string) ([]jetstream.KeyValueEntry, error) {
	w, err := s.kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer stopWatcher(w)
	var out []jetstream.KeyValueEntry
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("watcher closed before the last value")
			}
			if e == nil {
				return out, nil
			}
			out = append(out, e)
		}
	}
}

// stopWatcher unsubscribes w and drains its channel until it closes, so a
// delivery blocked on the full channel can finish and the subscription's
// goroutine can end.
func stopWatcher(w jetstream.KeyWatcher) {
	_ = w.Stop() // fails only when the subscription is already closed
	for range w.Updates() {
	}
}

// Change is one change of a function, version or alias, as seen by Watch.
type Change struct {
	// Kind is "function", "version" or "alias".
	Kind     string
	Tenant   string
	Function string
	// Name is the version number (decimal) or the alias name; empty for a
	// function.
	Name string
	// Deleted is true when the record was removed.
	Deleted bool
	// Rev is the KV revision of the change.
	Rev uint64
}

// Watch returns every change made from now on, by any node, until ctx ends
// or the store closes; then the channel is closed. History is not replayed:
// read the current state after Watch returns. A slow reader holds the
// changes back (nothing is dropped).
func (s *Store) Watch(ctx context.Context) (<-chan Change, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("watch functions: %w", err)
	}
	out := make(chan Change, 64)
	s.watchers.Add(1)
	go func() {
		defer s.watchers.Done()
		defer close(out)
		defer stopWatcher(w)
		for {
			var e jetstream.KeyValueEntry
			var ok bool
			select {
			case <-ctx.Done():
				return
			case <-s.done:
				return
			case e, ok = <-w.Updates():
				if !ok {
					return
				}
			}
			c, valid := parseChange(e)
			if !valid {
				continue
			}
			select {
			case out <- c:
			case <-ctx.Done():
				return
			case <-s.done:
				return
			}
		}
	}()
	return out, nil
}

// parseChange turns a KV entry into a Change; ok is false for a nil entry
// or a key outside the layout.
func parseChange(e jetstream.KeyValueEntry) (c Change, ok bool) {
	if e == nil {
		return Change{}, false
	}
	tok := strings.Split(e.Key(), ".")
	switch {
	case len(tok) == 3 && tok[1] == kindFunction:
		c.Kind = "function"
	case len(tok) == 4 && tok[1] == kindVersion:
		c.Kind = "version"
		n, err := strconv.Atoi(tok[3])
		if err != nil {
			return Change{}, false
		}
		c.Name = strconv.Itoa(n)
	case len(tok) == 4 && tok[1] == kindAlias:
		c.Kind = "alias"
		c.Name = tok[3]
	default:
		return Change{}, false
	}
	c.Tenant, c.Function = tok[0], tok[2]
	c.Deleted = e.Operation() == jetstream.KeyValueDelete || e.Operation() == jetstream.KeyValuePurge
	c.Rev = e.Revision()
	return c, true
}

// Resolve returns what qualifier names of a function: "" or $LATEST (the
// function's current state, as a Version numbered 0), a version number, or
// an alias (the version it points at). It returns fn.NotFound for a
// function, version or alias that does not exist and fn.Invalid for a
// qualifier that can be none of them.
func (s *Store) Resolve(ctx context.Context, tenant, name, qualifier string) (*fn.Version, error) {
	if qualifier == "" || qualifier == fn.LatestVersion {
		f, _, err := s.GetFunction(ctx, tenant, name)
		if err != nil {
			return nil, err
		}
		return &fn.Version{Tenant: f.Tenant, Config: f.Config, CodeSHA256: f.CodeSHA256, CodeSize: f.CodeSize,
			Revision: f.Revision, Created: f.Updated}, nil
	}
	n, err := strconv.Atoi(qualifier)
	if err != nil {
		if verr := fn.ValidateAliasName(qualifier); verr != nil {
			return nil, fn.Invalid("qualifier %q is invalid: use $LATEST, a version number or an alias name", qualifier)
		}
		a, err := s.GetAlias(ctx, tenant, name, qualifier)
		if err != nil {
			return nil, err
		}
		n = a.Version
	} else if n < 1 {
		return nil, fn.Invalid("qualifier %q is invalid: versions start at 1", qualifier)
	}
	return s.GetVersion(ctx, tenant, name, n)
}
