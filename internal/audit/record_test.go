package audit

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// vectorLines are every record line of the vectors.
func vectorLines(t testing.TB) [][]byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(vectorsDir, "*.txt"))
	var out [][]byte
	for _, path := range files {
		for _, seg := range readVector(t, path).all("segment") {
			for _, l := range seg.more {
				out = append(out, []byte(l))
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no vector lines")
	}
	return out
}

func TestParseRecordAcceptsWhatMarshalWrites(t *testing.T) {
	for _, line := range vectorLines(t) {
		r, err := parseRecord(line)
		if err != nil {
			t.Fatalf("parseRecord(%s): %v", line, err)
		}
		if got := r.marshal(); !bytes.Equal(got, line) {
			t.Fatalf("marshal(parse(line)) =\n%s\nwant\n%s", got, line)
		}
	}
}

// TestParseRecordRefuses: each case is one vector line changed in one way
// that makes it something the trail never writes.
func TestParseRecordRefuses(t *testing.T) {
	base := readVector(t, filepath.Join(vectorsDir, workedName)).all("segment")[0].more[0] // seq 1, with hashes
	if !strings.Contains(base, `"seq":1,`) || !strings.Contains(base, `"key":1,`) {
		t.Fatalf("the first vector line is not the one this test expects: %s", base)
	}
	replace := func(old, new string) string {
		if !strings.Contains(base, old) {
			t.Fatalf("%q is not in the base line", old)
		}
		return strings.Replace(base, old, new, 1)
	}
	cases := []struct{ name, line string }{
		{"empty", ""},
		{"not JSON", "hello"},
		{"JSON array", "[1]"},
		{"space after a colon", replace(`"v":1`, `"v": 1`)},
		{"trailing space", base + " "},
		{"two objects", base + base},
		{"version 2", replace(`"v":1`, `"v":2`)},
		{"fields out of order", replace(`"v":1,"log":"5f3a9c0e12b47d86"`, `"log":"5f3a9c0e12b47d86","v":1`)},
		{"duplicate field", replace(`"v":1`, `"v":1,"v":1`)},
		{"upper-case key", replace(`"v":1`, `"V":1`)},
		{"unknown field", replace(`"v":1`, `"v":1,"x":1`)},
		{"seq 0", replace(`"seq":1,`, `"seq":0,`)},
		{"seq as a string", replace(`"seq":1,`, `"seq":"1",`)},
		{"seq with a fraction", replace(`"seq":1,`, `"seq":1.0,`)},
		{"negative seq", replace(`"seq":1,`, `"seq":-1,`)},
		{"short prev", replace(`"prev":"00`, `"prev":"`)},
		{"upper-case prev", replace(`"prev":"00`, `"prev":"AA`)},
		{"log id with a dash", replace(`"log":"5f3a9c0e12b47d86"`, `"log":"5f3a-9c0e"`)},
		{"empty log id", replace(`"log":"5f3a9c0e12b47d86"`, `"log":""`)},
		{"time without nanoseconds", replace(`.000000001Z`, `Z`)},
		{"time with an offset", replace(`.000000001Z`, `.000000001+00:00`)},
		{"time not a time", replace(`2026-03-01T09`, `2026-13-01T09`)},
		{"short owner hash", replace(`"owner":"d945`, `"owner":"`)},
		{"key without hashes", replace(`,"owner":"d945bf5609e2da3abd96562f14d7f866","caller":"8fab02a0e8b21b7fbea22ae53886ebb4","name":"09ec9fe059c2b71a92e3b8068129a06b"`, ``)},
		{"hashes without key", replace(`"key":1,`, ``)},
		{"key 0 written out", replace(`"key":1,`, `"key":0,`)},
		{"status 0 written out", replace(`"status":201`, `"status":0`)},
		{"empty roles", replace(`"roles":["Credentials.Write"]`, `"roles":[]`)},
		{"null roles", replace(`"roles":["Credentials.Write"]`, `"roles":null`)},
		{"unescaped <", replace(`"op":"secret.write"`, `"op":"<"`)},
		{"invalid UTF-8", replace(`"op":"secret.write"`, "\"op\":\"\xff\"")},
		{"continues not a segment name", replace(`"time"`, `"continues":"x","time"`)},
		{"newline inside", replace(`"v":1,`, "\"v\":1,\n")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := parseRecord([]byte(c.line))
			if err == nil {
				t.Fatalf("parseRecord accepted %q as %+v", c.line, r)
			}
			if !errors.Is(err, errMalformed) {
				t.Fatalf("parseRecord error %v does not wrap errMalformed", err)
			}
			if strings.Contains(err.Error(), "d945bf56") {
				t.Fatalf("parseRecord error quotes a hash: %v", err)
			}
		})
	}
}

func TestSegmentNames(t *testing.T) {
	hour := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	id := segmentID{Hour: hour, Log: "5f3a9c0e12b47d86", N: 12}
	if got, want := id.String(), "2026/03/01/09/5f3a9c0e12b47d86-000012.jsonl"; got != want {
		t.Fatalf("segment name = %s, want %s", got, want)
	}
	if got, err := parseSegmentName(id.String()); err != nil || got != id {
		t.Fatalf("parseSegmentName(%s) = %+v, %v; want %+v", id, got, err, id)
	}
	big := segmentID{Hour: hour, Log: "a", N: 1234567}
	if got, err := parseSegmentName(big.String()); err != nil || got != big {
		t.Fatalf("parseSegmentName(%s) = %+v, %v", big, got, err)
	}
	for _, bad := range []string{
		"",
		"2026/03/01/09/5f3a9c0e12b47d86-000012.json",
		"2026/03/01/09/5f3a9c0e12b47d86-12.jsonl",
		"2026/03/01/09/5f3a9c0e12b47d86-0000012.jsonl",
		"2026/03/01/09/5f3a9c0e12b47d86-+00012.jsonl",
		"2026/03/01/09/5f3a9c0e12b47d86.jsonl",
		"2026/03/01/09/-000012.jsonl",
		"2026/03/01/24/5f3a9c0e12b47d86-000012.jsonl",
		"2026/3/01/09/5f3a9c0e12b47d86-000012.jsonl",
		"2026/03/01/09/x/5f3a9c0e12b47d86-000012.jsonl",
		"2026/03/01/09/5F3A-000012.jsonl",
		"../03/01/09/5f3a9c0e12b47d86-000012.jsonl",
	} {
		if id, err := parseSegmentName(bad); err == nil {
			t.Errorf("parseSegmentName(%q) = %+v, want an error", bad, id)
		}
	}
}

func TestNewRecordHashesOnlyWhatIsSet(t *testing.T) {
	e := Event{Op: OpOwnerErase, Outcome: Success, Owner: "contoso/alice"}
	r := newRecord(e, time.Unix(0, 0), testKey(), 7)
	if r.Owner == "" || r.Caller != "" || r.Name != "" || r.Key != 7 {
		t.Fatalf("record of an event with only an owner: owner %q caller %q name %q key %d; want only owner and key 7", r.Owner, r.Caller, r.Name, r.Key)
	}
	r = newRecord(Event{Op: OpCMKUnwrap, Outcome: Success}, time.Unix(0, 0), nil, 0)
	if r.Key != 0 || r.Owner != "" {
		t.Fatalf("record of an event without identities has key %d, owner %q; want none", r.Key, r.Owner)
	}
}
