package functions_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/credvault/credvault/internal/functions"
	"github.com/credvault/credvault/internal/httpapi"
)

// schemaDir holds the SchemaStore schemas for host.json and function.json.
// They live outside the repository, beside it (see SOURCE.md there).
const repoRoot = "../.."

var schemaDir = filepath.Join(repoRoot, "..", "shared", "schemas")

// TestSchemas validates host.json and every function.json against the
// SchemaStore schemas, read as draft-04 with two corrections (see
// loadSchema), and shows that the validation rejects a wrong file.
func TestSchemas(t *testing.T) {
	host, function := loadSchema(t, "host.schema.json"), loadSchema(t, "function.schema.json")

	validate(t, host, filepath.Join(repoRoot, "host.json"), true)
	paths, err := filepath.Glob(filepath.Join(repoRoot, "functions", "*", "function.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no functions/*/function.json (err %v)", err)
	}
	for _, p := range paths {
		validate(t, function, p, true)
	}

	// The corrected schemas still refuse what they should.
	validate(t, host, filepath.Join("testdata", "schema-invalid", "host.json"), false)
	validate(t, function, filepath.Join("testdata", "schema-invalid", "function.json"), false)
}

// loadSchema compiles one of the shared schemas, skipping the test when the
// folder is absent. Two defects of the SchemaStore copies make them refuse
// every file credvault has, so they are corrected in memory (the files stay
// as they are):
//
//   - function.schema.json declares draft-04 but uses "const" (a draft-06
//     keyword) in definitions.sqlBinding; draft-04 ignores it, so that
//     branch matches any binding, and every httpTrigger or http binding then
//     matches both httpBinding and sqlBinding of a "oneOf". Each "const": v
//     is read as "enum": [v], its meaning in later drafts.
//   - host.schema.json's root is "oneOf" [version-1, version-2,
//     version-2-ext-5], and the last two differ only in
//     extensions.serviceBus, so a version 2 host.json without Service Bus
//     settings matches both (the "Matches multiple schemas" warning of
//     MicrosoftDocs/azure-docs#121718). The root is read as "anyOf".
func loadSchema(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	path := filepath.Join(schemaDir, name)
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		t.Skipf("schema folder absent: %s not found (the shared schemas live beside the repository, in ../shared/schemas)", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if n := constToEnum(doc); n > 0 {
		t.Logf("%s: read %d draft-06 \"const\" keyword(s) as \"enum\"", name, n)
	}
	if root, ok := doc.(map[string]any); ok && name == "host.schema.json" {
		if oneOf, ok := root["oneOf"]; ok {
			delete(root, "oneOf")
			root["anyOf"] = oneOf
			t.Logf("%s: read the root \"oneOf\" as \"anyOf\"", name)
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft4)
	if err := c.AddResource(abs, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(abs)
	if err != nil {
		t.Fatalf("compile %s: %v", path, err)
	}
	return sch
}

// constToEnum rewrites every schema object's "const": v into "enum": [v]
// and reports how many it rewrote.
func constToEnum(v any) int {
	n := 0
	switch v := v.(type) {
	case map[string]any:
		if c, ok := v["const"]; ok {
			if _, hasEnum := v["enum"]; !hasEnum {
				delete(v, "const")
				v["enum"] = []any{c}
				n++
			}
		}
		for _, e := range v {
			n += constToEnum(e)
		}
	case []any:
		for _, e := range v {
			n += constToEnum(e)
		}
	}
	return n
}

func validate(t *testing.T, sch *jsonschema.Schema, path string, wantValid bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	switch err := sch.Validate(doc); {
	case wantValid && err != nil:
		t.Errorf("%s does not match its schema: %v", path, err)
	case !wantValid && err == nil:
		t.Errorf("%s matches its schema; want it refused", path)
	}
}

// TestHTTPFunctions checks what the schema does not: the host forwards an
// HTTP function as plain HTTP only when it has exactly one httpTrigger in and
// one http out, and the handler authenticates every call itself.
func TestHTTPFunctions(t *testing.T) {
	fns, err := functions.Load(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fns {
		trig, ok := f.Trigger()
		if !ok || !strings.EqualFold(trig.Type, "httpTrigger") {
			continue // not an HTTP function (a timer, say)
		}
		if len(f.Bindings) != 2 || !f.Forwarded() {
			t.Errorf("%s: bindings %+v; want exactly one httpTrigger in and one http out, or the host will not forward it as plain HTTP", f.Name, f.Bindings)
			continue
		}
		if f.Disabled {
			t.Errorf("%s: disabled", f.Name)
		}
		if trig.Name != "req" || f.Bindings[1].Name != "res" {
			t.Errorf("%s: binding names %q and %q, want \"req\" and \"res\"", f.Name, trig.Name, f.Bindings[1].Name)
		}
		if trig.AuthLevel != "anonymous" {
			t.Errorf("%s: authLevel %q, want \"anonymous\" (the handler authenticates every call)", f.Name, trig.AuthLevel)
		}
		// The schema checks only the first method (its "items" is a tuple).
		if len(trig.Methods) != 1 {
			t.Errorf("%s: methods %q, want exactly one", f.Name, trig.Methods)
		}
		for _, m := range trig.Methods {
			if !slices.Contains([]string{"get", "post", "put", "patch", "delete", "head", "options", "trace"}, m) {
				t.Errorf("%s: method %q, want a lower-case HTTP method", f.Name, m)
			}
		}
	}
}

type route struct{ method, path string }

func (r route) String() string { return r.method + " " + r.path }

// TestRouteTable checks that the function folders and httpapi.Routes agree
// both ways.
func TestRouteTable(t *testing.T) {
	fns, err := functions.Load(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range routeMismatches(httpapi.Routes(), fns) {
		t.Error(m)
	}
}

// TestRouteMismatches shows that routeMismatches catches an extra entry on
// either side, a duplicate, and a parameter renamed.
func TestRouteMismatches(t *testing.T) {
	fn := func(name, method, route string) functions.Function {
		return functions.Function{Name: name, RoutePrefix: "api", Bindings: []functions.Binding{
			{Type: "httpTrigger", Direction: "in", Name: "req", Methods: []string{method}, Route: route},
			{Type: "http", Direction: "out", Name: "res"}}}
	}
	api := []string{"GET /api/health", "PUT /api/credentials/{name}"}
	both := []functions.Function{fn("health", "get", "health"), fn("put", "put", "credentials/{name}")}
	missing := "has no function.json"
	extra := "which httpapi does not serve"
	for _, tc := range []struct {
		name string
		api  []string
		fns  []functions.Function
		want []string // one substring per expected mismatch, in sorted order
	}{
		{"agree", api, both, nil},
		{"extra API route", append(slices.Clone(api), "DELETE /api/credentials/{name}"), both, []string{missing}},
		{"extra function", api, append(slices.Clone(both), fn("delete", "delete", "credentials/{name}")), []string{extra}},
		{"method differs", api, []functions.Function{both[0], fn("put", "post", "credentials/{name}")}, []string{extra, missing}},
		{"parameter renamed", api, []functions.Function{both[0], fn("put", "put", "credentials/{id}")}, []string{extra, missing}},
		{"served twice", api, append(slices.Clone(both), fn("put2", "put", "credentials/{name}")), []string{"served by several functions"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := routeMismatches(tc.api, tc.fns)
			ok := len(got) == len(tc.want)
			for i := 0; ok && i < len(got); i++ {
				ok = strings.Contains(got[i], tc.want[i])
			}
			if !ok {
				t.Errorf("mismatches = %q, want %d containing %q", got, len(tc.want), tc.want)
			}
		})
	}
}

// routeMismatches compares API route patterns ("METHOD /path") with the
// functions' HTTP routes: every API route needs exactly one function with
// its method and path, and every function's method and path must be an API
// route. Paths compare as written, so "{param}" names must match too.
func routeMismatches(apiRoutes []string, fns []functions.Function) []string {
	var out []string
	served := map[route][]string{} // → function names
	for _, f := range fns {
		methods, path, ok := f.HTTPRoute()
		if !ok {
			continue
		}
		if len(methods) == 0 {
			out = append(out, fmt.Sprintf("function %s lists no methods: the host would forward every method of %s", f.Name, path))
		}
		for _, m := range methods {
			served[route{m, path}] = append(served[route{m, path}], f.Name)
		}
	}

	api := map[route]bool{}
	for _, p := range apiRoutes {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			out = append(out, fmt.Sprintf("httpapi route %q has no method", p))
			continue
		}
		r := route{method, path}
		api[r] = true
		switch names := served[r]; len(names) {
		case 1:
		case 0:
			out = append(out, fmt.Sprintf("httpapi route %s has no function.json: the host will not forward it", r))
		default:
			out = append(out, fmt.Sprintf("httpapi route %s is served by several functions: %v", r, names))
		}
	}
	for r, names := range served {
		if !api[r] {
			out = append(out, fmt.Sprintf("function %v routes %s, which httpapi does not serve", names, r))
		}
	}
	slices.Sort(out)
	return out
}

// TestRoutesNotReservedByHost applies the host's rule for HTTP routes: a
// route (without the route prefix) that starts with "admin" or "runtime" is
// refused with "The specified route conflicts with one or more built in
// routes." and the function is not loaded, whatever the route prefix
// (ScriptHost.ValidateHttpFunction in src/WebJobs.Script/Host/ScriptHost.cs
// of github.com/Azure/azure-functions-host; issue #1781 there).
func TestRoutesNotReservedByHost(t *testing.T) {
	fns, err := functions.Load(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fns {
		trig, ok := f.Trigger()
		if !ok || !strings.EqualFold(trig.Type, "httpTrigger") {
			continue
		}
		r := strings.ToLower(strings.Trim(trig.Route, "/"))
		if r == "" {
			r = strings.ToLower(f.Name)
		}
		for _, reserved := range []string{"admin", "runtime"} {
			if strings.HasPrefix(r, reserved) {
				_, path, _ := f.HTTPRoute()
				t.Errorf("function %s: route %q starts with %q, which the Functions host reserves even under the %q prefix; the host will refuse the function and %s will not be served",
					f.Name, trig.Route, reserved, f.RoutePrefix, path)
			}
		}
	}
}
