package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/credvault/credvault/internal/cmk"
	"github.com/credvault/credvault/internal/cmk/kvfake"
	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/emulators"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/azureblob"
	"github.com/credvault/credvault/internal/store/cosmos"
	"github.com/credvault/credvault/internal/telemetry/appinsights/aitest"
)

// testEnv is a running credvault over a data dir, as `make run` wires it,
// or, with CREDVAULT_TEST_BACKENDS=azure, over the Azure adapters pointed at
// Azurite, the Cosmos DB emulator and the Key Vault fake.
type testEnv struct {
	t    testing.TB
	dir  string
	env  map[string]string
	deps deps
	kv   *kvfake.Vault // the Key Vault fake, in azure mode
	kid  string        // the fake CMK's current key id
	app  *app
	srv  *httptest.Server
	logs *syncBuffer
	// ingest stands in for Application Insights' ingestion endpoint; what
	// it receives is checked with the logs and the audit trail for leaks.
	ingest   *aitest.Server
	canaries canaries
	contract *contractLog // exchanges checked against the OpenAPI document (contract_test.go)
}

// azureMode reports whether the suite runs on the Azure adapters.
func azureMode() bool { return os.Getenv("CREDVAULT_TEST_BACKENDS") == "azure" }

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
func start(t testing.TB, settings ...string) *testEnv {
	t.Helper()
	return startWith(t, azureMode(), settings...)
}

// startWith starts credvault on the embedded backends or, when azure, on
// the Azure adapters against the emulators and a Key Vault fake.
func startWith(t testing.TB, azure bool, settings ...string) *testEnv {
	t.Helper()
	return startPrepared(t, azure, nil, settings...)
}

// startPrepared is startWith with a hook that changes the environment or
// the injected dependencies before the service opens.
func startPrepared(t testing.TB, azure bool, prepare func(e *testEnv), settings ...string) *testEnv {
	t.Helper()
	e := &testEnv{t: t, dir: t.TempDir(), env: map[string]string{}, logs: &syncBuffer{}}
	for i := 0; i+1 < len(settings); i += 2 {
		e.env[settings[i]] = settings[i+1]
	}
	e.env["CREDVAULT_DATA_DIR"] = e.dir
	if _, set := e.env["APPLICATIONINSIGHTS_CONNECTION_STRING"]; !set {
		e.ingest = aitest.New(t)
		e.env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = e.ingest.ConnectionString()
	}
	if azure {
		e.useAzure()
	}
	if prepare != nil {
		prepare(e)
	}
	e.open()
	return e
}

// useAzure points the configuration at the emulators and a Key Vault fake,
// with containers (ciphertext, audit) and a database of the test's own.
func (e *testEnv) useAzure() {
	e.kv = kvfake.New(e.t, kvfake.Options{})
	e.kid = e.kv.CreateKey("credvault-cmk")
	name := "t" + strings.ToLower(strings.ReplaceAll(randomName(), "-", ""))
	for k, v := range map[string]string{
		"CREDVAULT_KEYVAULT_URL":           e.kv.URL(),
		"CREDVAULT_KEY_NAME":               "credvault-cmk",
		"CREDVAULT_BLOB_CONNECTION_STRING": emulators.Blob(e.t),
		"CREDVAULT_BLOB_CONTAINER":         name,
		"CREDVAULT_COSMOS_ENDPOINT":        emulators.Cosmos(e.t),
		"CREDVAULT_COSMOS_KEY":             emulators.CosmosKey,
		"CREDVAULT_COSMOS_DATABASE":        name,
		"CREDVAULT_AUDIT_CONTAINER":        name + "-audit",
		"CREDVAULT_CREATE_CONTAINERS":      "true",
	} {
		if _, set := e.env[k]; !set {
			e.env[k] = v
		}
	}
	e.deps = deps{cred: e.kv.Credential(), keyVaultClient: e.kv.ClientOptions()}
}

func randomName() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// setCMKEnabled enables or disables the CMK's current version, as a
// customer revoking the key would.
func (e *testEnv) setCMKEnabled(enabled bool) {
	e.t.Helper()
	var err error
	if e.kv != nil {
		err = e.kv.SetEnabled(e.kid, enabled)
	} else {
		err = e.app.localCMK.SetEnabled(e.app.localCMK.Current(), enabled)
	}
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *testEnv) getenv(k string) string { return e.env[k] }

func (e *testEnv) open() {
	e.t.Helper()
	cfg, err := config.Load(e.getenv)
	if err != nil {
		e.t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if e.app, err = openAppWith(cfg, log, e.deps); err != nil {
		e.t.Fatal(err)
	}
	if e.kv != nil { // the suite must really run on the Azure adapters
		_, blobOK := e.app.blobs.(*azureblob.Blobs)
		_, metaOK := e.app.meta.(*cosmos.Metadata)
		if _, kvOK := e.app.cmk.(*cmk.KeyVault); !blobOK || !metaOK || !kvOK {
			e.t.Fatalf("azure mode wired %T, %T, %T", e.app.blobs, e.app.meta, e.app.cmk)
		}
	}
	e.srv = httptest.NewServer(e.record(e.app.handler))
	e.t.Cleanup(e.close)
}

// close stops the service (draining its audit trail and flushing its
// telemetry), then checks that nothing it emitted leaks a canary.
func (e *testEnv) close() {
	if e.srv != nil {
		e.srv.Close()
		e.noteKeys()
		e.app.close()
		e.srv = nil
		e.checkEmitted()
		e.checkContract()
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
	e.canaries.noteUser(user)
	e.canaries.add("a bearer token", tok)
	return tok
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
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
	e.canaries.noteRequest(tok, body)
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

func wantStatus(t testing.TB, what string, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("%s: status = %d, want %d (body %s)", what, r.status, want, r.body)
	}
}

// wantProblem checks a problem+json answer with a correlation id.
func wantProblem(t testing.TB, what string, r response, want int) {
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

// atRest returns everything the service keeps: the data dir's files, every
// blob and every metadata document (body and ETag), by a readable key.
func (e *testEnv) atRest() map[string][]byte {
	e.t.Helper()
	ctx := context.Background()
	out := map[string][]byte{}
	filepath.WalkDir(e.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.HasSuffix(p, "metadata.db") {
			if b, err := os.ReadFile(p); err == nil {
				out["file:"+p] = b
			}
		}
		return nil
	})
	for _, name := range e.blobNames() {
		b, err := e.app.blobs.Read(ctx, name)
		if err != nil {
			e.t.Fatal(err)
		}
		out["blob:"+name] = b
	}
	for _, kind := range []string{store.KindSecret, store.KindKeyring, store.KindDomain, store.KindDeployment} {
		cont := ""
		for {
			p, err := e.app.meta.List(ctx, store.Query{Kind: kind, Limit: 1000, Continuation: cont})
			if err != nil {
				e.t.Fatal(err)
			}
			for _, it := range p.Items {
				out["meta:"+it.Partition+"/"+it.ID] = append([]byte(it.ETag+"\n"), it.Body...)
			}
			if cont = p.Continuation; cont == "" {
				break
			}
		}
	}
	return out
}

// blobNames lists every ciphertext blob through the port.
func (e *testEnv) blobNames() []string {
	e.t.Helper()
	var out []string
	cont := ""
	for {
		p, err := e.app.blobs.List(context.Background(), "", cont, 1000)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, b := range p.Blobs {
			out = append(out, b.Name)
		}
		if cont = p.Continuation; cont == "" {
			return out
		}
	}
}

func TestMain(m *testing.M) { emulators.Main(m) }
