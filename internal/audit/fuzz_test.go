package audit

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzRecordRoundTrip: parsing a line never panics, fails only with
// errMalformed, and whatever parses marshals back to the identical bytes
// (the encoding is canonical: one record, one line). Seeded with every line
// of the vectors.
func FuzzRecordRoundTrip(f *testing.F) {
	for _, l := range vectorLines(f) {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := parseRecord(line)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("parseRecord(%q): error %v does not wrap errMalformed", line, err)
			}
			return
		}
		if got := r.marshal(); !bytes.Equal(got, line) {
			t.Fatalf("marshal(parseRecord(%q)) = %q, want the parsed bytes", line, got)
		}
		if bytes.IndexByte(line, '\n') >= 0 {
			t.Fatalf("parseRecord accepted a line with a newline inside: %q", line)
		}
	})
}

// FuzzVerify: Verify never panics and never fails (only reports) on any
// bytes in a segment.
func FuzzVerify(f *testing.F) {
	for _, l := range vectorLines(f) {
		f.Add(append(l, '\n'))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st := newMemStore()
		st.segs["2026/03/01/09/5f3a9c0e12b47d86-000000.jsonl"] = data
		st.segs["2026/03/01/09/5f3a9c0e12b47d86-000001.jsonl"] = data
		if _, err := Verify(t.Context(), st, VerifyOptions{}); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	})
}
