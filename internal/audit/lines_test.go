package audit

import (
	"crypto/sha256"
	"strings"
	"testing"
)

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 200<<10)        // longer than the reader's buffer
	huge := strings.Repeat("y", maxLineBytes+1) // longer than a line may be
	in := "a\n\n" + long + "\n" + huge + "\nend"
	want := []struct {
		data             string
		partial, tooLong bool
	}{{"a", false, false}, {"", false, false}, {long, false, false}, {huge, false, true}, {"end", true, false}}
	lr := newLineReader(strings.NewReader(in))
	for i, w := range want {
		l, err := lr.next()
		if err != nil || l == nil {
			t.Fatalf("line %d: %v, %v", i+1, l, err)
		}
		if l.hash != sha256.Sum256([]byte(w.data)) {
			t.Errorf("line %d: hash is not the SHA-256 of the line", i+1)
		}
		if l.partial != w.partial || l.tooLong != w.tooLong {
			t.Errorf("line %d: partial %v tooLong %v, want %v %v", i+1, l.partial, l.tooLong, w.partial, w.tooLong)
		}
		if !w.tooLong && string(l.data) != w.data {
			t.Errorf("line %d: %d bytes, want %d", i+1, len(l.data), len(w.data))
		}
		if w.tooLong && l.data != nil {
			t.Errorf("line %d: a line over the limit is kept (%d bytes)", i+1, len(l.data))
		}
	}
	if l, err := lr.next(); l != nil || err != nil {
		t.Fatalf("after the last line: %v, %v; want nil, nil", l, err)
	}
}
