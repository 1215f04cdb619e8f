package infra

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// A reader for the plain Bicep of this folder. It is no Bicep compiler: it
// reads top-level declarations (targetScope, param, var, resource, module,
// output) and their bodies into objects, arrays and string literals, and
// keeps every other expression as its source text. What it does not know
// (nested resource declarations, user-defined types and functions, imports)
// is an error, which keeps the Bicep as plain as the tests assume.

// value is one of *object, []value, str, expr or *loop.
type value any

// object is a Bicep object, its keys in source order.
type object struct {
	keys   []string
	fields map[string]value
}

// str is a string literal: the text between its quotes, escapes and ${…}
// interpolations left as written.
type str string

// expr is any other expression, as written.
type expr string

// loop is [for header: body].
type loop struct {
	header string
	body   value
}

// decl is one top-level declaration.
type decl struct {
	kind     string // targetScope, param, var, resource, module or output
	name     string
	typ      string // resource: type@version; module: path; param, output: type
	existing bool
	cond     string // the condition of `= if (cond) {…}`
	body     value  // resource/module body, var/output value, param default (nil if none)
	line     int
}

// bicepFile is one parsed file.
type bicepFile struct {
	path  string
	src   string
	decls []*decl
}

func readBicep(path string) (*bicepFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f := &bicepFile{path: path, src: string(b)}
	s := &scanner{src: f.src, file: path}
	f.decls, err = s.decls()
	return f, err
}

// decl returns the declaration of this kind and symbolic name.
func (f *bicepFile) decl(kind, name string) *decl {
	for _, d := range f.decls {
		if d.kind == kind && d.name == name {
			return d
		}
	}
	return nil
}

// resourcesOf returns the resources of a type (without its API version).
func (f *bicepFile) resourcesOf(typ string) []*decl {
	var out []*decl
	for _, d := range f.decls {
		if d.kind == "resource" && d.resourceType() == typ {
			out = append(out, d)
		}
	}
	return out
}

func (d *decl) resourceType() string {
	t, _, _ := strings.Cut(d.typ, "@")
	return t
}

// get walks dotted keys through nested objects.
func get(v value, path string) (value, bool) {
	for _, k := range strings.Split(path, ".") {
		o, ok := v.(*object)
		if !ok {
			return nil, false
		}
		if v, ok = o.fields[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// render writes a scalar the way Bicep source writes it: 'text' for string
// literals, the expression text otherwise.
func render(v value) string {
	switch v := v.(type) {
	case str:
		return "'" + string(v) + "'"
	case expr:
		return string(v)
	case nil:
		return "<missing>"
	case *object:
		return "{" + strings.Join(v.keys, ", ") + "}"
	}
	return fmt.Sprintf("<%T>", v)
}

// code returns the source without its comments, strings kept.
func (f *bicepFile) code() string {
	var b strings.Builder
	s := &scanner{src: f.src, file: f.path}
	for !s.eof() {
		switch {
		case strings.HasPrefix(s.src[s.pos:], "//"), strings.HasPrefix(s.src[s.pos:], "/*"):
			s.skip(false)
		case s.peek() == '\'':
			start := s.pos
			if _, err := s.stringLit(); err != nil {
				b.WriteString(s.src[start:])
				return b.String()
			}
			b.WriteString(s.src[start:s.pos])
		default:
			b.WriteByte(s.peek())
			s.pos++
		}
	}
	return b.String()
}

// readAll reads main.bicep and every module.
func readAll() (map[string]*bicepFile, error) {
	paths, err := filepath.Glob(filepath.Join("modules", "*.bicep"))
	if err != nil {
		return nil, err
	}
	files := map[string]*bicepFile{}
	for _, p := range append([]string{"main.bicep"}, paths...) {
		f, err := readBicep(p)
		if err != nil {
			return nil, err
		}
		files[filepath.ToSlash(p)] = f
	}
	return files, nil
}
