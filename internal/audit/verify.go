package audit

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// VerifyOptions narrow what Verify reads.
type VerifyOptions struct {
	// From skips, in each log, the segments before the first one whose hour
	// is not before From's hour. Zero: everything.
	From time.Time
}

// Problem kinds (Report.Problems), and the kind of Report.Notes.
const (
	KindGap        = "gap"         // a segment is missing
	KindBrokenLink = "broken link" // prev (or continues) does not name what comes before
	KindMalformed  = "malformed"   // a line, or a segment name, that is not a record of this log
	KindTruncated  = "truncated"   // a log's last segment ends in a partial line
	KindSequence   = "sequence"    // seq does not follow, or a segment number appears twice
	KindTail       = "tail"        // a note: records (or a segment) that a failed append left and the chain does not continue
)

// Problem is one finding: where (segment name, 1-based line; 0 for the whole
// segment) and what was expected. Details hold positions, seq numbers and
// segment names, never a hash of an identity.
type Problem struct {
	Segment string
	Line    int
	Kind    string
	Detail  string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s line %d: %s: %s", p.Segment, p.Line, p.Kind, p.Detail)
}

// Report is what Verify found. Notes are expected irregularities (the
// unacknowledged tail of a failed append); Problems mean the trail is not
// intact.
type Report struct {
	Logs, Segments, Records int
	Notes                   []Problem
	Problems                []Problem
}

// OK reports a trail without problems.
func (r Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) problem(seg string, line int, kind, format string, args ...any) {
	r.Problems = append(r.Problems, Problem{Segment: seg, Line: line, Kind: kind, Detail: fmt.Sprintf(format, args...)})
}

func (r *Report) note(seg string, line int, format string, args ...any) {
	r.Notes = append(r.Notes, Problem{Segment: seg, Line: line, Kind: KindTail, Detail: fmt.Sprintf(format, args...)})
}

// Verify reads every segment and checks every chain (docs/audit.md,
// "Verify"): segments grouped by log and ordered by number; every line a
// canonical record of its log; seq up by one and prev the SHA-256 of the
// line before; each segment's first record naming the segment before it and
// linking to the last acknowledged record. An error means the trail could
// not be read, not that it is broken: that is the report's Problems.
func Verify(ctx context.Context, r Reader, opt VerifyOptions) (Report, error) {
	names, err := r.Segments(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("verify: list segments: %w", err)
	}
	var rep Report
	logs := map[string][]segmentID{}
	for _, name := range names {
		id, err := parseSegmentName(name)
		if err != nil {
			rep.problem(name, 0, KindMalformed, "%v", err)
			continue
		}
		logs[id.Log] = append(logs[id.Log], id)
	}
	for _, log := range slices.Sorted(maps.Keys(logs)) {
		segs := logs[log]
		slices.SortFunc(segs, func(a, b segmentID) int {
			return cmp.Or(cmp.Compare(a.N, b.N), a.Hour.Compare(b.Hour))
		})
		segs = dropDuplicates(&rep, segs)
		first := 0
		if !opt.From.IsZero() {
			from := opt.From.UTC().Truncate(time.Hour)
			first = slices.IndexFunc(segs, func(s segmentID) bool { return !s.Hour.Before(from) })
			if first < 0 {
				continue
			}
		}
		rep.Logs++
		v := &logCheck{rep: &rep, log: log, lastN: -1}
		if opt.From.IsZero() || segs[first].N == 0 {
			v.anchor = &link{} // the log's start: seq 0, prev 64 zeros
		} else {
			v.unlinked = true // its predecessor was skipped: not a gap
			v.lastN = segs[first].N - 1
		}
		kept := segs[first:]
		for i, s := range kept {
			if err := ctx.Err(); err != nil {
				return rep, fmt.Errorf("verify: %w", err)
			}
			if err := v.segment(ctx, r, s, i == len(kept)-1); err != nil {
				return rep, err
			}
		}
		v.gaps() // missing segments that no later record linked across
	}
	return rep, nil
}

// dropDuplicates reports and drops a second segment with a number already
// seen (segs sorted by number).
func dropDuplicates(rep *Report, segs []segmentID) []segmentID {
	out := segs[:0]
	for _, s := range segs {
		if n := len(out); n > 0 && out[n-1].N == s.N {
			rep.problem(s.String(), 0, KindSequence, "segment number %06d appears twice (also %s)", s.N, out[n-1])
			continue
		}
		out = append(out, s)
	}
	return out
}

// link is a record as a link target: its seq, the hash of its line, and
// where it is.
type link struct {
	seq  uint64
	hash [32]byte
	line int
}

// segRead is what one segment held, for the next segment to link into.
type segRead struct {
	id      segmentID
	records []link // the records that parsed, in line order
	lines   int    // complete lines
	partial int    // the line number of a final partial line, or 0
}

// logCheck walks one log's segments in order.
type logCheck struct {
	rep      *Report
	log      string
	unlinked bool     // the next first record starts the check: no link to verify
	lastN    int      // the number of the segment read last
	last     *segRead // the segment read last
	missing  []int    // segment numbers not found, since the last link
	anchor   *link    // the last link target, if the chain can still reach it
	// pending are the segments read since anchor: where the next segment's
	// first record may link to. What lies after its link target was not
	// acknowledged (a failed append).
	pending []*segRead
}

// segment checks one segment: every line, and its first record's link.
func (v *logCheck) segment(ctx context.Context, r Reader, id segmentID, last bool) error {
	name := id.String()
	for n := v.lastN + 1; n < id.N; n++ {
		v.missing = append(v.missing, n)
	}
	rc, err := r.Open(ctx, name)
	if err != nil {
		return fmt.Errorf("verify: open %s: %w", name, err)
	}
	defer rc.Close()
	v.rep.Segments++
	s := &segRead{id: id}
	lines := newLineReader(rc)
	var prev *record // the previous line's record, nil if it did not parse
	var prevHash [32]byte
	for n := 1; ; n++ {
		l, err := lines.next()
		if err != nil {
			return fmt.Errorf("verify: read %s: %w", name, err)
		}
		if l == nil {
			break
		}
		if l.partial {
			s.partial = n
			if last {
				v.rep.problem(name, n, KindTruncated, "line %d has no final newline: the log ends in a partial record", n)
			}
			break
		}
		s.lines = n
		rec, perr := v.parse(name, id, n, l)
		if n == 1 {
			v.linkFirst(s, rec, perr == nil)
		} else {
			if rec.Prev != "" && rec.Prev != hex.EncodeToString(prevHash[:]) {
				v.rep.problem(name, n, KindBrokenLink, "prev is not the hash of line %d", n-1)
			}
			if perr == nil && prev != nil && rec.Seq != prev.Seq+1 {
				v.rep.problem(name, n, KindSequence, "seq %d follows seq %d on line %d: want %d", rec.Seq, prev.Seq, n-1, prev.Seq+1)
			}
		}
		prev, prevHash = nil, l.hash
		if perr == nil {
			v.rep.Records++
			prev = &rec
			s.records = append(s.records, link{seq: rec.Seq, hash: l.hash, line: n})
		}
	}
	if s.lines == 0 && s.partial == 0 && last {
		v.rep.note(name, 0, "empty segment")
	}
	v.pending = append(v.pending, s)
	v.lastN, v.last = id.N, s
	return nil
}

// parse parses line n and checks what one line can show on its own.
// It returns the record even when a check fails (for the chain checks), and
// an error when the line is not a record of this segment.
func (v *logCheck) parse(name string, id segmentID, n int, l *line) (record, error) {
	if l.tooLong {
		v.rep.problem(name, n, KindMalformed, "line %d is longer than %d bytes", n, maxLineBytes)
		return record{}, errMalformed
	}
	rec, err := parseRecord(l.data)
	if err != nil {
		v.rep.problem(name, n, KindMalformed, "line %d: %s", n, strings.TrimPrefix(err.Error(), errMalformed.Error()+": "))
		return record{}, err
	}
	switch {
	case rec.Log != id.Log:
		v.rep.problem(name, n, KindMalformed, "line %d belongs to another log than the segment's", n)
		return rec, errMalformed
	case n > 1 && rec.Continues != "":
		v.rep.problem(name, n, KindMalformed, "line %d names a segment it continues: only a segment's first line does", n)
	case n == 1:
		if t, _ := time.Parse(timeLayout, rec.Time); !t.Truncate(time.Hour).Equal(id.Hour) {
			v.rep.problem(name, n, KindMalformed, "the first record's time is not in the segment's hour %s", id.Hour.Format("2006-01-02T15Z"))
		}
	}
	return rec, nil
}

// linkFirst checks the first record of a segment against what came before:
// it names the segment before it in continues and links (prev, seq) to the
// last acknowledged record, which is in one of the pending segments (or is
// the anchor). What the pending segments hold after that record is the tail
// of a failed append, and a missing segment that the link crosses held no
// acknowledged record: notes. ok is false when the first line is not a
// record: nothing before it can then be confirmed. A segment without a
// complete line is not linked: the next one links across it.
func (v *logCheck) linkFirst(s *segRead, rec record, ok bool) {
	name := s.id.String()
	if v.unlinked || !ok {
		if !ok {
			v.gaps()
		}
		v.unlinked, v.missing, v.anchor, v.pending = false, nil, nil, nil
		return
	}
	if s.id.N == 0 {
		if rec.Continues != "" {
			v.rep.problem(name, 1, KindBrokenLink, "the log's first segment names a segment it continues")
		}
	} else if want := (segmentID{Log: s.id.Log, N: s.id.N - 1}); !continuesOK(rec.Continues, want, v.last) {
		v.rep.problem(name, 1, KindBrokenLink, "continues %q: want segment %06d of this log", rec.Continues, want.N)
	}
	target, seg, found := v.find(rec.Prev)
	if !found {
		v.gaps()
		v.rep.problem(name, 1, KindBrokenLink, "prev is not the hash of a record of segment %06d (or of a segment before it that the chain still reaches)", s.id.N-1)
		v.anchor, v.pending = nil, nil
		return
	}
	if rec.Seq != target.seq+1 {
		v.rep.problem(name, 1, KindSequence, "seq %d follows seq %d, the record it links to: want %d", rec.Seq, target.seq, target.seq+1)
	}
	v.tails(target, seg)
	for _, n := range v.missing {
		v.rep.note(v.missingName(n), 0, "segment %06d is missing: the chain continues across it, so it held no acknowledged record (its first append failed)", n)
	}
	v.missing, v.anchor, v.pending = nil, &target, nil
}

// continuesOK: continues names segment want (by log and number), and when
// that segment was read, exactly its name.
func continuesOK(continues string, want segmentID, last *segRead) bool {
	id, err := parseSegmentName(continues)
	if err != nil || id.Log != want.Log || id.N != want.N {
		return false
	}
	return last == nil || last.id.N != want.N || last.id.String() == continues
}

// find looks for the record whose line hashes to prev, newest first: in
// the pending segments, then the anchor. seg is the index of its pending
// segment, or -1 for the anchor.
func (v *logCheck) find(prev string) (link, int, bool) {
	h, err := hex.DecodeString(prev)
	if err != nil || len(h) != 32 {
		return link{}, 0, false
	}
	want := [32]byte(h)
	for i := len(v.pending) - 1; i >= 0; i-- {
		recs := v.pending[i].records
		for j := len(recs) - 1; j >= 0; j-- {
			if recs[j].hash == want {
				return recs[j], i, true
			}
		}
	}
	if v.anchor != nil && v.anchor.hash == want {
		return *v.anchor, -1, true
	}
	return link{}, 0, false
}

// tails notes what the pending segments hold after the link target (in
// pending segment seg; -1: the anchor, before them all).
func (v *logCheck) tails(target link, seg int) {
	for i := max(seg, 0); i < len(v.pending); i++ {
		s := v.pending[i]
		from := 1
		if i == seg {
			from = target.line + 1
		}
		name := s.id.String()
		switch {
		case from <= s.lines:
			lines := fmt.Sprintf("line %d comes", from)
			if from < s.lines {
				lines = fmt.Sprintf("lines %d-%d come", from, s.lines)
			}
			v.rep.note(name, from, "%s after seq %d, but the next segment continues the chain from seq %d: the tail of an append that failed", lines, target.seq, target.seq)
		case s.lines == 0 && s.partial == 0:
			v.rep.note(name, 0, "empty segment: its first append failed")
		}
		if s.partial > 0 {
			v.rep.note(name, s.partial, "partial line: a write that did not complete")
		}
	}
}

// gaps reports the missing segments as problems.
func (v *logCheck) gaps() {
	for _, n := range v.missing {
		v.rep.problem(v.missingName(n), 0, KindGap, "segment %06d of the log is missing", n)
	}
	v.missing = nil
}

// missingName names a segment that was not found: its hour is unknown.
func (v *logCheck) missingName(n int) string { return fmt.Sprintf("%s-%06d", v.log, n) }
