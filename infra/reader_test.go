package infra

import (
	"strings"
	"testing"
)

// The reader itself, on the forms the Bicep here uses and on those it must
// refuse.
func TestReaderReadsPlainBicep(t *testing.T) {
	tests := []struct {
		name, src, path, want string
	}{
		{"string", "var a = 'x'", "", "'x'"},
		{"escaped quote", `var a = 'it\'s'`, "", `'it\'s'`},
		{"interpolation with quotes", "var a = '${b ? 'y' : 'n'}/z'", "", "'${b ? 'y' : 'n'}/z'"},
		{"expression", "var a = union(t, { k: 'v' })", "", "union(t, { k: 'v' })"},
		{"object", "var a = {\n  k: {\n    n: 1\n  }\n}", "k.n", "1"},
		{"inline object", "var a = { name: 'n', value: v.x }", "value", "v.x"},
		{"quoted key", "var a = {\n  '${id}': {}\n}", "${id}", "{}"},
		{"multi-line ternary", "var a = {\n  c: s ? [\n    1\n  ] : []\n}", "c", "s ? [\n    1\n  ] : []"},
		{"comment after value", "var a = {\n  k: true // why\n}", "k", "true"},
		{"comma string in expr", "var a = split(x, ',')", "", "split(x, ',')"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &scanner{src: tt.src, file: tt.name}
			decls, err := s.decls()
			if err != nil {
				t.Fatal(err)
			}
			v := decls[0].body
			if tt.path != "" {
				v, _ = get(v, tt.path)
			}
			if got := render(v); got != tt.want {
				t.Errorf("read %s, want %s", got, tt.want)
			}
		})
	}
}

func TestReaderDeclarations(t *testing.T) {
	src := `@description('d')
@allowed([
  'a'
])
param p string = 'a'
param q int
resource r 'T/u@1' existing = {
  name: 'n'
}
resource c 'T/u/v@1' = if (p == 'a') {
  parent: r
}
module m 'mod.bicep' = {
  name: 'm'
}
output o string = r.name
`
	s := &scanner{src: src, file: "t.bicep"}
	decls, err := s.decls()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range decls {
		got = append(got, strings.Join([]string{d.kind, d.name, d.typ, d.cond, render(d.body)}, "|"))
	}
	want := []string{
		"param|p|string||'a'",
		"param|q|int||<missing>",
		"resource|r|T/u@1||{name}",
		"resource|c|T/u/v@1|p == 'a'|{parent}",
		"module|m|mod.bicep||{name}",
		"output|o|string||r.name",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("declarations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !decls[2].existing {
		t.Error("resource r is existing")
	}
}

func TestReaderRefusesWhatItDoesNotRead(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"nested resource", "resource a 'T@1' = {\n  resource b 'c' = {}\n}", "nested resource"},
		{"user-defined type", "type t = string", "keep the Bicep plain"},
		{"unterminated string", "var a = 'x", "unterminated"},
		{"unbalanced", "var a = f(x))", "unbalanced"},
		{"duplicate property", "var a = {\n  k: 1\n  k: 2\n}", "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &scanner{src: tt.src, file: "t.bicep"}
			_, err := s.decls()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one that says %q", err, tt.want)
			}
		})
	}
}
