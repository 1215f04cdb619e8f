package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
)

// quiet is the tests' logger where the log is not what is tested.
var quiet = slog.New(slog.DiscardHandler)

// The vectors under testdata/vectors are frozen known answers: a fixed
// audit key, log id and events, recorded one at a time in closed mode (with
// the listed appends failing), give exactly the segments listed. They were
// generated once with
//
//	go test ./internal/audit/ -run TestVectors -update
//
// which writes only the files that do not exist and fails on a file that
// differs: delete a file on purpose to regenerate it. docs/audit.md
// documents the format and copies the worked vector.
var update = flag.Bool("update", false, "write missing test vectors under testdata/ (never overwrites a frozen one)")

const (
	vectorsDir = "testdata/vectors"
	auditDoc   = "../../docs/audit.md"
	workedName = "ok-one-segment.txt" // the vector copied into docs/audit.md
	vectorLog  = "5f3a9c0e12b47d86"
	generated  = "# Frozen known-answer vector, written once by `go test ./internal/audit/ -run TestVectors -update`.\n"
)

// vectorEvent is an Event as a vector file spells it (raw identities
// included: they are test data).
type vectorEvent struct {
	Time        string   `json:"time"`
	Op          string   `json:"op"`
	Outcome     string   `json:"outcome"`
	Status      int      `json:"status,omitempty"`
	Principal   string   `json:"principal,omitempty"`
	Roles       []string `json:"roles,omitempty"`
	Correlation string   `json:"correlation,omitempty"`
	Version     uint64   `json:"version,omitempty"`
	KEK         uint32   `json:"kek,omitempty"`
	CMK         string   `json:"cmk,omitempty"`
	Subject     string   `json:"subject,omitempty"`
	Count       int      `json:"count,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	Owner       string   `json:"owner,omitempty"`
	Caller      string   `json:"caller,omitempty"`
	Name        string   `json:"name,omitempty"`
}

func (v vectorEvent) event(t testing.TB) Event {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, v.Time)
	if err != nil {
		t.Fatalf("vector event time %q: %v", v.Time, err)
	}
	return Event{Time: at, Op: v.Op, Outcome: v.Outcome, Status: v.Status, Principal: v.Principal, Roles: v.Roles,
		Correlation: v.Correlation, Version: v.Version, KEK: v.KEK, CMK: v.CMK, Subject: v.Subject, Count: v.Count,
		Reason: v.Reason, Owner: v.Owner, Caller: v.Caller, Name: v.Name}
}

// field is one `key: value` of a vector file, with its indented
// continuation lines.
type field struct {
	key, value string
	more       []string
}

type vectorFile struct {
	path   string
	fields []field
}

// readVector parses a vector file: '#' starts a comment line, `key: value`
// a field (keys may repeat), an indented line continues the last field.
func readVector(t testing.TB, path string) vectorFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read vector: %v", err)
	}
	v := vectorFile{path: path}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxLineBytes)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRightFunc(sc.Text(), unicode.IsSpace)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case line[0] == ' ':
			if len(v.fields) == 0 {
				t.Fatalf("%s:%d: continuation line before any field", path, n)
			}
			f := &v.fields[len(v.fields)-1]
			f.more = append(f.more, strings.TrimSpace(line))
		default:
			key, value, ok := strings.Cut(line, ":")
			if !ok {
				t.Fatalf("%s:%d: want `key: value`, got %q", path, n, line)
			}
			v.fields = append(v.fields, field{key: key, value: strings.TrimSpace(value)})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read vector %s: %v", path, err)
	}
	return v
}

func (v vectorFile) all(key string) []field {
	var out []field
	for _, f := range v.fields {
		if f.key == key {
			out = append(out, f)
		}
	}
	return out
}

func (v vectorFile) one(t testing.TB, key string) string {
	t.Helper()
	fs := v.all(key)
	if len(fs) != 1 {
		t.Fatalf("%s: want one field %q, found %d", v.path, key, len(fs))
	}
	return fs[0].value
}

// vectorSpec is what a vector file describes: the inputs of a run.
type vectorSpec struct {
	name, comment string
	key           []byte
	keyVersion    uint32
	log           string
	fails         map[int]failMode // by append number
	events        []vectorEvent
}

func (v vectorFile) spec(t testing.TB) vectorSpec {
	t.Helper()
	s := vectorSpec{name: filepath.Base(v.path), comment: v.one(t, "comment"), log: v.one(t, "log"), fails: map[int]failMode{}}
	var err error
	if s.key, err = hex.DecodeString(v.one(t, "audit_key")); err != nil {
		t.Fatalf("%s: audit_key: %v", v.path, err)
	}
	kv, err := strconv.ParseUint(v.one(t, "key_version"), 10, 32)
	if err != nil {
		t.Fatalf("%s: key_version: %v", v.path, err)
	}
	s.keyVersion = uint32(kv)
	for _, f := range v.all("fail_append") {
		n, mode, _ := strings.Cut(f.value, " ")
		i, err := strconv.Atoi(n)
		m, ok := map[string]failMode{"lost": failLost, "written": failWritten}[mode]
		if err != nil || !ok {
			t.Fatalf("%s: fail_append %q: want `<n> lost` or `<n> written`", v.path, f.value)
		}
		s.fails[i] = m
	}
	for _, f := range v.all("event") {
		var e vectorEvent
		dec := json.NewDecoder(strings.NewReader(f.value))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("%s: event %s: %v", v.path, f.value, err)
		}
		s.events = append(s.events, e)
	}
	return s
}

// outcome of a vector run: what each Record returned, the segments, and what
// Verify notes.
type vectorRun struct {
	results  []string // "ok" or "unavailable"
	segments []field  // name, lines
	notes    []string // "<segment> <line> <kind>"
}

func runVector(t testing.TB, s vectorSpec) vectorRun {
	t.Helper()
	st := newMemStore()
	st.fail = func(n int) failMode { return s.fails[n] }
	tr := New(st, Options{Keys: &staticKeys{key: s.key, version: s.keyVersion}, LogID: s.log, Log: quiet,
		Now: func() time.Time { panic("a vector event has no time") }})
	var out vectorRun
	for _, e := range s.events {
		err := tr.Record(context.Background(), e.event(t))
		switch {
		case err == nil:
			out.results = append(out.results, "ok")
		case errors.Is(err, ErrUnavailable):
			out.results = append(out.results, "unavailable")
		default:
			t.Fatalf("Record: %v", err)
		}
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	names, _ := st.Segments(context.Background())
	for _, name := range names {
		data := st.content(name)
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		out.segments = append(out.segments, field{key: "segment", value: name, more: lines})
	}
	rep := verifyOK(t, st)
	for _, n := range rep.Notes {
		out.notes = append(out.notes, fmt.Sprintf("%s %d %s", n.Segment, n.Line, n.Kind))
	}
	return out
}

// TestVectors runs every vector: the same events, key and failures must
// give the same results and exactly the same segment bytes, and Verify must
// find the trail intact with exactly the vector's notes.
func TestVectors(t *testing.T) {
	if *update {
		writeVectors(t, generateVectors(t))
	}
	files, _ := filepath.Glob(filepath.Join(vectorsDir, "*.txt"))
	if len(files) == 0 {
		t.Fatalf("no vectors in %s (generate them with -update)", vectorsDir)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			v := readVector(t, path)
			got := runVector(t, v.spec(t))
			if want := strings.Fields(strings.ReplaceAll(v.one(t, "results"), ",", " ")); !slices.Equal(got.results, want) {
				t.Errorf("Record results = %v, want %v", got.results, want)
			}
			want := v.all("segment")
			if len(got.segments) != len(want) {
				t.Fatalf("%d segments written, the vector has %d", len(got.segments), len(want))
			}
			for i, w := range want {
				g := got.segments[i]
				if g.value != w.value {
					t.Fatalf("segment %d is named %s, want %s", i, g.value, w.value)
				}
				if !slices.Equal(g.more, w.more) {
					t.Fatalf("segment %s:\n%s\nwant (the frozen vector):\n%s", g.value, strings.Join(g.more, "\n"), strings.Join(w.more, "\n"))
				}
			}
			var wantNotes []string
			for _, f := range v.all("note") {
				wantNotes = append(wantNotes, f.value)
			}
			if !slices.Equal(got.notes, wantNotes) {
				t.Errorf("Verify notes = %q, want %q", got.notes, wantNotes)
			}
		})
	}
}

// TestVectorsIndependently re-derives every line of the vectors without
// record.go: the field order, the identity hashes (crypto/hmac over the
// documented input) and every prev (SHA-256 of the line before, within a
// segment).
func TestVectorsIndependently(t *testing.T) {
	order := []string{"v", "log", "seq", "prev", "continues", "time", "op", "outcome", "status", "principal", "roles",
		"correlation", "version", "kek", "cmk", "subject", "count", "reason", "key", "owner", "caller", "name"}
	files, _ := filepath.Glob(filepath.Join(vectorsDir, "*.txt"))
	for _, path := range files {
		v := readVector(t, path)
		s := v.spec(t)
		var earlier []string // the lines of the segments before
		for _, seg := range v.all("segment") {
			for i, line := range seg.more {
				keys := jsonKeys(t, line)
				if !isSubsequence(keys, order) {
					t.Errorf("%s %s line %d: keys %v are not in the documented order", s.name, seg.value, i+1, keys)
				}
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatal(err)
				}
				if i > 0 {
					sum := sha256hex(seg.more[i-1])
					if m["prev"] != sum {
						t.Errorf("%s %s line %d: prev = %v, want SHA-256 of line %d = %s", s.name, seg.value, i+1, m["prev"], i, sum)
					}
				} else if !linksBack(t, m, earlier) {
					t.Errorf("%s %s: the first record does not link to a record of an earlier segment (or to the log's start)", s.name, seg.value)
				}
				e := eventWithCorrelation(t, s, m["correlation"])
				for _, id := range []struct{ label, raw string }{{"owner", e.Owner}, {"caller", e.Caller}, {"name", e.Name}} {
					got, _ := m[id.label].(string)
					if want := independentHMAC(s.key, id.label, id.raw); got != want {
						t.Errorf("%s %s line %d: %s = %q, want %q", s.name, seg.value, i+1, id.label, got, want)
					}
				}
			}
			earlier = append(earlier, seg.more...)
		}
	}
}

// linksBack: the first record of a segment has seq 1 and prev 64 zeros, or
// its prev is the SHA-256 of an earlier line whose seq is one less.
func linksBack(t testing.TB, first map[string]any, earlier []string) bool {
	t.Helper()
	seq := first["seq"].(float64)
	if seq == 1 {
		return first["prev"] == strings.Repeat("0", 64)
	}
	for _, l := range earlier {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if sha256hex(l) == first["prev"] && m["seq"] == seq-1 {
			return true
		}
	}
	return false
}

func eventWithCorrelation(t testing.TB, s vectorSpec, c any) vectorEvent {
	t.Helper()
	for _, e := range s.events {
		if e.Correlation == c {
			return e
		}
	}
	t.Fatalf("%s: no event with correlation %v (every vector event has its own)", s.name, c)
	return vectorEvent{}
}

// jsonKeys lists an object's top-level keys in order.
func jsonKeys(t testing.TB, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

func isSubsequence(sub, of []string) bool {
	i := 0
	for _, s := range of {
		if i < len(sub) && sub[i] == s {
			i++
		}
	}
	return i == len(sub)
}

// generateVectors runs the vector specs and formats their files.
func generateVectors(t *testing.T) map[string][]byte {
	out := map[string][]byte{}
	for _, s := range vectorSpecs() {
		run := runVector(t, s)
		var b strings.Builder
		b.WriteString(generated)
		fmt.Fprintf(&b, "# Audit key 00 01 .. 1f (version %d), log %s; the events are recorded one at a time in closed mode.\n", s.keyVersion, s.log)
		fmt.Fprintf(&b, "comment: %s\n", s.comment)
		fmt.Fprintf(&b, "audit_key: %x\n", s.key)
		fmt.Fprintf(&b, "key_version: %d\n", s.keyVersion)
		fmt.Fprintf(&b, "log: %s\n", s.log)
		for _, n := range slices.Sorted(maps.Keys(s.fails)) {
			fmt.Fprintf(&b, "fail_append: %d %s\n", n, map[failMode]string{failLost: "lost", failWritten: "written"}[s.fails[n]])
		}
		for _, e := range s.events {
			j, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "event: %s\n", j)
		}
		fmt.Fprintf(&b, "results: %s\n", strings.Join(run.results, ", "))
		for _, seg := range run.segments {
			fmt.Fprintf(&b, "segment: %s\n", seg.value)
			for _, l := range seg.more {
				fmt.Fprintf(&b, "  %s\n", l)
			}
		}
		for _, n := range run.notes {
			fmt.Fprintf(&b, "note: %s\n", n)
		}
		out[s.name] = []byte(b.String())
	}
	return out
}

// writeVectors writes the vectors that do not exist yet and fails on any
// existing file that differs: frozen vectors are never overwritten.
func writeVectors(t *testing.T, vectors map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(vectorsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range slices.Sorted(maps.Keys(vectors)) {
		path := filepath.Join(vectorsDir, name)
		old, err := os.ReadFile(path)
		switch {
		case err == nil && bytes.Equal(old, vectors[name]):
		case err == nil:
			t.Errorf("%s is frozen and differs from what the generator writes now: not overwritten (delete it on purpose to regenerate)", path)
		case errors.Is(err, os.ErrNotExist):
			if err := os.WriteFile(path, vectors[name], 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s", path)
		default:
			t.Fatal(err)
		}
	}
}
