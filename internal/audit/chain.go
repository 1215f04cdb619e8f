package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// maxSegmentAppends is when the trail moves to a new segment regardless of
// the hour: an Azure append blob takes at most 50,000 blocks.
const maxSegmentAppends = 40_000

// segmentID is what a segment name says: YYYY/MM/DD/HH/<log>-<nnnnnn>.jsonl.
type segmentID struct {
	Hour time.Time // UTC, on the hour: the hour of the segment's first record
	Log  string
	N    int // the segment's number in its log, from 0
}

func (s segmentID) String() string {
	return fmt.Sprintf("%s/%s-%06d.jsonl", s.Hour.UTC().Format("2006/01/02/15"), s.Log, s.N)
}

// parseSegmentName parses a segment name and accepts only the one spelling
// that String gives back.
func parseSegmentName(name string) (segmentID, error) {
	errName := errors.New("not a segment name (YYYY/MM/DD/HH/<log>-<nnnnnn>.jsonl)")
	if len(name) < len("2006/01/02/15/") || !strings.HasSuffix(name, ".jsonl") {
		return segmentID{}, errName
	}
	hour, err := time.Parse("2006/01/02/15/", name[:14])
	if err != nil {
		return segmentID{}, errName
	}
	base := strings.TrimSuffix(name[14:], ".jsonl")
	i := strings.LastIndexByte(base, '-')
	if i < 0 {
		return segmentID{}, errName
	}
	n, err := strconv.Atoi(base[i+1:])
	if err != nil || n < 0 || n > 1e9 {
		return segmentID{}, errName
	}
	id := segmentID{Hour: hour, Log: base[:i], N: n}
	if !validLogID(id.Log) || id.String() != name {
		return segmentID{}, errName
	}
	return id, nil
}

// lineHash is the chain's link: SHA-256 of a line without its "\n".
func lineHash(line []byte) [32]byte { return sha256.Sum256(line) }

// chain is the writer's position in its log: what the last acknowledged
// record was, and which segment the next batch goes to. Only the writer
// goroutine touches it.
type chain struct {
	log     string
	seq     uint64 // the last acknowledged record's seq; 0 before the first
	prev    string // hex hash of the last acknowledged line; zeroHash before the first
	cur     segmentID
	started bool // cur is a segment the trail has written to or tried to
	fresh   bool // no append to cur has succeeded yet
	broken  bool // an append to cur failed: never append to it again
	appends int  // successful appends to cur
	// continues is the name of the segment before cur, which cur's first
	// line names; "" for a log's first segment.
	continues string
}

func newChain(log string) *chain { return &chain{log: log, prev: zeroHash} }

// batch is one append prepared from a chain position.
type batch struct {
	segment string
	data    []byte   // the lines, each ending in "\n"
	records []record // with their place in the chain
	seq     uint64   // the last record's seq
	prev    string   // the last record's hash
}

// prepare places records (already hashed, with their times) after the last
// acknowledged one: the segment (a new one at a new hour, after
// maxSegmentAppends appends, or after a failure), seq, prev and continues.
// The position advances only on commit.
func (c *chain) prepare(recs []record, firstTime time.Time) batch {
	hour := firstTime.UTC().Truncate(time.Hour)
	switch {
	case !c.started:
		c.cur, c.started, c.fresh, c.broken, c.appends = segmentID{Hour: hour, Log: c.log}, true, true, false, 0
	case c.broken || c.appends >= maxSegmentAppends || hour.After(c.cur.Hour):
		c.continues = c.cur.String()
		c.cur, c.fresh, c.broken, c.appends = segmentID{Hour: hour, Log: c.log, N: c.cur.N + 1}, true, false, 0
	}
	continues := ""
	if c.fresh {
		continues = c.continues // only the segment's first line says what it continues
	}
	b := batch{segment: c.cur.String(), seq: c.seq, prev: c.prev, records: recs}
	for i := range recs {
		r := &recs[i]
		r.Log, r.Seq, r.Prev = c.log, b.seq+1, b.prev
		if i == 0 {
			r.Continues = continues
		}
		line := r.marshal()
		h := lineHash(line)
		b.seq, b.prev = r.Seq, hex.EncodeToString(h[:])
		b.data = append(append(b.data, line...), '\n')
	}
	return b
}

// commit advances the chain past an acknowledged batch.
func (c *chain) commit(b batch) {
	c.seq, c.prev = b.seq, b.prev
	c.fresh = false
	c.appends++
}

// fail abandons the batch's segment: the next batch starts a new one that
// continues it, linked to the last acknowledged record.
func (c *chain) fail(b batch) {
	c.broken = true
}
