package httpapi

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/credvault/credvault/internal/identity"
)

// openAPIDocument is the API's OpenAPI 3.1 document, written by hand and
// checked against the routes and every response the handler tests see.
//
//go:embed openapi.json
var openAPIDocument []byte

// openAPIETag is the document's entity tag: it changes only with the build.
var openAPIETag = func() string {
	sum := sha256.Sum256(openAPIDocument)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}()

// OpenAPI returns the API's OpenAPI 3.1 document. The slice is the caller's.
func OpenAPI() []byte { return append([]byte(nil), openAPIDocument...) }

// openapi answers GET /api/openapi.json: no authentication, cacheable, and
// 304 to a conditional request that names the current ETag.
func (s *server) openapi(w http.ResponseWriter, r *http.Request, _ identity.Principal) error {
	h := w.Header()
	h.Set("Cache-Control", "public, max-age=3600")
	h.Set("ETag", openAPIETag)
	if etagMatches(r.Header.Get("If-None-Match"), openAPIETag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(openAPIDocument)
	return nil
}

// etagMatches reports whether an If-None-Match list names etag (weak
// comparison) or is "*".
func etagMatches(list, etag string) bool {
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}
