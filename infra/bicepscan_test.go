package infra

import (
	"fmt"
	"strings"
)

// The scanner behind readBicep: comments, string literals with their ${…}
// interpolations, balanced brackets, and the few declaration forms the
// Bicep here uses.

// scanner walks the source.
type scanner struct {
	src  string
	pos  int
	file string
}

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", s.file, s.line(), fmt.Sprintf(format, args...))
}

func (s *scanner) line() int { return 1 + strings.Count(s.src[:s.pos], "\n") }

func (s *scanner) eof() bool { return s.pos >= len(s.src) }

func (s *scanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.pos]
}

// skip passes spaces and comments, and newlines when asked.
func (s *scanner) skip(newlines bool) {
	for !s.eof() {
		switch c := s.src[s.pos]; {
		case c == ' ' || c == '\t' || c == '\r':
			s.pos++
		case c == '\n' && newlines:
			s.pos++
		case strings.HasPrefix(s.src[s.pos:], "//"):
			for !s.eof() && s.src[s.pos] != '\n' {
				s.pos++
			}
		case strings.HasPrefix(s.src[s.pos:], "/*"):
			end := strings.Index(s.src[s.pos+2:], "*/")
			if end < 0 {
				s.pos = len(s.src)
				return
			}
			s.pos += end + 4
		default:
			return
		}
	}
}

func isIdentByte(c byte, first bool) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || !first && '0' <= c && c <= '9'
}

func (s *scanner) ident() string {
	start := s.pos
	for !s.eof() && isIdentByte(s.src[s.pos], s.pos == start) {
		s.pos++
	}
	return s.src[start:s.pos]
}

func (s *scanner) expect(c byte) error {
	s.skip(false)
	if s.peek() != c {
		return s.errorf("want %q, found %q", c, s.peek())
	}
	s.pos++
	return nil
}

// stringLit reads '…' or ”'…”' at the current quote and returns its text.
func (s *scanner) stringLit() (string, error) {
	if strings.HasPrefix(s.src[s.pos:], "'''") {
		end := strings.Index(s.src[s.pos+3:], "'''")
		if end < 0 {
			return "", s.errorf("unterminated multi-line string")
		}
		text := s.src[s.pos+3 : s.pos+3+end]
		s.pos += end + 6
		return text, nil
	}
	start := s.pos + 1
	s.pos++
	for !s.eof() {
		switch {
		case s.src[s.pos] == '\\':
			s.pos += 2
		case strings.HasPrefix(s.src[s.pos:], "${"):
			s.pos += 2
			if _, err := s.scanExpr("}"); err != nil {
				return "", err
			}
			if err := s.expect('}'); err != nil {
				return "", err
			}
		case s.src[s.pos] == '\'':
			s.pos++
			return s.src[start : s.pos-1], nil
		case s.src[s.pos] == '\n':
			return "", s.errorf("newline in a string")
		default:
			s.pos++
		}
	}
	return "", s.errorf("unterminated string")
}

// scanExpr reads an expression's text up to, at bracket depth 0, a newline,
// a comment or one of stops, and returns it trimmed. Inside brackets it runs
// across newlines.
func (s *scanner) scanExpr(stops string) (string, error) {
	start := s.pos
	depth := 0
	for !s.eof() {
		c := s.src[s.pos]
		if depth == 0 && (c == '\n' || strings.ContainsRune(stops, rune(c)) || strings.HasPrefix(s.src[s.pos:], "//")) {
			break
		}
		switch c {
		case '\'':
			if _, err := s.stringLit(); err != nil {
				return "", err
			}
			continue
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			if depth == 0 {
				return "", s.errorf("unbalanced %q", c)
			}
			depth--
		}
		s.pos++
	}
	text := strings.TrimSpace(s.src[start:s.pos])
	if text == "" {
		return "", s.errorf("missing expression")
	}
	return text, nil
}

// value reads an object, an array, a loop, a string literal or an expression.
func (s *scanner) value() (value, error) {
	s.skip(false)
	switch s.peek() {
	case '{':
		return s.object()
	case '[':
		return s.array()
	}
	text, err := s.scanExpr(",}]")
	if err != nil {
		return nil, err
	}
	if text[0] == '\'' {
		sub := &scanner{src: text, file: s.file}
		lit, err := sub.stringLit()
		if err == nil && sub.eof() {
			return str(lit), nil
		}
	}
	return expr(text), nil
}

func (s *scanner) object() (value, error) {
	s.pos++ // {
	o := &object{fields: map[string]value{}}
	for {
		s.skip(true)
		switch {
		case s.eof():
			return nil, s.errorf("unterminated object")
		case s.peek() == '}':
			s.pos++
			return o, nil
		}
		var key string
		if s.peek() == '\'' {
			k, err := s.stringLit()
			if err != nil {
				return nil, err
			}
			key = k
		} else if key = s.ident(); key == "" {
			return nil, s.errorf("want a property name, found %q", s.peek())
		}
		s.skip(false)
		if key == "resource" && s.peek() != ':' {
			return nil, s.errorf("nested resource declarations are not read: declare the child at the top level with parent:")
		}
		if err := s.expect(':'); err != nil {
			return nil, err
		}
		v, err := s.value()
		if err != nil {
			return nil, err
		}
		if _, dup := o.fields[key]; dup {
			return nil, s.errorf("property %s twice", key)
		}
		o.keys = append(o.keys, key)
		o.fields[key] = v
		s.skip(false)
		if s.peek() == ',' {
			s.pos++
		}
	}
}

func (s *scanner) array() (value, error) {
	s.pos++ // [
	s.skip(true)
	if strings.HasPrefix(s.src[s.pos:], "for ") {
		header, err := s.scanExpr(":")
		if err != nil {
			return nil, err
		}
		if err := s.expect(':'); err != nil {
			return nil, err
		}
		body, err := s.value()
		if err != nil {
			return nil, err
		}
		s.skip(true)
		if err := s.expect(']'); err != nil {
			return nil, err
		}
		return &loop{header: header, body: body}, nil
	}
	items := []value{}
	for {
		s.skip(true)
		switch {
		case s.eof():
			return nil, s.errorf("unterminated array")
		case s.peek() == ']':
			s.pos++
			return items, nil
		}
		v, err := s.value()
		if err != nil {
			return nil, err
		}
		items = append(items, v)
		s.skip(false)
		if s.peek() == ',' {
			s.pos++
		}
	}
}

// decls reads the declarations of a file.
func (s *scanner) decls() ([]*decl, error) {
	var decls []*decl
	for {
		s.skip(true)
		if s.eof() {
			return decls, nil
		}
		if s.peek() == '@' { // a decorator: @name or @name(…)
			s.pos++
			s.ident()
			if s.peek() == '(' {
				if _, err := s.scanExpr(""); err != nil {
					return nil, err
				}
			}
			continue
		}
		d, err := s.decl()
		if err != nil {
			return nil, err
		}
		decls = append(decls, d)
	}
}

func (s *scanner) decl() (*decl, error) {
	d := &decl{line: s.line(), kind: s.ident()}
	s.skip(false)
	switch d.kind {
	case "targetScope":
		if err := s.expect('='); err != nil {
			return nil, err
		}
		v, err := s.value()
		d.body = v
		return d, err
	case "param", "var", "output":
		d.name = s.ident()
		s.skip(false)
		if d.kind != "var" {
			t, err := s.scanExpr("=")
			if err != nil {
				return nil, err
			}
			d.typ = t
		}
		s.skip(false)
		if s.peek() != '=' {
			if d.kind == "param" {
				return d, nil
			}
			return nil, s.errorf("%s %s has no value", d.kind, d.name)
		}
		s.pos++
		v, err := s.value()
		d.body = v
		return d, err
	case "resource", "module":
		d.name = s.ident()
		s.skip(false)
		if s.peek() != '\'' {
			return nil, s.errorf("%s %s: want its type in quotes", d.kind, d.name)
		}
		t, err := s.stringLit()
		if err != nil {
			return nil, err
		}
		d.typ = t
		s.skip(false)
		if strings.HasPrefix(s.src[s.pos:], "existing") {
			s.ident()
			d.existing = true
		}
		if err := s.expect('='); err != nil {
			return nil, err
		}
		s.skip(false)
		if strings.HasPrefix(s.src[s.pos:], "if") {
			s.ident()
			s.skip(false)
			if s.peek() != '(' {
				return nil, s.errorf("want ( after if")
			}
			cond, err := s.scanExpr("{")
			if err != nil {
				return nil, err
			}
			d.cond = strings.TrimSuffix(strings.TrimPrefix(cond, "("), ")")
		}
		v, err := s.value()
		d.body = v
		return d, err
	}
	return nil, s.errorf("%q declarations are not read here: keep the Bicep plain", d.kind)
}
