package api

import (
	"net/http"
	"strings"
	"time"

	"aloft/internal/fn"
)

// publish freezes $LATEST as the next version number. Publishing again
// without a change returns the latest version, as Lambda does.
func (a *API) publish(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	var body struct {
		Description string `json:"description"`
	}
	if r.ContentLength != 0 {
		if err := decodeJSON(r.Body, maxConfigBytes, &body); err != nil {
			return err
		}
	}
	ctx := r.Context()
	for attempt := 0; attempt < 5; attempt++ {
		f, rev, err := a.cfg.Store.GetFunction(ctx, tenant(r), name)
		if err != nil {
			return err
		}
		if f.LatestPublished > 0 {
			last, err := a.cfg.Store.GetVersion(ctx, tenant(r), name, f.LatestPublished)
			if err == nil && last.Revision == f.Revision {
				return writeJSON(w, http.StatusOK, last)
			}
		}
		v := &fn.Version{Tenant: f.Tenant, Number: f.LatestPublished + 1, Config: f.Config,
			CodeSHA256: f.CodeSHA256, CodeSize: f.CodeSize, Revision: f.Revision,
			Description: body.Description, Created: time.Now().UTC()}
		f.LatestPublished = v.Number
		if _, err := a.cfg.Store.UpdateFunction(ctx, f, rev); err != nil {
			if isConflict(err) {
				continue
			}
			return err
		}
		if err := a.cfg.Store.CreateVersion(ctx, v); err != nil {
			return err
		}
		a.log.Info("version published", "function", name, "version", v.Number)
		return writeJSON(w, http.StatusCreated, v)
	}
	return fn.Conflict("function %q is being changed concurrently; retry", name)
}

func (a *API) listVersions(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	if _, _, err := a.cfg.Store.GetFunction(r.Context(), tenant(r), name); err != nil {
		return err
	}
	vs, err := a.cfg.Store.ListVersions(r.Context(), tenant(r), name)
	if err != nil {
		return err
	}
	if vs == nil {
		vs = []*fn.Version{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"versions": vs})
}

func (a *API) listAliases(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	if _, _, err := a.cfg.Store.GetFunction(r.Context(), tenant(r), name); err != nil {
		return err
	}
	as, err := a.cfg.Store.ListAliases(r.Context(), tenant(r), name)
	if err != nil {
		return err
	}
	if as == nil {
		as = []*fn.Alias{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"aliases": as})
}

func (a *API) aliasPath(r *http.Request) (name, alias string, err error) {
	if name, err = pathName(r); err != nil {
		return "", "", err
	}
	alias = r.PathValue("alias")
	if err := fn.ValidateAliasName(alias); err != nil {
		return "", "", err
	}
	if strings.EqualFold(alias, "latest") {
		return "", "", fn.Invalid("alias name %q is reserved: choose another", alias)
	}
	return name, alias, nil
}

func (a *API) putAlias(w http.ResponseWriter, r *http.Request) error {
	name, alias, err := a.aliasPath(r)
	if err != nil {
		return err
	}
	var body struct {
		Version     int    `json:"version"`
		Description string `json:"description"`
	}
	if err := decodeJSON(r.Body, maxConfigBytes, &body); err != nil {
		return err
	}
	if body.Version < 1 {
		return fn.Invalid("alias needs \"version\": a published version number (publish one with `aloft publish %s`)", name)
	}
	if _, _, err := a.cfg.Store.GetFunction(r.Context(), tenant(r), name); err != nil {
		return err
	}
	if _, err := a.cfg.Store.GetVersion(r.Context(), tenant(r), name, body.Version); err != nil {
		if fn.IsNotFound(err) {
			return fn.NotFound("function %q has no version %d: publish it first", name, body.Version)
		}
		return err
	}
	al := &fn.Alias{Tenant: tenant(r), Function: name, Name: alias, Version: body.Version,
		Description: body.Description, Updated: time.Now().UTC()}
	if err := a.cfg.Store.PutAlias(r.Context(), al); err != nil {
		return err
	}
	a.changed(r.Context(), name)
	return writeJSON(w, http.StatusOK, al)
}

func (a *API) getAlias(w http.ResponseWriter, r *http.Request) error {
	name, alias, err := a.aliasPath(r)
	if err != nil {
		return err
	}
	al, err := a.cfg.Store.GetAlias(r.Context(), tenant(r), name, alias)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, al)
}

func (a *API) deleteAlias(w http.ResponseWriter, r *http.Request) error {
	name, alias, err := a.aliasPath(r)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.DeleteAlias(r.Context(), tenant(r), name, alias); err != nil {
		return err
	}
	a.changed(r.Context(), name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
