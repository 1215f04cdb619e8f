package httpapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/vault"
)

// putBody is the body of PUT /api/credentials/{name}.
type putBody struct {
	Value       json.RawMessage   `json:"value"`
	ContentType string            `json:"contentType"`
	Tags        map[string]string `json:"tags"`
}

func (s *server) put(w http.ResponseWriter, r *http.Request, p identity.Principal) error {
	name := r.PathValue("name")
	if err := vault.ValidateName(name); err != nil {
		return err
	}
	req := vault.PutRequest{Name: name, IfMatch: r.Header.Get("If-Match"), By: p.Name}
	switch inm := r.Header.Get("If-None-Match"); inm {
	case "":
	case "*":
		req.IfNoneMatch = true
	default:
		return &vault.InvalidError{Field: "If-None-Match", Reason: `only "*" is supported`}
	}
	var b putBody
	if err := decodeJSON(w, r, &b); err != nil {
		return err
	}
	req.Value, req.ContentType, req.Tags = b.Value, b.ContentType, b.Tags
	ev := eventOf(r)
	ev.Name = name
	sec, err := s.vault.Put(r.Context(), p.Owner(), req)
	if err != nil {
		return err
	}
	ev.Version, ev.KEK, ev.CMK = sec.Version, sec.KEK, sec.CMK
	h := w.Header()
	h.Set("ETag", quoteETag(sec.ETag))
	h.Set("Location", "/api/credentials/"+url.PathEscape(name)+"?version="+strconv.FormatUint(sec.Version, 10))
	code := http.StatusOK
	if sec.Version == 1 {
		code = http.StatusCreated
	}
	return writeJSON(w, code, sec)
}

func (s *server) get(w http.ResponseWriter, r *http.Request, p identity.Principal) error {
	name := r.PathValue("name")
	if err := vault.ValidateName(name); err != nil {
		return err
	}
	var version uint64
	if q := r.URL.Query(); q.Has("version") {
		v, err := strconv.ParseUint(q.Get("version"), 10, 64)
		if err != nil || v == 0 {
			return &vault.InvalidError{Field: "version", Reason: "must be a positive integer"}
		}
		version = v
	}
	ev := eventOf(r)
	ev.Name, ev.Version = name, version
	sec, err := s.vault.Get(r.Context(), p.Owner(), name, version)
	if err != nil {
		return err
	}
	ev.Version, ev.KEK, ev.CMK = sec.Version, sec.KEK, sec.CMK
	w.Header().Set("ETag", quoteETag(sec.ETag))
	return writeJSON(w, http.StatusOK, sec)
}

func (s *server) list(w http.ResponseWriter, r *http.Request, p identity.Principal) error {
	opt, err := listOptions(r)
	if err != nil {
		return err
	}
	page, err := s.vault.List(r.Context(), p.Owner(), opt)
	if err != nil {
		return err
	}
	eventOf(r).Count = len(page.Items)
	return writeJSON(w, http.StatusOK, page)
}

func (s *server) versions(w http.ResponseWriter, r *http.Request, p identity.Principal) error {
	name := r.PathValue("name")
	if err := vault.ValidateName(name); err != nil {
		return err
	}
	eventOf(r).Name = name
	vs, etag, err := s.vault.Versions(r.Context(), p.Owner(), name)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", quoteETag(etag))
	return writeJSON(w, http.StatusOK, map[string]any{"items": vs})
}

// delete soft-deletes, or with ?purge=true destroys (Credentials.Admin).
func (s *server) delete(w http.ResponseWriter, r *http.Request, p identity.Principal) error {
	name := r.PathValue("name")
	if err := vault.ValidateName(name); err != nil {
		return err
	}
	ev := eventOf(r)
	ev.Name = name
	purge, err := boolParam(r, "purge")
	if err != nil {
		return err
	}
	if purge {
		ev.Op = audit.OpSecretPurge
		ev.Roles = append(ev.Roles, string(identity.CredentialsAdmin))
		if !p.Has(identity.CredentialsAdmin) {
			return errForbidden
		}
		err = s.vault.Purge(r.Context(), p.Owner(), name)
	} else {
		err = s.vault.Delete(r.Context(), p.Owner(), name, r.Header.Get("If-Match"))
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) restore(w http.ResponseWriter, r *http.Request, p identity.Principal) error {
	name := r.PathValue("name")
	if err := vault.ValidateName(name); err != nil {
		return err
	}
	eventOf(r).Name = name
	sum, err := s.vault.Restore(r.Context(), p.Owner(), name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, sum)
}

func listOptions(r *http.Request) (vault.ListOptions, error) {
	q := r.URL.Query()
	opt := vault.ListOptions{Continuation: q.Get("continuation")}
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > vault.MaxListLimit {
			return opt, &vault.InvalidError{Field: "limit", Reason: "must be an integer from 1 to " + strconv.Itoa(vault.MaxListLimit)}
		}
		opt.Limit = n
	}
	var err error
	opt.Deleted, err = boolParam(r, "deleted")
	return opt, err
}

func boolParam(r *http.Request, name string) (bool, error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return false, nil
	}
	b, err := strconv.ParseBool(q.Get(name))
	if err != nil {
		return false, &vault.InvalidError{Field: name, Reason: "must be true or false"}
	}
	return b, nil
}

// quoteETag shows a store ETag as an HTTP entity tag.
func quoteETag(etag string) string {
	if etag == "" {
		return ""
	}
	return `"` + strings.Trim(etag, `"`) + `"`
}
