package httpapi

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/vault"
)

// Auditor records audit events (the audit trail is one). In closed mode
// Record returns only once the record is durable, and an error means the
// request must release nothing.
type Auditor interface {
	Record(ctx context.Context, e audit.Event) error
}

// eventOf returns the audit event of the request, for its handler to fill in
// what only it knows (name, versions, keys, a target owner).
func eventOf(r *http.Request) *audit.Event {
	if rec := recordOf(r); rec.event != nil {
		return rec.event
	}
	return &audit.Event{} // a route without an audit record: written to nowhere
}

// audited runs an authenticated route's handler into a buffer, records its
// audit event, and only then releases the response. If the record cannot
// be written (closed mode) the buffered response is dropped and the caller
// gets 503: no value leaves and no write is acknowledged.
func (s *server) audited(w http.ResponseWriter, r *http.Request, op string, needed []identity.Role, h handlerFunc) {
	rec := recordOf(r)
	ev := &audit.Event{Op: op, Correlation: rec.correlationID}
	rec.event = ev
	buf := &bufferedWriter{header: http.Header{}}

	p, err := s.auth.Authenticate(r.Context(), r.Header)
	switch {
	case err != nil:
		ev.Op = audit.OpAuthenticate
		writeProblem(buf, r, err)
	case !hasAll(p, needed):
		ev.Op = audit.OpAuthorize
		describe(ev, p, needed)
		writeProblem(buf, r, errForbidden)
	default:
		describe(ev, p, needed)
		if err := h(buf, r, p); err != nil {
			writeProblem(buf, r, err)
		}
	}
	if buf.status == 0 {
		buf.status = http.StatusOK
	}
	ev.Status = buf.status
	ev.Outcome = outcome(buf.status)
	if rec.err != nil && ev.Outcome != audit.Success {
		_, title, _ := status(rec.err)
		ev.Reason = strings.ToLower(title)
	}
	if s.audit != nil {
		if err := s.audit.Record(r.Context(), *ev); err != nil {
			// The response is dropped whole: its headers (ETag, Location) too.
			for k := range buf.header {
				delete(buf.header, k)
			}
			rec.err = nil
			writeProblem(w, r, err)
			return
		}
	}
	buf.flush(w)
}

func hasAll(p identity.Principal, needed []identity.Role) bool {
	for _, role := range needed {
		if !p.Has(role) {
			return false
		}
	}
	return true
}

// describe fills in who acts: principal type, the roles the route uses, and
// the owner and caller ids, which the trail hashes and never writes.
func describe(ev *audit.Event, p identity.Principal, needed []identity.Role) {
	ev.Principal = p.Kind
	ev.Roles = make([]string, len(needed))
	for i, role := range needed {
		ev.Roles[i] = string(role)
	}
	ev.Owner, ev.Caller = p.Owner(), p.Owner()
}

// outcome classes an HTTP status for the trail.
func outcome(code int) string {
	switch {
	case code < 400:
		return audit.Success
	case code == http.StatusUnauthorized, code == http.StatusForbidden:
		return audit.Denied
	case code >= 500:
		return audit.Error
	default:
		return audit.Failure
	}
}

// bufferedWriter holds a response until its audit record is written.
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// flush sends the held response.
func (b *bufferedWriter) flush(w http.ResponseWriter) {
	h := w.Header()
	for k, v := range b.header {
		h[k] = v
	}
	w.WriteHeader(b.status)
	w.Write(b.body.Bytes())
}

// Hasher turns raw identifiers into the hashes the audit trail holds.
type Hasher interface {
	Hash(ctx context.Context, owner, caller, name string) (audit.Hashes, error)
}

var errNoHasher = errors.New("the audit trail is not configured")

// auditHash answers POST /api/admin/audit-hash (Audit.Read): an
// investigator's owner, caller or secret name → the hashes the trail holds,
// to search it. The call is itself audited (with the hashes it asked for).
func (s *server) auditHash(w http.ResponseWriter, r *http.Request, _ identity.Principal) error {
	if s.hasher == nil {
		return errNoHasher
	}
	var b struct {
		Owner  string `json:"owner"`
		Name   string `json:"name"`
		Caller string `json:"caller"`
	}
	if err := decodeJSON(w, r, &b); err != nil {
		return err
	}
	if len(b.Owner) > maxOwnerBytes || len(b.Caller) > maxOwnerBytes {
		return &vault.InvalidError{Field: "owner", Reason: "owner and caller must be ids (tenant/object) of at most 256 bytes"}
	}
	if b.Owner == "" && b.Name == "" && b.Caller == "" {
		return &vault.InvalidError{Field: "body", Reason: "name at least one of owner, name and caller"}
	}
	if b.Name != "" {
		if err := vault.ValidateName(b.Name); err != nil {
			return err
		}
	}
	h, err := s.hasher.Hash(r.Context(), b.Owner, b.Caller, b.Name)
	if err != nil {
		return err
	}
	var fields []string
	for _, f := range []struct {
		set  bool
		name string
	}{{b.Owner != "", "owner"}, {b.Caller != "", "caller"}, {b.Name != "", "name"}} {
		if f.set {
			fields = append(fields, f.name)
		}
	}
	eventOf(r).Subject = "asked:" + strings.Join(fields, ",")
	type out struct {
		Owner  string `json:"owner,omitempty"`
		Caller string `json:"caller,omitempty"`
		Name   string `json:"name,omitempty"`
		Key    uint32 `json:"keyVersion"`
	}
	return writeJSON(w, http.StatusOK, out{Owner: h.Owner, Caller: h.Caller, Name: h.Name, Key: h.Key})
}
