package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/credvault/credvault/internal/identity"
)

// FuzzPutBody sends arbitrary bodies (and Content-Types) to PUT
// /api/credentials/x with a valid token. The API must never panic or answer
// 5xx, and every answer but a success must be problem+json.
func FuzzPutBody(f *testing.F) {
	e := newAPIEnv(f)
	tok := e.token(f, identity.CredentialsWrite)
	for _, c := range readRequestCases(f) {
		body := e.expand(f, c.body)
		if c.method != "PUT" || len(body) > 4096 {
			continue // big bodies are covered by the request files; they slow fuzzing down
		}
		f.Add([]byte(body), c.header.Get("Content-Type"))
	}
	for _, b := range []string{
		`{"value":"ghp_x","contentType":"text/plain","tags":{"env":"dev"}}`,
		`{"value":{"a":[1,2,{"b":null}]}}`,
		`{"value":null}`,
		`{"value":1e999}`,
		`{"value":"\ud800"}`,
		"{\"value\":\"\xff\xfe\"}",
		`{"value":1,"tags":null,"contentType":""}`,
		`{"value":1,"VALUE":2}`,
		`{"value":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
		` {"value" : true } `,
	} {
		f.Add([]byte(b), "application/json")
	}
	f.Add([]byte(`{"value":1}`), "application/json; charset=utf-8")
	f.Add([]byte(`{"value":1}`), "Application/JSON")

	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		req := httptest.NewRequest("PUT", "/api/credentials/x", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		switch {
		case rec.Code >= 500:
			t.Fatalf("PUT %q (Content-Type %q): %d %s", body, contentType, rec.Code, rec.Body)
		case rec.Code == http.StatusOK || rec.Code == http.StatusCreated:
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("PUT %q: %d with Content-Type %q", body, rec.Code, ct)
			}
			var s struct {
				Name    string          `json:"name"`
				Version uint64          `json:"version"`
				Value   json.RawMessage `json:"value"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil || s.Name != "x" || s.Version == 0 || s.Value != nil {
				t.Fatalf("PUT %q: answer %s (%v): want name, version and no value", body, rec.Body, err)
			}
		case rec.Code < 400:
			t.Fatalf("PUT %q: unexpected status %d", body, rec.Code)
		default:
			checkProblem(t, "PUT", rec.Code, rec.Header(), rec.Body.Bytes())
		}
	})
}

var (
	echoedTraceparentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$`)
	echoedCorrelationRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
)

// FuzzTraceHeaders sends arbitrary traceparent and x-correlation-id values.
// The API must never panic, and the echoed headers must always be well
// formed: a valid incoming trace id and correlation id are kept, anything
// else is replaced.
func FuzzTraceHeaders(f *testing.F) {
	e := newAPIEnv(f)
	for _, s := range [][2]string{
		{"", ""},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "req-1"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", ""},
		{" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff\t", "a.b:c_d-e"},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "x"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", strings.Repeat("c", 128)},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", strings.Repeat("c", 129)},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "bad id"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n", "id\n"},
		{"ff-ffffffffffffffffffffffffffffffff-ffffffffffffffff-ff", "x\r\nSet-Cookie: a=b"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\u0085", "é"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, traceparent, correlationID string) {
		for _, path := range []string{"/api/health", "/api/no-such-route"} {
			req := httptest.NewRequest("GET", path, nil)
			req.Header["Traceparent"] = []string{traceparent}
			req.Header["X-Correlation-Id"] = []string{correlationID}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			h := rec.Header()
			tp, cid := h.Get("traceparent"), h.Get("x-correlation-id")
			m := echoedTraceparentRE.FindStringSubmatch(tp)
			if m == nil || m[1] == strings.Repeat("0", 32) || m[2] == strings.Repeat("0", 16) || len(h.Values("traceparent")) != 1 {
				t.Fatalf("traceparent %q in, %q out: not a valid traceparent", traceparent, h.Values("traceparent"))
			}
			if !echoedCorrelationRE.MatchString(cid) || len(h.Values("x-correlation-id")) != 1 {
				t.Fatalf("x-correlation-id %q in, %q out: not a valid correlation id", correlationID, h.Values("x-correlation-id"))
			}
			// A valid incoming trace keeps its trace id and flags.
			if in := echoedTraceparentRE.FindStringSubmatch(strings.TrimSpace(traceparent)); in != nil &&
				in[1] != strings.Repeat("0", 32) && in[2] != strings.Repeat("0", 16) {
				if m[1] != in[1] || m[3] != in[3] {
					t.Fatalf("traceparent %q in, %q out: the trace id or flags changed", traceparent, tp)
				}
			}
			// A valid correlation id is echoed; otherwise it is the trace id.
			if echoedCorrelationRE.MatchString(correlationID) {
				if cid != correlationID {
					t.Fatalf("x-correlation-id %q in, %q out", correlationID, cid)
				}
			} else if cid != m[1] {
				t.Fatalf("x-correlation-id %q in, %q out: want the trace id %s", correlationID, cid, m[1])
			}
			if rec.Code != http.StatusOK {
				checkProblem(t, "GET "+path, rec.Code, h, rec.Body.Bytes())
			}
		}
	})
}
