package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/audit/auditfile"
)

var quiet = slog.New(slog.DiscardHandler)

// keys is a KeySource with the key 00 01 .. 1f, version 1.
type keys struct{}

func (keys) AuditKey(context.Context) ([]byte, uint32, error) {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	return k, 1, nil
}

// failing wraps a Store and fails the listed appends (1-based): "lost"
// writes nothing, "written" writes everything and still fails.
type failing struct {
	audit.Store
	n    int
	fail map[int]string
}

var errInjected = errors.New("injected append failure")

func (f *failing) Append(ctx context.Context, segment string, data []byte) error {
	f.n++
	switch f.fail[f.n] {
	case "lost":
		return errInjected
	case "written":
		if err := f.Store.Append(ctx, segment, data); err != nil {
			return err
		}
		return errInjected
	}
	return f.Store.Append(ctx, segment, data)
}

// The trail that buildTrail writes: 18 records, one append each, over
// three hours, with three failed appends.
const (
	seg0 = "2026/03/01/09/tamper-000000.jsonl" // seq 1-5, and line 6: the tail of failed append 6
	seg1 = "2026/03/01/09/tamper-000001.jsonl" // seq 6-8
	seg2 = "2026/03/01/10/tamper-000002.jsonl" // seq 9-11; append 13 fails (nothing written)
	// segment 000003 never exists: append 14, its first, fails
	seg4 = "2026/03/01/10/tamper-000004.jsonl" // seq 12
	seg5 = "2026/03/01/11/tamper-000005.jsonl" // seq 13-15
)

func buildTrail(t testing.TB) (dir string, st *auditfile.Store) {
	t.Helper()
	dir = t.TempDir()
	st, err := auditfile.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fs := &failing{Store: st, fail: map[int]string{6: "written", 13: "lost", 14: "lost"}}
	tr := audit.New(fs, audit.Options{Keys: keys{}, LogID: "tamper", Log: quiet})
	start := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	for i := 1; i <= 18; i++ {
		at := start.Add(time.Duration(i) * time.Minute)
		switch {
		case i >= 16:
			at = at.Add(2 * time.Hour)
		case i >= 10:
			at = at.Add(time.Hour)
		}
		e := audit.Event{Time: at, Op: audit.OpSecretRead, Outcome: audit.Success, Status: 200, Principal: audit.PrincipalUser,
			Correlation: fmt.Sprintf("corr-%d", i), Owner: "contoso/alice", Caller: "contoso/alice", Name: fmt.Sprintf("secret-%d", i)}
		err := tr.Record(context.Background(), e)
		if failed := fs.fail[i] != ""; failed != (err != nil) {
			t.Fatalf("record %d: Record = %v", i, err)
		}
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dir, st
}

// finding is a Problem or Note without its detail.
type finding struct {
	segment string
	line    int
	kind    string
}

func (f finding) String() string { return fmt.Sprintf("%s:%d %s", f.segment, f.line, f.kind) }

func findings(ps []audit.Problem) []finding {
	var out []finding
	for _, p := range ps {
		out = append(out, finding{p.Segment, p.Line, p.Kind})
	}
	return out
}

type edit func(t testing.TB, dir string)

// TestVerifyFindsTampering: a trail written through auditfile (with
// failed appends in the middle), then changed in one way.
func TestVerifyFindsTampering(t *testing.T) {
	intactNotes := []finding{{seg0, 6, audit.KindTail}, {"tamper-000003", 0, audit.KindTail}}
	cases := []struct {
		name     string
		edit     edit
		from     time.Time
		problems []finding
		notes    []finding // checked when not nil
	}{
		{name: "intact, with failed appends", notes: intactNotes},
		{name: "edited record", edit: editLine(seg1, 2, `"outcome":"success"`, `"outcome":"failure"`),
			problems: []finding{{seg1, 3, audit.KindBrokenLink}}, notes: intactNotes},
		{name: "record edited into a malformed one", edit: editLine(seg1, 2, `"v":1`, `"v":2`),
			problems: []finding{{seg1, 2, audit.KindMalformed}, {seg1, 3, audit.KindBrokenLink}}},
		{name: "removed record", edit: removeLine(seg1, 2),
			problems: []finding{{seg1, 2, audit.KindBrokenLink}, {seg1, 2, audit.KindSequence}}},
		{name: "removed last record of a segment", edit: removeLine(seg2, 3),
			problems: []finding{{"tamper-000003", 0, audit.KindGap}, {seg4, 1, audit.KindBrokenLink}}},
		{name: "reordered lines", edit: swapLines(seg1, 2, 3),
			problems: []finding{{seg1, 2, audit.KindBrokenLink}, {seg1, 2, audit.KindSequence}, {seg1, 3, audit.KindBrokenLink}, {seg1, 3, audit.KindSequence}}},
		{name: "truncated last segment", edit: truncate(seg5, 10),
			problems: []finding{{seg5, 3, audit.KindTruncated}}},
		{name: "deleted middle segment", edit: remove(seg2),
			problems: []finding{{"tamper-000002", 0, audit.KindGap}, {"tamper-000003", 0, audit.KindGap}, {seg4, 1, audit.KindBrokenLink}}},
		{name: "deleted first segment", edit: remove(seg0),
			problems: []finding{{"tamper-000000", 0, audit.KindGap}, {seg1, 1, audit.KindBrokenLink}}},
		{name: "record appended by hand", edit: appendCopy(seg5, 3),
			problems: []finding{{seg5, 4, audit.KindBrokenLink}, {seg5, 4, audit.KindSequence}}},
		{name: "continues edited", edit: editLine(seg4, 1, "tamper-000003", "tamper-000002"),
			problems: []finding{{seg4, 1, audit.KindBrokenLink}, {seg5, 1, audit.KindBrokenLink}}},
		{name: "segment copied under another hour", edit: copyFile(seg1, "2026/03/01/12/tamper-000001.jsonl"),
			problems: []finding{{"2026/03/01/12/tamper-000001.jsonl", 0, audit.KindSequence}}},
		{name: "stray file", edit: writeFile("2026/03/01/09/notes.jsonl", "{}\n"),
			problems: []finding{{"2026/03/01/09/notes.jsonl", 0, audit.KindMalformed}}},
		{name: "from 10:30 skips an edit in the first hour", edit: editLine(seg1, 2, `"outcome":"success"`, `"outcome":"failure"`),
			from: time.Date(2026, 3, 1, 10, 30, 0, 0, time.UTC), notes: []finding{{"tamper-000003", 0, audit.KindTail}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, st := buildTrail(t)
			if c.edit != nil {
				c.edit(t, dir)
			}
			rep, err := audit.Verify(context.Background(), st, audit.VerifyOptions{From: c.from})
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got := findings(rep.Problems); !slices.Equal(got, c.problems) {
				t.Fatalf("problems %v, want %v\n%v", got, c.problems, rep.Problems)
			}
			if got := findings(rep.Notes); c.notes != nil && !slices.Equal(got, c.notes) {
				t.Fatalf("notes %v, want %v\n%v", got, c.notes, rep.Notes)
			}
			if rep.OK() != (len(c.problems) == 0) {
				t.Fatalf("OK() = %v with %d problems", rep.OK(), len(rep.Problems))
			}
			noHashes(t, rep)
		})
	}
}

// TestVerifyCounts: what an intact trail's report counts.
func TestVerifyCounts(t *testing.T) {
	_, st := buildTrail(t)
	rep, err := audit.Verify(context.Background(), st, audit.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// 16 lines: 15 acknowledged records and one tail.
	if rep.Logs != 1 || rep.Segments != 5 || rep.Records != 16 {
		t.Fatalf("report counts %d logs, %d segments, %d records; want 1, 5, 16", rep.Logs, rep.Segments, rep.Records)
	}
}

// noHashes: no detail holds 32 or more hex digits (an identity hash, or a
// line hash).
func noHashes(t *testing.T, rep audit.Report) {
	t.Helper()
	hexRun := regexp.MustCompile(`[0-9a-f]{32}`)
	for _, p := range append(rep.Problems, rep.Notes...) {
		if hexRun.MatchString(p.Detail) {
			t.Fatalf("a finding's detail holds a hash: %q", p.Detail)
		}
	}
}

func path(dir, seg string) string { return filepath.Join(dir, filepath.FromSlash(seg)) }

func readLines(t testing.TB, dir, seg string) []string {
	t.Helper()
	data, err := os.ReadFile(path(dir, seg))
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitAfter(string(data), "\n")[:bytes.Count(data, []byte("\n"))]
}

func writeLines(t testing.TB, dir, seg string, lines []string) {
	t.Helper()
	if err := os.WriteFile(path(dir, seg), []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
}

func editLine(seg string, n int, old, new string) edit {
	return func(t testing.TB, dir string) {
		lines := readLines(t, dir, seg)
		if !strings.Contains(lines[n-1], old) {
			t.Fatalf("%s line %d has no %q", seg, n, old)
		}
		lines[n-1] = strings.Replace(lines[n-1], old, new, 1)
		writeLines(t, dir, seg, lines)
	}
}

func removeLine(seg string, n int) edit {
	return func(t testing.TB, dir string) {
		writeLines(t, dir, seg, slices.Delete(readLines(t, dir, seg), n-1, n))
	}
}

func swapLines(seg string, a, b int) edit {
	return func(t testing.TB, dir string) {
		lines := readLines(t, dir, seg)
		lines[a-1], lines[b-1] = lines[b-1], lines[a-1]
		writeLines(t, dir, seg, lines)
	}
}

func appendCopy(seg string, n int) edit {
	return func(t testing.TB, dir string) {
		lines := readLines(t, dir, seg)
		writeLines(t, dir, seg, append(lines, lines[n-1]))
	}
}

func truncate(seg string, cut int64) edit {
	return func(t testing.TB, dir string) {
		info, err := os.Stat(path(dir, seg))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path(dir, seg), info.Size()-cut); err != nil {
			t.Fatal(err)
		}
	}
}

func remove(seg string) edit {
	return func(t testing.TB, dir string) {
		if err := os.Remove(path(dir, seg)); err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(seg, content string) edit {
	return func(t testing.TB, dir string) {
		if err := os.MkdirAll(filepath.Dir(path(dir, seg)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path(dir, seg), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func copyFile(from, to string) edit {
	return func(t testing.TB, dir string) {
		data, err := os.ReadFile(path(dir, from))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(to, string(data))(t, dir)
	}
}
