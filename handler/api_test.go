package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/credvault/credvault/internal/identity"
)

func TestRoundTrip(t *testing.T) {
	e := start(t)
	alice := e.token("alice")
	value := `{"token":"ghp_roundtrip_value","scopes":["repo"],"n":1.5e3}`
	put := e.do("PUT", "/api/credentials/github-token", alice,
		`{"value":`+value+`,"contentType":"application/vnd.github","tags":{"env":"dev"}}`)
	wantStatus(t, "PUT new", put, http.StatusCreated)
	etag := put.header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) || put.header.Get("Location") != "/api/credentials/github-token?version=1" {
		t.Fatalf("PUT new: ETag %q, Location %q", etag, put.header.Get("Location"))
	}
	if strings.Contains(string(put.body), "ghp_") {
		t.Fatalf("PUT answered the value back: %s", put.body)
	}

	get := e.do("GET", "/api/credentials/github-token", alice, nil)
	wantStatus(t, "GET", get, http.StatusOK)
	if got := get.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("GET: Cache-Control = %q, want no-store", got)
	}
	if got := get.header.Get("ETag"); got != etag {
		t.Errorf("GET: ETag = %q, want the PUT's %q", got, etag)
	}
	var sec struct {
		Name, ContentType, CreatedBy string
		Version                      int
		Value                        json_raw `json:"value"`
		Tags                         map[string]string
	}
	decode(t, get.body, &sec)
	if string(sec.Value) != value || sec.Name != "github-token" || sec.Version != 1 || sec.ContentType != "application/vnd.github" || sec.Tags["env"] != "dev" || sec.CreatedBy != "alice" {
		t.Fatalf("GET = %s, want the stored value and metadata", get.body)
	}

	put2 := e.do("PUT", "/api/credentials/github-token", alice, `{"value":"second"}`, "If-Match", etag)
	wantStatus(t, "PUT with current If-Match", put2, http.StatusOK)
	if v1 := e.do("GET", "/api/credentials/github-token?version=1", alice, nil); !strings.Contains(string(v1.body), "ghp_roundtrip_value") {
		t.Fatalf("GET ?version=1 = %s, want the first value", v1.body)
	}
	if latest := e.do("GET", "/api/credentials/github-token", alice, nil); !strings.Contains(string(latest.body), `"value":"second"`) {
		t.Fatalf("GET latest = %s, want version 2", latest.body)
	}
	vs := e.do("GET", "/api/credentials/github-token/versions", alice, nil)
	wantStatus(t, "GET versions", vs, http.StatusOK)
	if n := strings.Count(string(vs.body), `"version"`); n != 2 || strings.Contains(string(vs.body), "second") {
		t.Fatalf("versions = %s, want two entries without values", vs.body)
	}
	list := e.do("GET", "/api/credentials", alice, nil)
	if !strings.Contains(string(list.body), `"name":"github-token"`) || strings.Contains(string(list.body), "second") {
		t.Fatalf("list = %s, want the name and no value", list.body)
	}
}

type json_raw []byte

func (j *json_raw) UnmarshalJSON(b []byte) error { *j = append((*j)[:0], b...); return nil }

func TestAnotherOwnersSecretIsNotFound(t *testing.T) {
	e := start(t)
	alice, bob := e.token("alice"), e.token("bob")
	wantStatus(t, "alice PUT", e.do("PUT", "/api/credentials/shared-name", alice, `{"value":"alice's"}`), http.StatusCreated)
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/credentials/shared-name"},
		{"GET", "/api/credentials/shared-name?version=1"},
		{"GET", "/api/credentials/shared-name/versions"},
		{"DELETE", "/api/credentials/shared-name"},
		{"POST", "/api/credentials/shared-name/restore"},
	} {
		wantProblem(t, "bob "+c.method+" "+c.path, e.do(c.method, c.path, bob, nil), http.StatusNotFound)
	}
	if l := e.do("GET", "/api/credentials", bob, nil); strings.Contains(string(l.body), "shared-name") {
		t.Fatalf("bob's list shows alice's secret: %s", l.body)
	}
	// bob's own secret of the same name is his own.
	wantStatus(t, "bob PUT same name", e.do("PUT", "/api/credentials/shared-name", bob, `{"value":"bob's"}`), http.StatusCreated)
	if g := e.do("GET", "/api/credentials/shared-name", alice, nil); !strings.Contains(string(g.body), "alice's") {
		t.Fatalf("alice GET after bob's PUT = %s", g.body)
	}
}

func TestRolesPerRoute(t *testing.T) {
	e := start(t)
	all := e.token("root", identity.AllRoles()...)
	wantStatus(t, "seed", e.do("PUT", "/api/credentials/s1", all, `{"value":1}`), http.StatusCreated)
	for _, c := range []struct {
		method, path, body string
		needs              identity.Role
	}{
		{"PUT", "/api/credentials/s1", `{"value":2}`, identity.CredentialsWrite},
		{"GET", "/api/credentials/s1", "", identity.CredentialsRead},
		{"GET", "/api/credentials", "", identity.CredentialsRead},
		{"GET", "/api/credentials/s1/versions", "", identity.CredentialsRead},
		{"DELETE", "/api/credentials/s1", "", identity.CredentialsDelete},
		{"POST", "/api/credentials/s1/restore", "", identity.CredentialsDelete},
		{"DELETE", "/api/credentials/s1?purge=true", "", identity.CredentialsAdmin},
		{"GET", "/api/admin/credentials", "", identity.CredentialsAdmin},
		{"POST", "/api/admin/erase", `{"owner":"x/y"}`, identity.CredentialsAdmin},
	} {
		var others []identity.Role
		for _, r := range identity.AllRoles() {
			if r != c.needs {
				others = append(others, r)
			}
		}
		var body any
		if c.body != "" {
			body = c.body
		}
		what := c.method + " " + c.path
		wantProblem(t, what+" without "+string(c.needs), e.do(c.method, c.path, e.token("root", others...), body), http.StatusForbidden)
		r := e.do(c.method, c.path, "", body)
		wantProblem(t, what+" without a token", r, http.StatusUnauthorized)
		if r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s without a token: no WWW-Authenticate", what)
		}
		bad := e.do(c.method, c.path, all[:len(all)-4]+"AAAA", body)
		wantProblem(t, what+" with a forged signature", bad, http.StatusUnauthorized)
		if got := bad.header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
			t.Errorf("%s forged: WWW-Authenticate = %q", what, got)
		}
	}
	if r := e.do("GET", "/api/health", "", nil); r.status != http.StatusOK {
		t.Fatalf("health without a token: %d", r.status)
	}
	if g := e.do("GET", "/api/credentials/s1", all, nil); !strings.Contains(string(g.body), `"value":1`) {
		t.Fatalf("after refused calls the secret changed: %s", g.body)
	}
}

func TestBadRequestsChangeNothing(t *testing.T) {
	e := start(t)
	alice := e.token("alice", identity.AllRoles()...)
	put := e.do("PUT", "/api/credentials/keep", alice, `{"value":"v1"}`)
	wantStatus(t, "seed", put, http.StatusCreated)
	etag := put.header.Get("ETag")
	wantStatus(t, "delete seed", e.do("PUT", "/api/credentials/gone", alice, `{"value":"x"}`), http.StatusCreated)
	wantStatus(t, "delete", e.do("DELETE", "/api/credentials/gone", alice, nil), http.StatusNoContent)
	before := e.atRest()

	big := `{"value":"` + strings.Repeat("a", 64<<10) + `"}`
	huge := `{"value":"` + strings.Repeat("a", 1<<20) + `"}`
	tags := `{"value":1,"tags":{` + strings.TrimSuffix(strings.Repeat(`"k":"v",`, 1), ",")
	for i := range 16 {
		tags += fmt.Sprintf(`,"k%d":"v"`, i)
	}
	tags += `}}`
	for _, c := range []struct {
		name, method, path, body string
		headers                  []string
		want                     int
	}{
		{"bad name", "PUT", "/api/credentials/-bad", `{"value":1}`, nil, 400},
		{"name too long", "PUT", "/api/credentials/" + strings.Repeat("a", 129), `{"value":1}`, nil, 400},
		{"name with a space", "GET", "/api/credentials/a%20b", "", nil, 400},
		{"value over 64 KiB", "PUT", "/api/credentials/keep", big, nil, 413},
		{"body over 1 MiB", "PUT", "/api/credentials/keep", huge, nil, 413},
		{"not JSON content type", "PUT", "/api/credentials/keep", `{"value":1}`, []string{"Content-Type", "text/plain"}, 415},
		{"no content type", "PUT", "/api/credentials/keep", `{"value":1}`, []string{"Content-Type", ""}, 415},
		{"unknown field", "PUT", "/api/credentials/keep", `{"value":1,"owner":"bob"}`, nil, 400},
		{"malformed JSON", "PUT", "/api/credentials/keep", `{"value":`, nil, 400},
		{"trailing data", "PUT", "/api/credentials/keep", `{"value":1} {}`, nil, 400},
		{"not an object", "PUT", "/api/credentials/keep", `[1]`, nil, 400},
		{"no value", "PUT", "/api/credentials/keep", `{"tags":{}}`, nil, 400},
		{"too many tags", "PUT", "/api/credentials/keep", tags, nil, 400},
		{"tag of wrong type", "PUT", "/api/credentials/keep", `{"value":1,"tags":{"a":1}}`, nil, 400},
		{"If-None-Match on existing", "PUT", "/api/credentials/keep", `{"value":2}`, []string{"If-None-Match", "*"}, 412},
		{"If-None-Match not *", "PUT", "/api/credentials/keep", `{"value":2}`, []string{"If-None-Match", etag}, 400},
		{"stale If-Match", "PUT", "/api/credentials/keep", `{"value":2}`, []string{"If-Match", `"stale"`}, 412},
		{"If-Match on missing", "PUT", "/api/credentials/new", `{"value":2}`, []string{"If-Match", etag}, 412},
		{"stale If-Match delete", "DELETE", "/api/credentials/keep", "", []string{"If-Match", `"stale"`}, 412},
		{"put on deleted", "PUT", "/api/credentials/gone", `{"value":2}`, nil, 409},
		{"restore live", "POST", "/api/credentials/keep/restore", "", nil, 409},
		{"version zero", "GET", "/api/credentials/keep?version=0", "", nil, 400},
		{"version not a number", "GET", "/api/credentials/keep?version=x", "", nil, 400},
		{"missing version", "GET", "/api/credentials/keep?version=9", "", nil, 404},
		{"limit zero", "GET", "/api/credentials?limit=0", "", nil, 400},
		{"limit too big", "GET", "/api/credentials?limit=100000", "", nil, 400},
		{"tampered continuation", "GET", "/api/credentials?continuation=%21%21", "", nil, 400},
		{"purge not boolean", "DELETE", "/api/credentials/keep?purge=maybe", "", nil, 400},
		{"erase without owner", "POST", "/api/admin/erase", `{}`, nil, 400},
		{"unknown route", "GET", "/api/nothing", "", nil, 404},
		{"wrong method", "PATCH", "/api/credentials/keep", "", nil, 405},
	} {
		t.Run(c.name, func(t *testing.T) {
			var body any
			if c.body != "" {
				body = c.body
			}
			r := e.do(c.method, c.path, alice, body, c.headers...)
			wantProblem(t, c.name, r, c.want)
			if c.want == 405 && r.header.Get("Allow") == "" {
				t.Errorf("405 without Allow")
			}
		})
	}
	after := e.atRest()
	// The audit trail records the bad requests too: only data must not change.
	for _, m := range []map[string][]byte{before, after} {
		for k := range m {
			if strings.HasPrefix(k, "file:"+filepath.Join(e.dir, "audit")+"/") {
				delete(m, k)
			}
		}
	}
	for k, b := range before {
		if string(after[k]) != string(b) {
			t.Errorf("%s changed after bad requests", k)
		}
	}
	if len(after) != len(before) {
		t.Errorf("things at rest: %d before, %d after bad requests", len(before), len(after))
	}
	if g := e.do("GET", "/api/credentials/keep", alice, nil); g.header.Get("ETag") != etag || !strings.Contains(string(g.body), `"value":"v1"`) {
		t.Fatalf("after bad requests: %s (ETag %s), want v1 with ETag %s", g.body, g.header.Get("ETag"), etag)
	}
}

func TestConcurrentPutsLoseNoVersion(t *testing.T) {
	e := start(t, "CREDVAULT_MAX_VERSIONS", "1000")
	alice := e.token("alice")
	const writers, each = 16, 8
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				r := e.do("PUT", "/api/credentials/hot", alice, fmt.Sprintf(`{"value":"w%d-%d"}`, w, i))
				if r.status != 200 && r.status != 201 {
					t.Errorf("concurrent PUT: %d %s", r.status, r.body)
				}
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for v := 1; v <= writers*each; v++ {
		g := e.do("GET", fmt.Sprintf("/api/credentials/hot?version=%d", v), alice, nil)
		wantStatus(t, fmt.Sprintf("GET version %d", v), g, 200)
		seen[string(g.json(t)["value"].(string))] = true
	}
	if len(seen) != writers*each {
		t.Fatalf("%d distinct values over %d versions, want every write", len(seen), writers*each)
	}
	if g := e.do("GET", fmt.Sprintf("/api/credentials/hot?version=%d", writers*each+1), alice, nil); g.status != 404 {
		t.Fatalf("a version past the writes exists: %d", g.status)
	}
}

func TestListPages(t *testing.T) {
	e := start(t)
	alice := e.token("alice")
	for i := range 5 {
		e.do("PUT", fmt.Sprintf("/api/credentials/s%d", i), alice, `{"value":1}`)
	}
	e.do("PUT", "/api/credentials/other", e.token("bob"), `{"value":1}`)
	var names []string
	cont := ""
	for range 10 {
		r := e.do("GET", "/api/credentials?limit=2&continuation="+cont, alice, nil)
		wantStatus(t, "list page", r, 200)
		var p struct {
			Items        []struct{ Name string }
			Continuation string
		}
		decode(t, r.body, &p)
		if len(p.Items) > 2 {
			t.Fatalf("page of %d items with limit 2", len(p.Items))
		}
		for _, it := range p.Items {
			names = append(names, it.Name)
		}
		if cont = p.Continuation; cont == "" {
			break
		}
	}
	if got := strings.Join(names, ","); got != "s0,s1,s2,s3,s4" {
		t.Fatalf("pages gave %s, want s0..s4 in order, once each", got)
	}
}

func TestConcurrentIfMatchOneWins(t *testing.T) {
	e := start(t)
	alice := e.token("alice")
	etag := e.do("PUT", "/api/credentials/cas", alice, `{"value":0}`).header.Get("ETag")
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			r := e.do("PUT", "/api/credentials/cas", alice, fmt.Sprintf(`{"value":%d}`, i+1), "If-Match", etag)
			mu.Lock()
			codes[r.status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[200] != 1 || codes[412] != 7 {
		t.Fatalf("8 PUTs with one If-Match: %v, want one 200 and seven 412", codes)
	}
}

func TestRestartKeepsAcknowledgedWrites(t *testing.T) {
	e := start(t)
	alice := e.token("alice")
	for i := range 5 {
		wantStatus(t, "PUT", e.do("PUT", fmt.Sprintf("/api/credentials/s%d", i), alice, fmt.Sprintf(`{"value":%d}`, i)), 201)
	}
	e.restart()
	for i := range 5 {
		g := e.do("GET", fmt.Sprintf("/api/credentials/s%d", i), alice, nil)
		if g.status != 200 || !strings.Contains(string(g.body), fmt.Sprintf(`"value":%d`, i)) {
			t.Fatalf("after restart GET s%d = %d %s", i, g.status, g.body)
		}
	}
}

func TestDeleteRestorePurge(t *testing.T) {
	e := start(t, "CREDVAULT_MAX_VERSIONS", "3")
	alice := e.token("alice", identity.AllRoles()...)
	for i := range 5 {
		e.do("PUT", "/api/credentials/s", alice, fmt.Sprintf(`{"value":%d}`, i+1))
	}
	vs := e.do("GET", "/api/credentials/s/versions", alice, nil)
	if n := strings.Count(string(vs.body), `"version"`); n != 3 {
		t.Fatalf("max 3 versions: got %d in %s", n, vs.body)
	}
	wantProblem(t, "trimmed version", e.do("GET", "/api/credentials/s?version=2", alice, nil), 404)
	if n := len(e.blobNames()); n != 3 {
		t.Fatalf("blobs after trimming: %d, want 3", n)
	}
	wantStatus(t, "DELETE", e.do("DELETE", "/api/credentials/s", alice, nil), 204)
	wantProblem(t, "GET deleted", e.do("GET", "/api/credentials/s", alice, nil), 404)
	if l := e.do("GET", "/api/credentials", alice, nil); strings.Contains(string(l.body), `"name":"s"`) {
		t.Fatalf("list shows a deleted secret: %s", l.body)
	}
	if l := e.do("GET", "/api/credentials?deleted=true", alice, nil); !strings.Contains(string(l.body), `"name":"s"`) {
		t.Fatalf("list of deleted lacks it: %s", l.body)
	}
	wantProblem(t, "DELETE again", e.do("DELETE", "/api/credentials/s", alice, nil), 404)
	wantStatus(t, "restore", e.do("POST", "/api/credentials/s/restore", alice, nil), 200)
	if g := e.do("GET", "/api/credentials/s", alice, nil); !strings.Contains(string(g.body), `"value":5`) {
		t.Fatalf("GET restored = %s", g.body)
	}
	wantStatus(t, "purge", e.do("DELETE", "/api/credentials/s?purge=true", alice, nil), 204)
	wantProblem(t, "GET purged", e.do("GET", "/api/credentials/s", alice, nil), 404)
	if n := len(e.blobNames()); n != 0 {
		t.Fatalf("blobs after purge: %d, want 0", n)
	}
	wantStatus(t, "PUT after purge", e.do("PUT", "/api/credentials/s", alice, `{"value":"fresh"}`), 201)
}

func TestTraceAndCorrelation(t *testing.T) {
	e := start(t)
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r := e.do("GET", "/api/health", "", nil, "traceparent", tp)
	got := r.header.Get("traceparent")
	if !strings.HasPrefix(got, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || got == tp || r.header.Get("x-correlation-id") != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("traceparent %q → %q, correlation %q", tp, got, r.header.Get("x-correlation-id"))
	}
	r = e.do("GET", "/api/health", "", nil, "x-correlation-id", "req-42")
	if r.header.Get("x-correlation-id") != "req-42" {
		t.Fatalf("x-correlation-id not echoed: %q", r.header.Get("x-correlation-id"))
	}
	r = e.do("GET", "/api/health", "", nil, "traceparent", "garbage", "x-correlation-id", "bad id!")
	if len(r.header.Get("x-correlation-id")) != 32 || len(r.header.Get("traceparent")) != 55 {
		t.Fatalf("malformed trace headers not replaced: %q %q", r.header.Get("traceparent"), r.header.Get("x-correlation-id"))
	}
}

func TestNoSecretOrTokenAtRestOrInLogs(t *testing.T) {
	e := start(t)
	const value = "sk_live_NEVER_AT_REST_8f2a"
	alice := e.token("alice", identity.AllRoles()...)
	e.do("PUT", "/api/credentials/api-key", alice, `{"value":"`+value+`"}`)
	e.do("GET", "/api/credentials/api-key", alice, nil)
	e.do("GET", "/api/credentials/api-key", alice[:20], nil)
	e.do("PUT", "/api/credentials/api-key", alice, `{"value":"`+value+`","bad":1}`)
	e.restart()
	e.do("GET", "/api/credentials/api-key", alice, nil)
	owner := identity.Principal{Tenant: identity.DevTenant, Object: identity.DevObjectID("alice")}.Owner()
	for path, b := range e.atRest() {
		for _, s := range []string{value, alice, owner, identity.DevObjectID("alice")} {
			if strings.Contains(string(b), s) {
				t.Errorf("%s contains a secret, token or owner id", path)
			}
		}
	}
	logs := e.logs.String()
	for _, s := range []string{value, alice, alice[:20], owner, identity.DevObjectID("alice"), "api-key"} {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain %q", s[:min(len(s), 12)])
		}
	}
	if !strings.Contains(logs, `"route":"GET /api/credentials/{name}"`) {
		t.Errorf("logs lack the route template: %s", logs)
	}
}

func decode(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}
