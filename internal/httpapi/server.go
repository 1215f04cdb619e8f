// Package httpapi is credvault's HTTP API: routes, roles per route, request
// limits, problem+json errors with the one error→status map, and correlation
// ids. It is the only package that knows HTTP statuses.
package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/telemetry"
	"github.com/credvault/credvault/internal/vault"
)

// Authenticator turns a request's headers into a verified principal.
type Authenticator interface {
	Authenticate(ctx context.Context, h http.Header) (identity.Principal, error)
}

// Options configure the API.
type Options struct {
	Vault *vault.Vault
	Auth  Authenticator
	Log   *slog.Logger // default slog.Default()
	// Rotator runs the rotation job (POST/GET /api/admin/rotate and the
	// rotate timer's invocation); nil: those answer 503.
	Rotator Rotator
	// Audit records an audit event for every authenticated route's call
	// (and every authentication failure and denial) before the response is
	// released; nil: no audit trail (tests and benchmarks only).
	Audit Auditor
	// Hasher answers POST /api/admin/audit-hash; nil: that route answers 503.
	Hasher Hasher
	// Telemetry receives a request item per call and an exception per 5xx;
	// default telemetry.Discard.
	Telemetry telemetry.Sink
	// CORSOrigins are the exact origins (scheme://host[:port]) a browser
	// frontend may call from; empty: the handler answers no CORS (in Azure
	// the platform's CORS applies). See cors.go.
	CORSOrigins []string
}

type server struct {
	vault   *vault.Vault
	auth    Authenticator
	rotator Rotator
	audit   Auditor
	hasher  Hasher
	tel     telemetry.Sink
	log     *slog.Logger

	mux    *http.ServeMux
	paths  *http.ServeMux      // the same paths without methods: tells 405 from 404
	allows map[string][]string // path pattern → methods
}

// handlerFunc serves one route for an authenticated principal; an error is
// answered as problem+json.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p identity.Principal) error

// New returns the API's handler.
func New(opt Options) http.Handler {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Telemetry == nil {
		opt.Telemetry = telemetry.Discard
	}
	s := &server{vault: opt.Vault, auth: opt.Auth, rotator: opt.Rotator, audit: opt.Audit, hasher: opt.Hasher,
		tel: opt.Telemetry, log: opt.Log,
		mux: http.NewServeMux(), paths: http.NewServeMux(), allows: map[string][]string{}}
	for _, rt := range routeTable {
		s.handle(rt, func(w http.ResponseWriter, r *http.Request, p identity.Principal) error {
			return rt.serve(s, w, r, p)
		})
	}
	// The rotate timer's invocation by the Functions host: not an API route.
	s.mux.HandleFunc("POST /"+TimerFunction, s.invokeTimer)
	s.paths.Handle("/"+TimerFunction, http.NotFoundHandler())
	s.allows["/"+TimerFunction] = []string{http.MethodPost}
	var h http.Handler = http.HandlerFunc(s.serve)
	if len(opt.CORSOrigins) > 0 {
		h = s.withCORS(opt.CORSOrigins, h)
	}
	return withTrace(h)
}

// route is one API route: its pattern, the roles a caller must hold (nil:
// no authentication), the operation its audit records name, and its handler.
type route struct {
	pattern string
	roles   []identity.Role
	op      string
	serve   func(*server, http.ResponseWriter, *http.Request, identity.Principal) error
}

var routeTable = []route{
	{"GET /api/health", nil, "", (*server).health},
	{"PUT /api/credentials/{name}", roles(identity.CredentialsWrite), audit.OpSecretWrite, (*server).put},
	{"GET /api/credentials/{name}", roles(identity.CredentialsRead), audit.OpSecretRead, (*server).get},
	{"GET /api/credentials", roles(identity.CredentialsRead), audit.OpSecretList, (*server).list},
	{"GET /api/credentials/{name}/versions", roles(identity.CredentialsRead), audit.OpSecretVersions, (*server).versions},
	{"DELETE /api/credentials/{name}", roles(identity.CredentialsDelete), audit.OpSecretDelete, (*server).delete},
	{"POST /api/credentials/{name}/restore", roles(identity.CredentialsDelete), audit.OpSecretRestore, (*server).restore},
	{"GET /api/admin/credentials", roles(identity.CredentialsAdmin), audit.OpAdminList, (*server).adminList},
	{"POST /api/admin/erase", roles(identity.CredentialsAdmin), audit.OpOwnerErase, (*server).erase},
	{"POST /api/admin/rotate", roles(identity.KeysRotate), audit.OpRotation, (*server).rotate},
	{"GET /api/admin/rotate", roles(identity.KeysRotate), audit.OpRotationReport, (*server).lastRotation},
	{"POST /api/admin/audit-hash", roles(identity.AuditRead), audit.OpAuditHash, (*server).auditHash},
	{"GET /api/openapi.json", nil, "", (*server).openapi},
}

func roles(r ...identity.Role) []identity.Role { return r }

// Routes lists every route as "METHOD /path/{param}", for the Functions
// layout test.
func Routes() []string {
	out := make([]string, len(routeTable))
	for i, rt := range routeTable {
		out[i] = rt.pattern
	}
	return out
}

// handle registers a route. A route that needs roles authenticates the
// caller and is audited (see audited); one that needs none is served as is.
func (s *server) handle(rt route, h handlerFunc) {
	method, path, _ := strings.Cut(rt.pattern, " ")
	if _, ok := s.allows[path]; !ok {
		s.paths.Handle(path, http.NotFoundHandler())
	}
	s.allows[path] = append(s.allows[path], method)
	s.mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) {
		if rt.roles != nil {
			s.audited(w, r, rt.op, rt.roles, h)
			return
		}
		if err := h(w, r, identity.Principal{}); err != nil {
			writeProblem(w, r, err)
		}
	})
}

// serve routes the request, answers unknown routes and methods as problems,
// recovers panics, and writes the request's one log line.
func (s *server) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := recordOf(r)
	sw := &statusWriter{ResponseWriter: w}
	h := sw.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic serving request", "route", rec.route, "correlation_id", rec.correlationID, "panic_type", typeName(v))
			if sw.status == 0 {
				writeProblem(sw, r, errPanic)
			}
		}
		d := time.Since(start)
		s.logRequest(r, rec, sw.status, d)
		s.trackRequest(r, rec, sw.status, start, d)
	}()

	_, pattern := s.mux.Handler(r)
	if pattern == "" {
		if _, path := s.paths.Handler(r); path != "" {
			h.Set("Allow", strings.Join(s.allows[path], ", "))
			rec.route = r.Method + " " + path
			writeProblem(sw, r, errMethod)
		} else {
			rec.route = r.Method + " (unknown route)"
			writeProblem(sw, r, errRoute)
		}
		return
	}
	rec.route = pattern
	s.mux.ServeHTTP(sw, r) // (not the handler above: ServeHTTP sets the path values)
}

var invocationIDRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

func (s *server) logRequest(r *http.Request, rec *record, status int, d time.Duration) {
	attrs := []any{
		"method", r.Method, "route", rec.route, "status", status,
		"duration_ms", float64(d.Microseconds()) / 1000,
		"correlation_id", rec.correlationID, "trace_id", rec.traceID,
	}
	if id := r.Header.Get("X-Azure-Functions-InvocationId"); invocationIDRE.MatchString(id) {
		attrs = append(attrs, "invocation_id", id)
	}
	level := slog.LevelInfo
	if rec.err != nil {
		attrs = append(attrs, "error", rec.err.Error())
		if status >= 500 {
			level = slog.LevelError
		}
	}
	s.log.Log(r.Context(), level, "request", attrs...)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *server) health(w http.ResponseWriter, r *http.Request, _ identity.Principal) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// typeName names a panic value's type without printing the value, which
// could hold request data.
func typeName(v any) string { return fmt.Sprintf("%T", v) }
