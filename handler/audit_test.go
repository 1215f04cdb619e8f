package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/audit/auditblob"
	"github.com/credvault/credvault/internal/audit/auditfile"
	"github.com/credvault/credvault/internal/identity"
)

// auditLine is what the tests read back from a trail record.
type auditLine struct {
	Op          string   `json:"op"`
	Outcome     string   `json:"outcome"`
	Status      int      `json:"status"`
	Principal   string   `json:"principal"`
	Roles       []string `json:"roles"`
	Correlation string   `json:"correlation"`
	Version     uint64   `json:"version"`
	KEK         uint32   `json:"kek"`
	CMK         string   `json:"cmk"`
	Owner       string   `json:"owner"`
	Caller      string   `json:"caller"`
	Name        string   `json:"name"`
}

// auditSegments reads every segment of the trail through the store's own
// reader (files locally, the audit container in azure mode).
func (e *testEnv) auditSegments() map[string][]byte {
	e.t.Helper()
	out, err := e.readAuditSegments()
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *testEnv) readAuditSegments() (map[string][]byte, error) {
	ctx := context.Background()
	r, ok := e.app.auditStore.(audit.Reader)
	if !ok {
		return nil, fmt.Errorf("the audit store %T cannot be read back", e.app.auditStore)
	}
	names, err := r.Segments(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, n := range names {
		rc, err := r.Open(ctx, n)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
		out[n] = b
	}
	return out, nil
}

// auditRecords returns every record of the trail.
func (e *testEnv) auditRecords() []auditLine {
	e.t.Helper()
	var out []auditLine
	for name, b := range e.auditSegments() {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l auditLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				e.t.Fatalf("segment %s: a record is not JSON: %v", name, err)
			}
			out = append(out, l)
		}
	}
	return out
}

var correlations atomic.Int64

// call sends a request with a correlation id of its own and returns both.
func (e *testEnv) call(method, path, tok string, body any) (response, string) {
	e.t.Helper()
	id := fmt.Sprintf("audit-test-%d", correlations.Add(1))
	return e.do(method, path, tok, body, "x-correlation-id", id), id
}

// TestAuditTrailIsComplete: a scripted session of reads, writes, denials and
// deletes leaves exactly one record per request, with the right operation,
// outcome and status, hashes instead of ids, and the keys that were used.
func TestAuditTrailIsComplete(t *testing.T) {
	e := start(t)
	alice, bob := e.token("alice"), e.token("bob")
	readOnly := e.token("alice", identity.CredentialsRead)
	admin := e.token("root", identity.CredentialsAdmin)

	type want struct {
		op, outcome string
		status      int
	}
	script := []struct {
		method, path, tok string
		body              any
		want              want
	}{
		{"PUT", "/api/credentials/github-token", alice, map[string]any{"value": "v1"}, want{audit.OpSecretWrite, audit.Success, 201}},
		{"PUT", "/api/credentials/github-token", alice, map[string]any{"value": "v2"}, want{audit.OpSecretWrite, audit.Success, 200}},
		{"GET", "/api/credentials/github-token", alice, nil, want{audit.OpSecretRead, audit.Success, 200}},
		{"GET", "/api/credentials/github-token?version=1", alice, nil, want{audit.OpSecretRead, audit.Success, 200}},
		{"GET", "/api/credentials/github-token", bob, nil, want{audit.OpSecretRead, audit.Failure, 404}},
		{"GET", "/api/credentials/missing-one", alice, nil, want{audit.OpSecretRead, audit.Failure, 404}},
		{"GET", "/api/credentials/github-token", "", nil, want{audit.OpAuthenticate, audit.Denied, 401}},
		{"GET", "/api/credentials/github-token", "not-a-token", nil, want{audit.OpAuthenticate, audit.Denied, 401}},
		{"PUT", "/api/credentials/github-token", readOnly, map[string]any{"value": "v3"}, want{audit.OpAuthorize, audit.Denied, 403}},
		{"GET", "/api/credentials", alice, nil, want{audit.OpSecretList, audit.Success, 200}},
		{"GET", "/api/credentials/github-token/versions", alice, nil, want{audit.OpSecretVersions, audit.Success, 200}},
		{"DELETE", "/api/credentials/github-token", alice, nil, want{audit.OpSecretDelete, audit.Success, 204}},
		{"GET", "/api/credentials/github-token", alice, nil, want{audit.OpSecretRead, audit.Failure, 404}},
		{"POST", "/api/credentials/github-token/restore", alice, nil, want{audit.OpSecretRestore, audit.Success, 200}},
		{"DELETE", "/api/credentials/github-token?purge=true", alice, nil, want{audit.OpSecretPurge, audit.Denied, 403}},
		{"GET", "/api/admin/credentials", admin, nil, want{audit.OpAdminList, audit.Success, 200}},
		{"PUT", "/api/credentials/bad%20name", alice, map[string]any{"value": "x"}, want{audit.OpSecretWrite, audit.Failure, 400}},
		{"GET", "/api/health", "", nil, want{}}, // not audited: no caller, nothing read
	}
	ids := make([]string, len(script))
	for i, s := range script {
		var r response
		r, ids[i] = e.call(s.method, s.path, s.tok, s.body)
		if s.want.status != 0 {
			wantStatus(t, s.method+" "+s.path, r, s.want.status)
		}
	}

	byID := map[string][]auditLine{}
	for _, l := range e.auditRecords() {
		byID[l.Correlation] = append(byID[l.Correlation], l)
	}
	for i, s := range script {
		got := byID[ids[i]]
		if s.want.op == "" {
			if len(got) != 0 {
				t.Errorf("%s %s: %d audit records, want none", s.method, s.path, len(got))
			}
			continue
		}
		// CMK calls a request causes are recorded under its trace, not its
		// correlation id: one record per request here.
		if len(got) != 1 {
			t.Errorf("%s %s: %d audit records, want 1: %+v", s.method, s.path, len(got), got)
			continue
		}
		l := got[0]
		if l.Op != s.want.op || l.Outcome != s.want.outcome || l.Status != s.want.status {
			t.Errorf("%s %s: record %s/%s/%d, want %s/%s/%d", s.method, s.path, l.Op, l.Outcome, l.Status, s.want.op, s.want.outcome, s.want.status)
		}
		if s.tok == alice && s.want.outcome != audit.Denied {
			if l.Principal != "user" || len(l.Owner) != 32 || len(l.Caller) != 32 || len(l.Roles) == 0 {
				t.Errorf("%s %s: record %+v lacks the principal type, roles or the owner and caller hashes", s.method, s.path, l)
			}
		}
		if strings.Contains(s.path, "github-token") && s.want.op != audit.OpAuthenticate && s.want.op != audit.OpAuthorize && len(l.Name) != 32 {
			t.Errorf("%s %s: record has no name hash: %+v", s.method, s.path, l)
		}
		if s.want.op == audit.OpSecretRead && s.want.status == 200 && (l.Version == 0 || l.KEK == 0 || l.CMK == "") {
			t.Errorf("%s %s: a read's record lacks the secret, KEK or CMK version: %+v", s.method, s.path, l)
		}
	}
	// The same owner and name give the same hashes; another owner another.
	first, other := byID[ids[0]][0], byID[ids[4]]
	if byID[ids[2]][0].Name != first.Name || byID[ids[2]][0].Owner != first.Owner {
		t.Error("two records of one owner's secret carry different hashes")
	}
	if len(other) == 1 && other[0].Owner == first.Owner {
		t.Error("another owner's record carries alice's owner hash")
	}

	// audit-hash gives an investigator the same hashes, and is audited.
	auditor := e.token("investigator", identity.AuditRead)
	r, id := e.call("POST", "/api/admin/audit-hash", auditor, map[string]any{"owner": ownerOf("alice"), "name": "github-token"})
	wantStatus(t, "audit-hash", r, 200)
	h := r.json(t)
	if h["owner"] != first.Owner || h["name"] != first.Name {
		t.Fatalf("audit-hash = %s, want owner %s and name %s as the trail holds them", r.body, first.Owner, first.Name)
	}
	recs := 0
	for _, l := range e.auditRecords() {
		if l.Correlation == id && l.Op == audit.OpAuditHash && l.Outcome == audit.Success {
			recs++
		}
	}
	if recs != 1 {
		t.Fatalf("the audit-hash call left %d records, want 1", recs)
	}
	wantProblem(t, "audit-hash without Audit.Read", e.do("POST", "/api/admin/audit-hash", alice, map[string]any{"name": "x"}), 403)
	wantProblem(t, "audit-hash of nothing", e.do("POST", "/api/admin/audit-hash", auditor, map[string]any{}), 400)
}

// TestAuditVerify: `handler audit verify` passes on the trail a session
// leaves, then fails after one record is edited, one removed, or the last
// one truncated.
func TestAuditVerify(t *testing.T) {
	if azureMode() {
		t.Skip("tampering is tested on the files; the append-blob store passes the same contract (internal/audit/auditblob)")
	}
	e := start(t)
	alice := e.token("alice")
	for i := range 5 {
		wantStatus(t, "put", e.do("PUT", fmt.Sprintf("/api/credentials/s%d", i), alice, map[string]any{"value": i}), 201)
		wantStatus(t, "get", e.do("GET", fmt.Sprintf("/api/credentials/s%d", i), alice, nil), 200)
	}
	e.close() // drains the trail
	verify := func() (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), []string{"audit", "verify"}, e.getenv, &out)
		return out.String(), err
	}
	if out, err := verify(); err != nil {
		t.Fatalf("audit verify on an intact trail: %v\n%s", err, out)
	}

	segs, _ := filepath.Glob(filepath.Join(e.dir, "audit", "*", "*", "*", "*", "*.jsonl"))
	sort.Strings(segs)
	if len(segs) == 0 {
		t.Fatal("no audit segment in the data dir")
	}
	last := segs[len(segs)-1]
	orig, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(orig, []byte("\n"))
	lines = lines[:len(lines)-1] // the empty tail after the last newline
	if len(lines) < 4 {
		t.Fatalf("%d records in the last segment, want several", len(lines))
	}
	for _, tc := range []struct {
		name   string
		tamper func() []byte
	}{
		{"a record edited", func() []byte {
			c := slices.Clone(lines)
			c[2] = bytes.Replace(c[2], []byte(`"outcome":"success"`), []byte(`"outcome":"failure"`), 1)
			if bytes.Equal(c[2], lines[2]) {
				c[2] = bytes.Replace(c[2], []byte(`"seq":`), []byte(`"seq": `), 1)
			}
			return bytes.Join(c, nil)
		}},
		{"a record removed", func() []byte { return bytes.Join(slices.Delete(slices.Clone(lines), 2, 3), nil) }},
		{"the last record truncated", func() []byte { return orig[:len(orig)-10] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(last, tc.tamper(), 0o600); err != nil {
				t.Fatal(err)
			}
			defer os.WriteFile(last, orig, 0o600)
			out, err := verify()
			if err == nil {
				t.Fatalf("audit verify passed a trail with %s:\n%s", tc.name, out)
			}
			if !strings.Contains(out, "PROBLEM") {
				t.Fatalf("audit verify failed without naming the problem:\n%s", out)
			}
		})
	}
	if out, err := verify(); err != nil {
		t.Fatalf("audit verify after the trail was put back: %v\n%s", err, out)
	}
}

// failingStore is the audit trail's file store with a switch: on, every
// append fails as a read-only file system would. (The tests run as root, for
// whom an open segment file stays writable whatever its directory's mode.)
type failingStore struct {
	*auditfile.Store
	fail atomic.Bool
}

func (s *failingStore) Append(ctx context.Context, segment string, data []byte) error {
	if s.fail.Load() {
		return fmt.Errorf("append %s: %w", segment, os.ErrPermission)
	}
	return s.Store.Append(ctx, segment, data)
}

// TestAuditFailClosed: with the trail failing, closed mode answers 503 and
// releases no value and acknowledges no write; open mode serves both and
// counts the failures.
func TestAuditFailClosed(t *testing.T) {
	for _, mode := range []string{"closed", "open"} {
		t.Run(mode, func(t *testing.T) {
			e, fail := startFailingAudit(t, mode)
			alice := e.token("alice")
			wantStatus(t, "put", e.do("PUT", "/api/credentials/db-password", alice, map[string]any{"value": "hunter2-canary"}), 201)

			fail(true)
			get := e.do("GET", "/api/credentials/db-password", alice, nil)
			put := e.do("PUT", "/api/credentials/db-password", alice, map[string]any{"value": "second-value"})
			if mode == "closed" {
				wantProblem(t, "GET with the trail down", get, http.StatusServiceUnavailable)
				wantProblem(t, "PUT with the trail down", put, http.StatusServiceUnavailable)
				for _, r := range []response{get, put} {
					if bytes.Contains(r.body, []byte("hunter2")) || r.header.Get("ETag") != "" || r.header.Get("Location") != "" {
						t.Fatalf("a 503 released something: %s %v", r.body, r.header)
					}
				}
			} else {
				wantStatus(t, "GET with the trail down, open mode", get, 200)
				wantStatus(t, "PUT with the trail down, open mode", put, 200)
				if !bytes.Contains(get.body, []byte("hunter2-canary")) {
					t.Fatalf("open mode GET = %s", get.body)
				}
			}
			// Open mode counts in the writer, after the request returned.
			for deadline := time.Now().Add(30 * time.Second); e.app.trail.Failures() == 0; {
				if time.Now().After(deadline) {
					t.Fatal("the trail's failures were not counted")
				}
				time.Sleep(10 * time.Millisecond)
			}
			fail(false)
			wantStatus(t, "GET once the trail is back", e.do("GET", "/api/credentials/db-password", alice, nil), 200)
		})
	}
}

// startFailingAudit starts credvault in audit mode with a trail whose
// writes can be made to fail: on the embedded backends a store that fails
// as a read-only file system; in azure mode the append blobs of Azurite
// behind a proxy that can answer 503 to everything.
func startFailingAudit(t *testing.T, mode string) (*testEnv, func(bool)) {
	t.Helper()
	var fail func(bool)
	e := startPrepared(t, azureMode(), func(e *testEnv) {
		if !azureMode() {
			s, err := auditfile.New(filepath.Join(e.dir, "audit"))
			if err != nil {
				t.Fatal(err)
			}
			fs := &failingStore{Store: s}
			e.deps.auditStore, fail = fs, fs.fail.Store
			return
		}
		connStr, down := unavailableProxy(t, e.env["CREDVAULT_BLOB_CONNECTION_STRING"])
		co := &azblob.ClientOptions{}
		co.Retry.MaxRetries, co.Retry.RetryDelay = 1, time.Millisecond
		s, err := auditblob.NewFromConnectionString(connStr, "audit"+randomName(), auditblob.Options{Client: co})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.EnsureContainer(context.Background()); err != nil {
			t.Fatal(err)
		}
		e.deps.auditStore, fail = s, down.Store
	}, "CREDVAULT_AUDIT_MODE", mode)
	return e, fail
}

// unavailableProxy puts a reverse proxy in front of the blob endpoint of an
// Azurite connection string; while down, it answers 503 to every request.
func unavailableProxy(t *testing.T, connStr string) (string, *atomic.Bool) {
	t.Helper()
	var endpoint string
	for _, kv := range strings.Split(connStr, ";") {
		if v, ok := strings.CutPrefix(kv, "BlobEndpoint="); ok {
			endpoint = v
		}
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		t.Fatalf("no BlobEndpoint in the emulator's connection string")
	}
	var down atomic.Bool
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.Header().Set("x-ms-error-code", "ServerBusy")
			http.Error(w, "The server is busy.", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.Replace(connStr, "BlobEndpoint="+u.Scheme+"://"+u.Host, "BlobEndpoint="+srv.URL, 1), &down
}
