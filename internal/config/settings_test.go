package config

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// envName is what an environment variable name looks like.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// readInSource returns every setting name the package's code reads: the
// first argument, when it is a string literal, of a call to getenv or of any
// method on the reader r (str, int, bool, duration, list, roleMap, getenv,
// fail), in every non-test file of the package.
func readInSource(t *testing.T) map[string]token.Position {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	read := map[string]token.Position{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 || !readsSetting(call.Fun) {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err == nil && envName.MatchString(s) {
				if _, seen := read[s]; !seen {
					read[s] = fset.Position(lit.Pos())
				}
			}
			return true
		})
	}
	return read
}

// readsSetting says whether fun names getenv, r.getenv or another method on
// the reader r.
func readsSetting(fun ast.Expr) bool {
	switch f := fun.(type) {
	case *ast.Ident:
		return f.Name == "getenv"
	case *ast.SelectorExpr:
		x, ok := f.X.(*ast.Ident)
		return ok && x.Name == "r"
	}
	return false
}

func TestSettingsListIsWhatLoadReads(t *testing.T) {
	read := readInSource(t)
	if len(read) < 30 {
		t.Fatalf("found %d settings read in the source; the scan has lost its way", len(read))
	}
	listed := map[string]bool{}
	for _, s := range Settings() {
		listed[s.Name] = true
	}
	for name, pos := range read {
		if !listed[name] {
			t.Errorf("%s reads %s, which Settings() does not list: add it with its source (app, platform or local)", pos, name)
		}
	}
	for name := range listed {
		if _, ok := read[name]; !ok {
			t.Errorf("Settings() lists %s, which nothing in package config reads: remove it", name)
		}
	}
}

func TestSettingsListIsWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Settings() {
		if seen[s.Name] {
			t.Errorf("%s is listed twice", s.Name)
		}
		seen[s.Name] = true
		if !slices.Contains([]Source{App, Platform, Local}, s.Source) {
			t.Errorf("%s has source %v, want app, platform or local", s.Name, s.Source)
		}
	}
}

// The README's configuration table documents every setting a person sets;
// the platform's own are documented there too when credvault reacts to them.
func TestSettingsListedInREADME(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Skipf("no README beside the module: %v", err)
	}
	readme := string(b)
	var missing []string
	for _, s := range Settings() {
		if s.Source == Platform && (s.Name == "WEBSITE_SITE_NAME" || s.Name == "AzureWebJobsScriptRoot") {
			continue // read for telemetry names and to detect the host; nothing to configure
		}
		if !strings.Contains(readme, "`"+s.Name+"`") {
			missing = append(missing, s.Name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the README's configuration table does not mention %s", strings.Join(missing, ", "))
	}
}

func TestSourcePrintsItsName(t *testing.T) {
	tests := []struct {
		s    Source
		want string
	}{{App, "app"}, {Platform, "platform"}, {Local, "local"}, {0, "unknown"}}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("Source(%d).String() = %q, want %q", int(tt.s), got, tt.want)
		}
	}
}
