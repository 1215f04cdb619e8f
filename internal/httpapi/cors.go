package httpapi

import (
	"net/http"
	"slices"
	"strings"
)

// CORS for a browser frontend, when Options.CORSOrigins lists its origins
// (CREDVAULT_CORS_ORIGINS, local runs only: in Azure the platform's CORS,
// set by infra/, answers in front of the handler, and this stays off).
//
//   - Origins match exactly (scheme://host[:port]); there is no wildcard.
//   - A preflight (OPTIONS with Origin and Access-Control-Request-Method)
//     from a listed origin, for a method the path serves and request
//     headers from corsAllowHeaders, is answered 204 with the allowed
//     methods, headers and a max age. Any other preflight is answered 403
//     problem+json without CORS headers, so the browser never sends the
//     request it announced.
//   - A response to a listed origin carries Access-Control-Allow-Origin (the
//     origin itself) and exposes corsExposeHeaders to the script. Never
//     Access-Control-Allow-Credentials: callers send a bearer token in the
//     Authorization header, not cookies.
//   - A request from an origin not listed gets no CORS headers; one with a
//     method other than GET or HEAD is refused 403 before the API sees it,
//     so a disallowed origin changes nothing even when no preflight came
//     first.
//   - Every response carries Vary: Origin.
const (
	corsAllowHeaders  = "Authorization, Content-Type, If-Match, If-None-Match, traceparent, x-correlation-id"
	corsExposeHeaders = "ETag, Location, x-correlation-id, traceparent, Retry-After"
	corsMaxAge        = "600" // seconds
)

// corsRequestHeaders is corsAllowHeaders as a browser names them in
// Access-Control-Request-Headers: lower case.
var corsRequestHeaders = strings.Split(strings.ToLower(strings.ReplaceAll(corsAllowHeaders, " ", "")), ",")

// withCORS wraps the API (inside withTrace, so that a refusal is a
// problem with a correlation id).
func (s *server) withCORS(origins []string, next http.Handler) http.Handler {
	allowed := make(map[string]bool, len(origins))
	for _, o := range origins {
		allowed[o] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Add("Vary", "Origin")
		origin, listed := r.Header.Get("Origin"), false
		if vs := r.Header.Values("Origin"); len(vs) == 1 && allowed[origin] {
			listed = true
		}
		if method := r.Header.Get("Access-Control-Request-Method"); r.Method == http.MethodOptions && origin != "" && method != "" {
			h.Add("Vary", "Access-Control-Request-Method, Access-Control-Request-Headers")
			methods := s.apiMethods(r)
			if !listed || !slices.Contains(methods, method) || !corsHeadersAllowed(r.Header.Values("Access-Control-Request-Headers")) {
				s.refuseCrossOrigin(w, r, "preflight for "+method)
				return
			}
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Methods", strings.Join(methods, ", "))
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", corsMaxAge)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		switch {
		case listed:
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		case origin != "" && r.Method != http.MethodGet && r.Method != http.MethodHead:
			s.refuseCrossOrigin(w, r, r.Method)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuseCrossOrigin answers 403 problem+json, without CORS headers, and
// logs one line: the request goes no further.
func (s *server) refuseCrossOrigin(w http.ResponseWriter, r *http.Request, what string) {
	writeProblem(w, r, errCrossOrigin)
	s.log.Info("cross-origin request refused", "request", what, "origin", r.Header.Get("Origin"),
		"status", http.StatusForbidden, "correlation_id", recordOf(r).correlationID)
}

// apiMethods returns the methods the API serves at the request's path; none
// outside /api/ (the rotate timer's invocation is the host's, not a
// browser's).
func (s *server) apiMethods(r *http.Request) []string {
	if !strings.HasPrefix(r.URL.Path, "/api/") {
		return nil
	}
	_, path := s.paths.Handler(r)
	return s.allows[path]
}

// corsHeadersAllowed reports whether every header a preflight announces is
// one the API reads.
func corsHeadersAllowed(values []string) bool {
	for _, v := range values {
		for _, name := range strings.Split(v, ",") {
			if name = strings.ToLower(strings.TrimSpace(name)); name != "" && !slices.Contains(corsRequestHeaders, name) {
				return false
			}
		}
	}
	return true
}
