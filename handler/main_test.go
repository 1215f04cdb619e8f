package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/identity"
)

// testEnv is a running credvault over a data dir, as `make run` wires it.
type testEnv struct {
	t    *testing.T
	dir  string
	env  map[string]string
	app  *app
	srv  *httptest.Server
	logs *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs credvault on a fresh data dir; settings override the
// environment it reads.
func start(t *testing.T, settings ...string) *testEnv {
	t.Helper()
	e := &testEnv{t: t, dir: t.TempDir(), env: map[string]string{}, logs: &syncBuffer{}}
	for i := 0; i+1 < len(settings); i += 2 {
		e.env[settings[i]] = settings[i+1]
	}
	e.env["CREDVAULT_DATA_DIR"] = e.dir
	e.open()
	return e
}

func (e *testEnv) getenv(k string) string {
	if v, ok := e.env[k]; ok {
		return v
	}
	if strings.HasPrefix(k, "CREDVAULT_") {
		return os.Getenv(k) // lets CI point the suite at other backends
	}
	return ""
}

func (e *testEnv) open() {
	e.t.Helper()
	cfg, err := config.Load(e.getenv)
	if err != nil {
		e.t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if e.app, err = openApp(cfg, log); err != nil {
		e.t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.app.handler)
	e.t.Cleanup(e.close)
}

func (e *testEnv) close() {
	if e.srv != nil {
		e.srv.Close()
		e.app.close()
		e.srv = nil
	}
}

// restart closes and reopens the service over the same data dir.
func (e *testEnv) restart() {
	e.t.Helper()
	e.close()
	e.open()
}

// token mints a dev token for user with roles (default: read, write, delete).
func (e *testEnv) token(user string, roles ...identity.Role) string {
	e.t.Helper()
	if len(roles) == 0 {
		roles = []identity.Role{identity.CredentialsRead, identity.CredentialsWrite, identity.CredentialsDelete}
	}
	tok, err := e.app.dev.Mint(user, roles, time.Hour, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// do sends a request; headers are name, value pairs.
func (e *testEnv) do(method, path, tok string, body any, headers ...string) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func wantStatus(t *testing.T, what string, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("%s: status = %d, want %d (body %s)", what, r.status, want, r.body)
	}
}

// wantProblem checks a problem+json answer with a correlation id.
func wantProblem(t *testing.T, what string, r response, want int) {
	t.Helper()
	wantStatus(t, what, r, want)
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("%s: Content-Type = %q, want application/problem+json", what, ct)
	}
	p := r.json(t)
	if p["status"] != float64(want) || p["title"] == "" || p["correlationId"] != r.header.Get("x-correlation-id") {
		t.Fatalf("%s: problem body %s lacks status, title or the correlation id %q", what, r.body, r.header.Get("x-correlation-id"))
	}
}

// files returns every regular file under the data dir with its bytes.
func (e *testEnv) files() map[string][]byte {
	e.t.Helper()
	out := map[string][]byte{}
	filepath.WalkDir(e.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, err := os.ReadFile(p); err == nil {
				out[p] = b
			}
		}
		return nil
	})
	return out
}

// blobFiles returns the ciphertext files.
func (e *testEnv) blobFiles() []string {
	e.t.Helper()
	var out []string
	for p := range e.files() {
		if strings.HasPrefix(p, filepath.Join(e.dir, "blobs")+string(filepath.Separator)) && !strings.Contains(filepath.Base(p), ".tmp") && !strings.HasPrefix(filepath.Base(p), ".") {
			out = append(out, p)
		}
	}
	return out
}
