package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/responses"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/credvault/credvault/internal/httpapi"
)

// The contract: every exchange the handler test suites make with a running
// credvault (through testEnv's server) is validated against the OpenAPI
// document it serves, with the validator library, and a testEnv's close
// fails its test for each exchange the document does not describe.

// notAPI are requests the document rightly does not describe, by method and
// path, with the reason.
var notAPI = []struct{ method, path, why string }{
	{"POST", "/" + httpapi.TimerFunction, "the Functions host's invocation of the rotate timer, not an API route"},
	{"OPTIONS", "", "CORS preflight, answered by the CORS layer before routing; not described in the document"},
}

func skipContract(r *http.Request) bool {
	for _, n := range notAPI {
		if r.Method == n.method && (n.path == "" || r.URL.Path == n.path) {
			return true
		}
	}
	return false
}

// openAPIContract is the document and its validators. The library's model
// renders schemas lazily and is not safe for concurrent use: mu serialises
// every validation.
type openAPIContract struct {
	mu     sync.Mutex
	v      validator.Validator
	model  *v3.Document
	schema schema_validation.SchemaValidator
}

var loadContract = sync.OnceValues(func() (*openAPIContract, error) {
	doc, err := libopenapi.NewDocument(httpapi.OpenAPI())
	if err != nil {
		return nil, err
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		return nil, err
	}
	opts := []config.Option{config.WithFormatAssertions()}
	return &openAPIContract{
		v:      validator.NewValidatorFromV3Model(&m.Model, opts...),
		model:  &m.Model,
		schema: schema_validation.NewSchemaValidator(opts...),
	}, nil
})

// contractLog collects the contract failures of one testEnv's server.
type contractLog struct {
	wg       sync.WaitGroup
	mu       sync.Mutex
	failures []string
	checked  int
}

// record wraps the handler so that each exchange is validated once it is
// served (off the response path, so no test waits on the validator).
func (e *testEnv) record(h http.Handler) http.Handler {
	if _, bench := e.t.(*testing.B); bench {
		return h // benchmarks measure the handler, not the validator
	}
	if e.contract == nil {
		e.contract = &contractLog{}
	}
	log := e.contract
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if skipContract(r) {
			h.ServeHTTP(w, r)
			return
		}
		var reqBody bytes.Buffer
		if r.Body != nil {
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.TeeReader(r.Body, &reqBody), r.Body}
		}
		rw := &recordingWriter{ResponseWriter: w}
		h.ServeHTTP(rw, r)
		if rw.header == nil {
			rw.WriteHeader(http.StatusOK)
		}
		req := r.Clone(r.Context())
		req.Body = io.NopCloser(bytes.NewReader(reqBody.Bytes()))
		resp := &http.Response{StatusCode: rw.status, Header: rw.header, Request: req}
		body := rw.body.Bytes()
		log.wg.Go(func() {
			resp.Body = io.NopCloser(bytes.NewReader(body))
			req.Body = io.NopCloser(bytes.NewReader(reqBody.Bytes()))
			fails := checkExchange(req, resp, body)
			log.mu.Lock()
			defer log.mu.Unlock()
			log.checked++
			log.failures = append(log.failures, fails...)
		})
	})
}

// checkContract reports every exchange that broke the document.
func (e *testEnv) checkContract() {
	e.t.Helper()
	if e.contract == nil {
		return
	}
	e.contract.wg.Wait()
	e.contract.mu.Lock()
	defer e.contract.mu.Unlock()
	for _, f := range e.contract.failures {
		e.t.Errorf("OpenAPI contract: %s", f)
	}
	e.contract.failures = nil
}

type recordingWriter struct {
	http.ResponseWriter
	status int
	header http.Header
	body   bytes.Buffer
}

func (w *recordingWriter) WriteHeader(code int) {
	if w.header == nil {
		w.status, w.header = code, w.ResponseWriter.Header().Clone()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(b []byte) (int, error) {
	if w.header == nil {
		w.WriteHeader(http.StatusOK)
	}
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *recordingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// checkExchange validates one exchange: the response always (its status
// must be documented, with its headers and body); the request when the
// server accepted it (a request refused on purpose is invalid by design,
// but its refusal must be documented). A path or method the document does
// not describe must be answered with the document's RouteNotFound or
// MethodNotAllowed problem.
func checkExchange(req *http.Request, resp *http.Response, body []byte) []string {
	c, err := loadContract()
	if err != nil {
		return []string{"load openapi.json: " + err.Error()}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	what := fmt.Sprintf("%s %s → %d", req.Method, req.URL.RequestURI(), resp.StatusCode)
	var out []string
	_, errs := c.v.ValidateHttpResponse(req, resp)
	for _, ve := range errs {
		switch {
		case ve.IsPathMissingError() && resp.StatusCode == http.StatusNotFound:
			out = append(out, c.checkCatchAll(what, "RouteNotFound", req, resp, body)...)
			return out
		case (ve.IsPathMissingError() || ve.IsOperationMissingError()) && resp.StatusCode == http.StatusMethodNotAllowed:
			out = append(out, c.checkCatchAll(what, "MethodNotAllowed", req, resp, body)...)
			return out
		}
	}
	out = append(out, describe(what, "response", errs)...)
	if resp.StatusCode < 400 {
		_, errs := c.v.ValidateHttpRequestSync(req)
		out = append(out, describe(what, "accepted request", errs)...)
	}
	return out
}

// checkCatchAll validates an answer to an undescribed path or method against
// the named response of the document's components.
func (c *openAPIContract) checkCatchAll(what, name string, req *http.Request, resp *http.Response, body []byte) []string {
	spec := c.model.Components.Responses.GetOrZero(name)
	if spec == nil {
		return []string{what + ": openapi.json has no components.responses." + name}
	}
	var out []string
	_, errs := responses.ValidateResponseHeaders(req, resp, spec.Headers, req.URL.Path, strconv.Itoa(resp.StatusCode))
	out = append(out, describe(what, name+" headers", errs)...)
	ct := resp.Header.Get("Content-Type")
	media := spec.Content.GetOrZero(ct)
	if media == nil || media.Schema == nil {
		return append(out, fmt.Sprintf("%s: Content-Type %q is not %s's", what, ct, name))
	}
	_, errs = c.schema.ValidateSchemaBytes(media.Schema.Schema(), body)
	return append(out, describe(what, name+" body", errs)...)
}

func describe(what, part string, errs []*liberrors.ValidationError) []string {
	var out []string
	for _, ve := range errs {
		msg := ve.Message + ": " + ve.Reason
		for _, s := range ve.SchemaValidationErrors {
			msg += "; " + s.Reason
			if s.FieldPath != "" {
				msg += " at " + s.FieldPath
			}
		}
		out = append(out, fmt.Sprintf("%s: %s: %s", what, part, strings.TrimSpace(msg)))
	}
	return out
}

// TestOpenAPIDocumentServed fetches the document the way a frontend's
// tooling would: no token, cacheable, revalidated with its ETag. Both
// answers go through the contract check like every other.
func TestOpenAPIDocumentServed(t *testing.T) {
	e := start(t)
	r := e.do("GET", "/api/openapi.json", "", nil)
	wantStatus(t, "GET /api/openapi.json without a token", r, http.StatusOK)
	if !bytes.Equal(r.body, httpapi.OpenAPI()) {
		t.Fatal("GET /api/openapi.json: the body is not the embedded document")
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	etag := r.header.Get("ETag")
	again := e.do("GET", "/api/openapi.json", "", nil, "If-None-Match", etag)
	wantStatus(t, "GET /api/openapi.json with If-None-Match", again, http.StatusNotModified)
	if c, err := loadContract(); err != nil || c.model.Info == nil {
		t.Fatalf("the served document does not load: %v", err)
	}
}
