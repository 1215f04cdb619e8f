package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browserPage is the frontend of the browser test: a page on an origin of
// its own whose script calls the API the way a frontend does. scenario runs
// the allowed path; blocked tries calls that a disallowed origin must not
// be able to make (each entry says whether fetch resolved or rejected).
const browserPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>credvault browser test</title></head><body>
<script>
async function call(api, token, method, path, body, headers) {
  const h = Object.assign({'Authorization': 'Bearer ' + token}, headers || {});
  const init = {method, headers: h};
  if (body !== undefined) {
    h['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(api + path, init);
  const text = await r.text();
  return {
    status: r.status,
    contentType: r.headers.get('Content-Type'),
    etag: r.headers.get('ETag'),
    location: r.headers.get('Location'),
    correlationId: r.headers.get('x-correlation-id'),
    traceparent: r.headers.get('traceparent'),
    body: text ? JSON.parse(text) : null,
  };
}

async function scenario(api, token, name) {
  const path = '/api/credentials/' + encodeURIComponent(name);
  const out = {};
  out.create = await call(api, token, 'PUT', path, {value: {user: 'u', password: 'p1'}}, {'If-None-Match': '*'});
  out.read = await call(api, token, 'GET', path);
  out.update = await call(api, token, 'PUT', path, {value: {user: 'u', password: 'p2'}}, {'If-Match': out.read.etag});
  out.stale = await call(api, token, 'PUT', path, {value: {user: 'u', password: 'p3'}}, {'If-Match': out.read.etag});
  out.list = await call(api, token, 'GET', '/api/credentials?limit=10');
  out.delete = await call(api, token, 'DELETE', path, undefined, {'If-Match': out.update.etag});
  out.gone = await call(api, token, 'GET', path);
  return out;
}

async function blocked(api, token, keep) {
  const tries = {
    list: () => call(api, token, 'GET', '/api/credentials'),
    read: () => call(api, token, 'GET', '/api/credentials/' + keep),
    overwrite: () => call(api, token, 'PUT', '/api/credentials/' + keep, {value: 'evil'}),
    create: () => call(api, token, 'PUT', '/api/credentials/evil', {value: 'evil'}, {'If-None-Match': '*'}),
    delete: () => call(api, token, 'DELETE', '/api/credentials/' + keep),
  };
  const out = {};
  for (const [k, f] of Object.entries(tries)) {
    try { const r = await f(); out[k] = 'resolved ' + r.status; } catch (e) { out[k] = 'rejected ' + e.name; }
  }
  return out;
}
</script></body></html>`

// chromium returns the headless browser's path, or skips the test when it
// is absent and CREDVAULT_BROWSER_REQUIRED is not set (make test sets it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CREDVAULT_BROWSER_REQUIRED") != "" {
		t.Fatal("chromium is not installed and CREDVAULT_BROWSER_REQUIRED is set: run make tools (apt-get install chromium)")
	}
	t.Skip("chromium is not installed: run make tools (apt-get install chromium), or set CREDVAULT_BROWSER_REQUIRED=1 to fail instead")
	return ""
}

// browser starts headless Chromium (as root: without its sandbox) with a
// user-data dir of the test's own and returns a tab's context.
func browser(t *testing.T, path string) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-gpu", true),
	)
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(ctx)
	t.Cleanup(cancelTab)
	return ctx
}

// pageServer serves browserPage on an origin of its own.
func pageServer(t *testing.T) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(browserPage))
	}))
	t.Cleanup(s.Close)
	return s
}

type fetched struct {
	Status        int
	ContentType   string
	ETag          string
	Location      string
	CorrelationID string
	Traceparent   string
	Body          json.RawMessage
}

// TestBrowserCallsAcrossOrigins: a page on a listed origin runs a frontend's
// calls in headless Chromium against the running service; the same page on
// an origin not listed is blocked by the browser and changes nothing.
func TestBrowserCallsAcrossOrigins(t *testing.T) {
	path := chromium(t)
	allowed, other := pageServer(t), pageServer(t)
	e := start(t, "CREDVAULT_CORS_ORIGINS", allowed.URL)
	alice := e.token("alice")
	ctx := browser(t, path)
	run := func(origin *httptest.Server, expr string, v any) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Navigate(origin.URL+"/")); err != nil {
			t.Fatalf("open the page on %s: %v", origin.URL, err)
		}
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("run %s on %s: %v", expr, origin.URL, err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("result %s: %v", raw, err)
		}
	}
	js := func(fn string, args ...string) string {
		q := make([]string, len(args))
		for i, a := range args {
			b, _ := json.Marshal(a)
			q[i] = string(b)
		}
		return fmt.Sprintf("%s(%s)", fn, strings.Join(q, ", "))
	}

	// The listed origin: every call works and the script reads what it needs.
	var out map[string]fetched
	run(allowed, js("scenario", e.srv.URL, alice, "web-login"), &out)
	step := func(name string, want int) fetched {
		t.Helper()
		f := out[name]
		if f.Status != want {
			t.Fatalf("%s: status = %d, want %d (body %s)", name, f.Status, want, f.Body)
		}
		if f.CorrelationID == "" || f.Traceparent == "" {
			t.Errorf("%s: the script cannot read x-correlation-id %q or traceparent %q", name, f.CorrelationID, f.Traceparent)
		}
		return f
	}
	create := step("create", http.StatusCreated)
	if create.ETag == "" || !strings.HasPrefix(create.Location, "/api/credentials/web-login") {
		t.Errorf("create: the script sees ETag %q, Location %q", create.ETag, create.Location)
	}
	read := step("read", http.StatusOK)
	var secret struct{ Value struct{ Password string } }
	if json.Unmarshal(read.Body, &secret); read.ETag != create.ETag || secret.Value.Password != "p1" {
		t.Errorf("read: ETag %q (create gave %q), body %s", read.ETag, create.ETag, read.Body)
	}
	if update := step("update", http.StatusOK); update.ETag == "" || update.ETag == read.ETag {
		t.Errorf("update: ETag %q, want a new one", update.ETag)
	}
	stale := step("stale", http.StatusPreconditionFailed)
	var problem struct {
		Status        int
		Title         string
		CorrelationID string
	}
	json.Unmarshal(stale.Body, &problem)
	if stale.ContentType != "application/problem+json" || problem.Status != 412 || problem.Title == "" || problem.CorrelationID != stale.CorrelationID {
		t.Errorf("stale If-Match: the script read Content-Type %q, problem %s", stale.ContentType, stale.Body)
	}
	var page listPage
	if list := step("list", http.StatusOK); json.Unmarshal(list.Body, &page) != nil || len(page.Items) != 1 || page.Items[0].Name != "web-login" {
		t.Errorf("list: %s, want web-login alone", list.Body)
	}
	step("delete", http.StatusNoContent)
	step("gone", http.StatusNotFound)

	// An origin not listed: the browser rejects every call, nothing changes.
	wantStatus(t, "seed", e.do("PUT", "/api/credentials/keep", alice, `{"value":"kept"}`), http.StatusCreated)
	before := e.dataAtRest()
	var blocked map[string]string
	run(other, js("blocked", e.srv.URL, alice, "keep"), &blocked)
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range blocked {
			if !yield(k) {
				return
			}
		}
	}) {
		if !strings.HasPrefix(blocked[k], "rejected") {
			t.Errorf("%s from an origin not listed: fetch %s, want it rejected by the browser", k, blocked[k])
		}
	}
	if len(blocked) != 5 {
		t.Errorf("blocked calls = %v, want five", blocked)
	}
	wantSameAtRest(t, "after calls from an origin not listed", before, e.dataAtRest())
	if g := e.do("GET", "/api/credentials/keep", alice, nil); g.status != http.StatusOK || !strings.Contains(string(g.body), `"value":"kept"`) {
		t.Errorf("keep after the blocked calls: %d %s", g.status, g.body)
	}
	wantStatus(t, "the blocked create", e.do("GET", "/api/credentials/evil", alice, nil), http.StatusNotFound)
	if !strings.Contains(e.logs.String(), "cross-origin request refused") {
		t.Error("the server logged no refused cross-origin request: the browser may not have asked at all")
	}
}
