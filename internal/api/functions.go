package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"aloft/internal/archive"
	"aloft/internal/build"
	"aloft/internal/fn"
)

const maxConfigBytes = 64 << 10

func (a *API) listFunctions(w http.ResponseWriter, r *http.Request) error {
	fns, err := a.cfg.Store.ListFunctions(r.Context(), tenant(r))
	if err != nil {
		return err
	}
	if fns == nil {
		fns = []*fn.Function{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"functions": fns})
}

func (a *API) getFunction(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	f, _, err := a.cfg.Store.GetFunction(r.Context(), tenant(r), name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, f)
}

func (a *API) deleteFunction(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.DeleteFunction(r.Context(), tenant(r), name); err != nil {
		return err
	}
	a.changed(r.Context(), name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// putFunction creates or replaces a function's $LATEST: multipart with a
// config part and a code part, or a JSON config alone for an existing
// function.
func (a *API) putFunction(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		mt = ""
	}
	switch mt {
	case "multipart/form-data":
		return a.deploy(w, r, name)
	case "application/json":
		var cfg fn.Config
		if err := decodeJSON(r.Body, maxConfigBytes, &cfg); err != nil {
			return err
		}
		return a.updateConfig(w, r, name, cfg)
	default:
		return fn.Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"send multipart/form-data with parts \"config\" and \"code\", or application/json to change only the config")
	}
}

func checkConfig(name string, cfg *fn.Config) error {
	if cfg.Name == "" {
		cfg.Name = name
	}
	if cfg.Name != name {
		return fn.Invalid("config name %q does not match the URL's function name %q", cfg.Name, name)
	}
	cfg.Normalize()
	return cfg.Validate()
}

func (a *API) deploy(w http.ResponseWriter, r *http.Request, name string) error {
	mr, err := r.MultipartReader()
	if err != nil {
		return fn.Invalid("bad multipart body: %v", err)
	}
	var cfg *fn.Config
	var pkgPath, root string
	tmp, err := os.MkdirTemp(a.cfg.TempDir, "aloft-deploy-")
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	defer os.RemoveAll(tmp)
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fn.Invalid("bad multipart body: %v", err)
		}
		switch part.FormName() {
		case "config":
			if cfg != nil {
				return fn.Invalid("multipart body has two \"config\" parts")
			}
			cfg = &fn.Config{}
			if err := decodeJSON(part, maxConfigBytes, cfg); err != nil {
				return err
			}
			if err := checkConfig(name, cfg); err != nil {
				return err
			}
			if err := a.cfg.Gateway.Conflicts(name, cfg.Routes); err != nil {
				return err
			}
			if err := a.cfg.Events.Validate(r.Context(), tenant(r), cfg); err != nil {
				return err
			}
		case "code":
			if cfg == nil {
				return fn.Invalid("the \"config\" part must come before the \"code\" part")
			}
			if pkgPath != "" {
				return fn.Invalid("multipart body has two \"code\" parts")
			}
			pkgPath, root, err = a.prepareCode(r.Context(), tmp, cfg, part)
			if err != nil {
				return err
			}
		default:
			return fn.Invalid("unknown multipart part %q: send \"config\" and \"code\"", part.FormName())
		}
	}
	if cfg == nil {
		return fn.Invalid("multipart body has no \"config\" part")
	}
	if pkgPath == "" {
		return fn.Invalid("multipart body has no \"code\" part: attach a .zip or .tar.gz, or send application/json to change only the config")
	}
	f, err := os.Open(pkgPath)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	defer f.Close()
	sha, size, err := a.cfg.Store.PutCode(r.Context(), f)
	if err != nil {
		return fmt.Errorf("deploy: store code: %w", err)
	}
	if cfg.Runtime == fn.RuntimeWasm {
		// Compile now, never on a request; this also checks the module
		// follows one of the two contracts.
		module, err := os.ReadFile(filepath.Join(root, cfg.Handler))
		if err != nil {
			return fmt.Errorf("deploy: %w", err)
		}
		if err := a.cfg.Invoker.CompileWasm(r.Context(), cfg.Name, sha, cfg.Handler, module); err != nil {
			return err
		}
	}
	return a.save(w, r, *cfg, sha, size, true)
}

// prepareCode stores the upload, unpacks it safely, builds Go source,
// checks the handler and packs the tree canonically. It returns the path of
// the canonical package and the directory it was packed from.
func (a *API) prepareCode(ctx context.Context, tmp string, cfg *fn.Config, part io.Reader) (pkg, root string, err error) {
	upload := filepath.Join(tmp, "upload")
	f, err := os.Create(upload)
	if err != nil {
		return "", "", fmt.Errorf("deploy: %w", err)
	}
	n, err := io.Copy(f, io.LimitReader(part, a.cfg.Archive.MaxArchive+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", "", fn.Invalid("reading the code part: %v", err)
	}
	if n > a.cfg.Archive.MaxArchive {
		return "", "", fn.TooLarge("code package is over %d bytes: make it smaller", a.cfg.Archive.MaxArchive)
	}
	if n == 0 {
		return "", "", fn.Invalid("code part is empty: attach a .zip or .tar.gz of the function's directory")
	}
	tree := filepath.Join(tmp, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return "", "", fmt.Errorf("deploy: %w", err)
	}
	f, err = os.Open(upload)
	if err != nil {
		return "", "", fmt.Errorf("deploy: %w", err)
	}
	err = archive.Extract(f, tree, a.cfg.Archive)
	f.Close()
	if err != nil {
		return "", "", err
	}
	root = tree
	if build.IsGoSource(tree) && (cfg.Runtime == fn.RuntimeLambda || cfg.Runtime == fn.RuntimeHTTP || cfg.Runtime == fn.RuntimeWasm) {
		if _, err := os.Lstat(filepath.Join(tree, cfg.Handler)); err == nil {
			return "", "", fn.Invalid("the code has both go.mod and a %q file: send source (Aloft builds it) or a built %q, not both", cfg.Handler, cfg.Handler)
		}
		out := filepath.Join(tmp, "built")
		if err := os.Mkdir(out, 0o755); err != nil {
			return "", "", fmt.Errorf("deploy: %w", err)
		}
		var target build.Target
		switch cfg.Runtime {
		case fn.RuntimeLambda:
			target.Tags = []string{"lambda.norpc"}
		case fn.RuntimeWasm:
			target.Wasm, target.Reactor = true, build.HasWasmExports(tree)
		}
		if err := build.Go(ctx, a.cfg.Build, tree, out, cfg.Handler, target); err != nil {
			return "", "", err
		}
		root = out
	}
	if err := checkHandler(root, cfg); err != nil {
		return "", "", err
	}
	pkg = filepath.Join(tmp, "package.tar.gz")
	f, err = os.Create(pkg)
	if err != nil {
		return "", "", fmt.Errorf("deploy: %w", err)
	}
	err = archive.Pack(f, root)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", "", fmt.Errorf("deploy: pack code: %w", err)
	}
	return pkg, root, nil
}

// checkHandler verifies the code holds what the runtime will start.
func checkHandler(root string, cfg *fn.Config) error {
	switch cfg.Runtime {
	case fn.RuntimeLambda, fn.RuntimeHTTP:
		st, err := os.Stat(filepath.Join(root, cfg.Handler))
		if err != nil || !st.Mode().IsRegular() {
			hint := "build it for linux and name it so, or send Go source with a go.mod"
			return fn.Invalid("the code has no executable %q for runtime %s: %s", cfg.Handler, cfg.Runtime, hint)
		}
		if st.Mode().Perm()&0o111 == 0 {
			return fn.Invalid("%q in the code is not executable: chmod +x it before packing", cfg.Handler)
		}
	case fn.RuntimeWasm:
		st, err := os.Stat(filepath.Join(root, cfg.Handler))
		if err != nil || !st.Mode().IsRegular() {
			return fn.Invalid("the code has no WebAssembly module %q: build one (GOOS=wasip1 GOARCH=wasm) or send Go source with a go.mod", cfg.Handler)
		}
		b := make([]byte, 4)
		f, err := os.Open(filepath.Join(root, cfg.Handler))
		if err == nil {
			_, err = io.ReadFull(f, b)
			f.Close()
		}
		if err != nil || string(b) != "\x00asm" {
			return fn.Invalid("%q in the code is not a WebAssembly binary (those start with the bytes \\0asm): build it for GOOS=wasip1 GOARCH=wasm, or assemble a .wat text module first (wat2wasm)", cfg.Handler)
		}
	case fn.RuntimeNode:
		file, _ := splitHandler(cfg.Handler)
		for _, ext := range []string{".js", ".mjs", ".cjs"} {
			if st, err := os.Stat(filepath.Join(root, file+ext)); err == nil && st.Mode().IsRegular() {
				return nil
			}
		}
		return fn.Invalid("handler %q: the code has no %s.js, %s.mjs or %s.cjs", cfg.Handler, file, file, file)
	case fn.RuntimePython:
		file, _ := splitHandler(cfg.Handler)
		file = strings.ReplaceAll(file, ".", "/")
		if st, err := os.Stat(filepath.Join(root, file+".py")); err == nil && st.Mode().IsRegular() {
			return nil
		}
		return fn.Invalid("handler %q: the code has no %s.py", cfg.Handler, file)
	}
	return nil
}

// splitHandler splits "dir/file.function" at the last dot.
func splitHandler(h string) (file, function string) {
	i := strings.LastIndexByte(h, '.')
	if i < 0 {
		return h, ""
	}
	return h[:i], h[i+1:]
}

// updateConfig changes the config of an existing function, keeping its code.
func (a *API) updateConfig(w http.ResponseWriter, r *http.Request, name string, cfg fn.Config) error {
	if err := checkConfig(name, &cfg); err != nil {
		return err
	}
	if err := a.cfg.Gateway.Conflicts(name, cfg.Routes); err != nil {
		return err
	}
	if err := a.cfg.Events.Validate(r.Context(), tenant(r), &cfg); err != nil {
		return err
	}
	old, _, err := a.cfg.Store.GetFunction(r.Context(), tenant(r), name)
	if err != nil {
		if fn.IsNotFound(err) {
			return fn.NotFound("function %q does not exist: create it with code (multipart with \"config\" and \"code\")", name)
		}
		return err
	}
	if old.Runtime != cfg.Runtime || old.Handler != cfg.Handler {
		return fn.Invalid("changing the runtime or handler needs the code too: deploy with a \"code\" part")
	}
	return a.save(w, r, cfg, old.CodeSHA256, old.CodeSize, false)
}

// save writes $LATEST, creating the function or updating it with a
// compare-and-set on its revision.
func (a *API) save(w http.ResponseWriter, r *http.Request, cfg fn.Config, sha string, size int64, mayCreate bool) error {
	ctx := r.Context()
	for attempt := 0; attempt < 5; attempt++ {
		old, rev, err := a.cfg.Store.GetFunction(ctx, tenant(r), cfg.Name)
		f := &fn.Function{Tenant: tenant(r), Config: cfg, CodeSHA256: sha, CodeSize: size,
			Revision: newRevision(), Updated: time.Now().UTC()}
		switch {
		case fn.IsNotFound(err) && mayCreate:
			if _, err := a.cfg.Store.CreateFunction(ctx, f); err != nil {
				if isConflict(err) {
					continue
				}
				return err
			}
			a.changed(ctx, cfg.Name)
			a.log.Info("function created", "function", cfg.Name, "runtime", cfg.Runtime)
			return writeJSON(w, http.StatusCreated, f)
		case err != nil:
			return err
		}
		f.LatestPublished = old.LatestPublished
		if _, err := a.cfg.Store.UpdateFunction(ctx, f, rev); err != nil {
			if isConflict(err) {
				continue
			}
			return err
		}
		a.changed(ctx, cfg.Name)
		a.log.Info("function updated", "function", cfg.Name, "runtime", cfg.Runtime)
		return writeJSON(w, http.StatusOK, f)
	}
	return fn.Conflict("function %q is being changed concurrently; retry", cfg.Name)
}

func isConflict(err error) bool {
	var fe *fn.Error
	return errors.As(err, &fe) && fe.Status == http.StatusConflict
}
