package functions

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// repoRoot is the repository root, seen from this package's folder (the
// working directory of `go test`).
const repoRoot = "../.."

func TestLoadRepository(t *testing.T) {
	fns, err := Load(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	if len(fns) == 0 {
		t.Fatal("Load found no function under functions/")
	}
	for _, f := range fns {
		if f.RoutePrefix != "api" {
			t.Errorf("%s: RoutePrefix = %q, want %q (from host.json)", f.Name, f.RoutePrefix, "api")
		}
	}
}

func TestLoadHost(t *testing.T) {
	h, err := LoadHost(filepath.Join(repoRoot, "host.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := h.ExecutablePath, "handler"; got != want {
		t.Errorf("customHandler.description.defaultExecutablePath = %q, want %q (the binary at the app root)", got, want)
	}
	if !h.ForwardHTTP {
		t.Error("customHandler.enableForwardingHttpRequest is off: the host would send HTTP functions as invocation JSON, which the API's mux does not serve")
	}
	if h.WorkingDirectory != "" {
		t.Errorf("customHandler.description.workingDirectory = %q, want empty (the app root, where the binary sits)", h.WorkingDirectory)
	}
	if got, want := h.RoutePrefix, "api"; got != want {
		t.Errorf("extensions.http.routePrefix = %q, want %q (the API's paths start with /api/)", got, want)
	}
}

func TestRoutePrefix(t *testing.T) {
	for _, tc := range []struct {
		name, hostJSON, want string
	}{
		{"absent file", "", "api"},
		{"absent setting", `{"version": "2.0"}`, "api"},
		{"empty removes the prefix", `{"version": "2.0", "extensions": {"http": {"routePrefix": ""}}}`, ""},
		{"custom", `{"version": "2.0", "extensions": {"http": {"routePrefix": "v1/"}}}`, "v1/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.hostJSON != "" {
				writeFile(t, filepath.Join(root, "host.json"), tc.hostJSON)
			}
			writeFile(t, filepath.Join(root, "functions", "ping", "function.json"),
				`{"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["get"]}, {"type": "http", "direction": "out", "name": "res"}]}`)
			fns, err := Load(root)
			if err != nil {
				t.Fatal(err)
			}
			if len(fns) != 1 || fns[0].RoutePrefix != tc.want {
				t.Fatalf("Load = %+v, want one function with RoutePrefix %q", fns, tc.want)
			}
		})
	}
}

func TestHTTPRoute(t *testing.T) {
	http := func(route string, methods ...string) []Binding {
		return []Binding{
			{Type: "httpTrigger", Direction: "in", Name: "req", Route: route, Methods: methods},
			{Type: "http", Direction: "out", Name: "res"},
		}
	}
	for _, tc := range []struct {
		name        string
		fn          Function
		wantMethods []string
		wantPath    string
		wantOK      bool
	}{
		{"route and methods", Function{Name: "get", RoutePrefix: "api", Bindings: http("credentials/{name}", "get")},
			[]string{"GET"}, "/api/credentials/{name}", true},
		{"route defaults to the name", Function{Name: "ping", RoutePrefix: "api", Bindings: http("")},
			nil, "/api/ping", true},
		{"slashes trimmed", Function{Name: "x", RoutePrefix: "/api/", Bindings: http("/a/b/", "put", "Post")},
			[]string{"PUT", "POST"}, "/api/a/b", true},
		{"no prefix", Function{Name: "x", RoutePrefix: "", Bindings: http("a")},
			nil, "/a", true},
		{"timer", Function{Name: "rotate", RoutePrefix: "api", Bindings: []Binding{{Type: "timerTrigger", Direction: "in", Name: "timer", Schedule: "0 0 3 * * *"}}},
			nil, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			methods, path, ok := tc.fn.HTTPRoute()
			if !reflect.DeepEqual(methods, tc.wantMethods) || path != tc.wantPath || ok != tc.wantOK {
				t.Errorf("HTTPRoute() = %q, %q, %v; want %q, %q, %v", methods, path, ok, tc.wantMethods, tc.wantPath, tc.wantOK)
			}
		})
	}
}

func TestForwarded(t *testing.T) {
	trigger := Binding{Type: "httpTrigger", Direction: "in", Name: "req"}
	res := Binding{Type: "http", Direction: "out", Name: "res"}
	queue := Binding{Type: "queue", Direction: "out", Name: "msg"}
	timer := Binding{Type: "timerTrigger", Direction: "in", Name: "timer"}
	for _, tc := range []struct {
		name     string
		bindings []Binding
		want     bool
	}{
		{"httpTrigger in, http out", []Binding{trigger, res}, true},
		{"case-insensitive types", []Binding{{Type: "HttpTrigger", Direction: "in"}, {Type: "HTTP", Direction: "out"}}, true},
		{"a second output", []Binding{trigger, res, queue}, false},
		{"no http output", []Binding{trigger, queue}, false},
		{"timer", []Binding{timer}, false},
	} {
		if got := (Function{Name: "f", Bindings: tc.bindings}).Forwarded(); got != tc.want {
			t.Errorf("%s: Forwarded() = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLoadRefuses(t *testing.T) {
	for _, tc := range []struct {
		dir  string // under testdata
		want []string
	}{
		{"malformed", []string{filepath.Join("testdata", "malformed", "functions", "broken", "function.json") + ":8:5", "invalid JSON"}},
		{"wrongtype", []string{filepath.Join("testdata", "wrongtype", "functions", "methods-string", "function.json"), "cannot unmarshal string"}},
		{"nobindings", []string{filepath.Join("testdata", "nobindings", "functions", "empty", "function.json"), "at least one binding"}},
		{"badname", []string{"function.json", `"1st" is not a valid function name`}},
		{"baddirection", []string{"function.json", `"both" is not a valid binding direction`}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			fns, err := Load(filepath.Join("testdata", tc.dir))
			if err == nil {
				t.Fatalf("Load(testdata/%s) = %+v, nil; want an error", tc.dir, fns)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load(testdata/%s) error = %q, want it to contain %q", tc.dir, err, w)
				}
			}
		})
	}
}

// TestLoadDeployedLayout reads an app folder as the host sees it: function
// folders beside host.json, and folders without a function.json skipped.
func TestLoadDeployedLayout(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "host.json"), `{"version": "2.0"}`)
	writeFile(t, filepath.Join(root, "rotate", "function.json"),
		`{"bindings": [{"type": "timerTrigger", "direction": "in", "name": "timer", "schedule": "0 0 3 * * *"}]}`)
	writeFile(t, filepath.Join(root, "static", "index.html"), "<p>not a function</p>")
	writeFile(t, filepath.Join(root, "handler"), "binary")
	fns, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(fns) != 1 || fns[0].Name != "rotate" {
		t.Fatalf("Load = %+v, want only the function rotate", fns)
	}
	trig, ok := fns[0].Trigger()
	if !ok || trig.Schedule != "0 0 3 * * *" {
		t.Errorf("Trigger() = %+v, %v; want the timer with its schedule", trig, ok)
	}
}

// TestInvokePayloads checks the JSON names the host uses for the payloads of
// non-forwarded invocations.
func TestInvokePayloads(t *testing.T) {
	var req InvokeRequest
	body := `{"Data": {"timer": {"ScheduleStatus": null, "IsPastDue": false}}, "Metadata": {"sys": {"MethodName": "rotate"}}}`
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	if _, ok := req.Data["timer"]; !ok {
		t.Errorf("InvokeRequest.Data = %v, want the timer binding", req.Data)
	}
	if got := string(req.Metadata["sys"]); !strings.Contains(got, "rotate") {
		t.Errorf("InvokeRequest.Metadata[sys] = %s, want the method name", got)
	}
	out, err := json.Marshal(InvokeResponse{Logs: []string{"rotated 3 keys"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), `{"Logs":["rotated 3 keys"]}`; got != want {
		t.Errorf("InvokeResponse JSON = %s, want %s", got, want)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHostTimeout(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    time.Duration
		ok, bad bool
	}{
		{in: "00:10:00", want: 10 * time.Minute, ok: true},
		{in: "01:30:05", want: 90*time.Minute + 5*time.Second, ok: true},
		{in: "1.02:00:00", want: 26 * time.Hour, ok: true},
		{in: " 00:05:00 ", want: 5 * time.Minute, ok: true},
		{in: "-1"},
		{in: ""},
		{in: "10m", bad: true},
		{in: "00:60:00", bad: true},
		{in: "24:00:00", bad: true},
		{in: "00:00:00", bad: true},
		{in: "0:5:0", bad: true},
	} {
		d, ok, err := Host{FunctionTimeout: tc.in}.Timeout()
		if (err != nil) != tc.bad || ok != tc.ok || d != tc.want {
			t.Errorf("Timeout(%q) = %v, %v, %v; want %v, %v, error %v", tc.in, d, ok, err, tc.want, tc.ok, tc.bad)
		}
	}
	h, err := LoadHost(filepath.Join(repoRoot, "host.json"))
	if err != nil {
		t.Fatal(err)
	}
	if d, ok, err := h.Timeout(); err != nil || !ok || d != 10*time.Minute {
		t.Errorf("the repository's host.json functionTimeout = %v, %v, %v; want 10m, above the default rotation budget (8 min)", d, ok, err)
	}
}
