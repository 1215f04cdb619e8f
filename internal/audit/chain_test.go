package audit

import (
	"testing"
	"time"
)

// TestChainSegments: when the chain moves to a new segment, and what the
// new segment's first record says.
func TestChainSegments(t *testing.T) {
	rec := func() []record { return []record{newRecord(Event{Op: OpSecretList, Outcome: Success}, t0, nil, 0)} }
	c := newChain("c")
	b := c.prepare(rec(), t0)
	if b.segment != "2026/03/01/09/c-000000.jsonl" || b.records[0].Continues != "" || b.records[0].Seq != 1 {
		t.Fatalf("first batch: segment %s, record %+v", b.segment, b.records[0])
	}
	c.commit(b)
	for range maxSegmentAppends - 1 {
		c.commit(c.prepare(rec(), t0))
	}
	b = c.prepare(rec(), t0)
	if b.segment != "2026/03/01/09/c-000001.jsonl" {
		t.Fatalf("after %d appends the next goes to %s, want segment 000001", maxSegmentAppends, b.segment)
	}
	if r := b.records[0]; r.Continues != "2026/03/01/09/c-000000.jsonl" || r.Seq != maxSegmentAppends+1 {
		t.Fatalf("first record of segment 000001: continues %q, seq %d", r.Continues, r.Seq)
	}
	c.commit(b)
	b = c.prepare(rec(), t0.Add(-time.Hour))
	if b.segment != "2026/03/01/09/c-000001.jsonl" || b.records[0].Continues != "" {
		t.Fatalf("a record from an earlier hour went to %s (continues %q), want the current segment", b.segment, b.records[0].Continues)
	}
	c.fail(b)
	b2 := c.prepare(rec(), t0.Add(time.Hour))
	if b2.segment != "2026/03/01/10/c-000002.jsonl" || b2.records[0].Continues != "2026/03/01/09/c-000001.jsonl" || b2.records[0].Seq != b.records[0].Seq || b2.records[0].Prev != b.records[0].Prev {
		t.Fatalf("after a failure: segment %s, first record %+v; want segment 000002 at 10:00 continuing 000001 from the same place as the failed batch", b2.segment, b2.records[0])
	}
}
