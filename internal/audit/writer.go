package audit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/credvault/credvault/internal/telemetry"
)

// run is the writer goroutine: it takes whatever is queued when it is free
// (up to MaxBatch records and maxAppendBytes), waits for more until
// CommitInterval has passed since the last append started, appends it all
// as one batch, and answers every record of the batch. It stops once no
// Record can queue any more and the queue is empty, or when Close gives up.
func (t *Trail) run() {
	defer close(t.done)
	defer t.cancel()
	pace := time.NewTimer(time.Hour)
	pace.Stop()
	var last time.Time // when the last append started
	var busy bool      // records were queued while it was in flight
	var carry *entry   // taken from the queue but too big for the last batch
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-t.queue:
			case <-t.noMore:
				select {
				case first = <-t.queue:
				default:
					return
				}
			case <-t.abort:
				t.failQueued(nil)
				return
			}
		}
		batch, size := []*entry{first}, first.size
		add := func(e *entry) bool {
			if size+e.size > maxAppendBytes {
				carry = e
				return false
			}
			batch, size = append(batch, e), size+e.size
			return true
		}
		var due time.Time // no waiting unless the trail is busy
		if busy {
			due = last.Add(t.opt.CommitInterval)
		}
	fill:
		for len(batch) < t.opt.MaxBatch {
			select {
			case <-t.abort:
				t.failQueued(append(batch, carry))
				return
			case e := <-t.queue:
				if !add(e) {
					break fill
				}
				continue
			default:
			}
			wait := time.Until(due)
			if wait <= 0 {
				break fill
			}
			pace.Reset(wait)
			select {
			case e := <-t.queue:
				pace.Stop()
				if !add(e) {
					break fill
				}
			case <-pace.C:
				break fill
			case <-t.noMore: // closing: write what is queued without waiting
				pace.Stop()
				due = time.Time{}
			case <-t.abort:
				pace.Stop()
				t.failQueued(append(batch, carry))
				return
			}
		}
		last = time.Now()
		t.write(batch)
		busy = carry != nil || len(t.queue) > 0
	}
}

// write appends one batch and answers its records.
func (t *Trail) write(batch []*entry) {
	recs := make([]record, len(batch))
	for i, e := range batch {
		recs[i] = e.rec
	}
	b := t.chain.prepare(recs, batch[0].at)
	ctx, cancel := context.WithTimeout(t.ctx, t.opt.AppendTimeout)
	err := t.store.Append(ctx, b.segment, b.data)
	cancel()
	if t.appendedHook != nil {
		defer t.appendedHook(err)
	}
	if err != nil {
		t.chain.fail(b)
		err = fmt.Errorf("append %d audit records to %s: %w: %w", len(batch), b.segment, ErrUnavailable, err)
		t.lost(len(batch), err, batch[0].span)
		for _, e := range batch {
			if e.done != nil {
				e.done <- err
			}
		}
		return
	}
	t.chain.commit(b)
	t.recovered()
	for _, e := range batch {
		if e.done != nil {
			e.done <- nil
		}
	}
	if t.opt.Telemetry == telemetry.Discard {
		return
	}
	for i, e := range batch {
		t.opt.Telemetry.Track(&telemetry.Event{Span: e.span, Name: "audit", Properties: properties(&b.records[i], b.segment)})
	}
}

// failQueued fails taken (nil entries skipped) and everything still
// queued: Close gave up waiting for them.
func (t *Trail) failQueued(taken []*entry) {
	var failed []*entry
	for _, e := range taken {
		if e != nil {
			failed = append(failed, e)
		}
	}
	for {
		select {
		case e := <-t.queue:
			failed = append(failed, e)
			continue
		default:
		}
		break
	}
	if len(failed) == 0 {
		return
	}
	err := fmt.Errorf("%d audit records still queued when Close gave up: %w: %w", len(failed), ErrUnavailable, errClosed)
	t.lost(len(failed), err, failed[0].span)
	for _, e := range failed {
		if e.done != nil {
			e.done <- err
		}
	}
}

// lost counts n records that will not be durable. The first loss of a burst
// (losses with no durable append in between) is logged at warn and, in open
// mode, sent as a telemetry.Exception; the burst's end is logged at info.
func (t *Trail) lost(n int, err error, span telemetry.Span) {
	t.failures.Add(int64(n))
	t.burstMu.Lock()
	first := !t.inBurst
	t.inBurst = true
	t.burstN += int64(n)
	t.burstMu.Unlock()
	if !first {
		return
	}
	t.opt.Log.Warn("audit records not written", "mode", t.opt.Mode, "log", t.opt.LogID, "records", n, "err", err)
	if t.opt.Mode == Open {
		t.opt.Telemetry.Track(&telemetry.Exception{Span: span, Type: "audit unavailable", Message: err.Error(),
			Properties: map[string]string{"mode": t.opt.Mode, "log": t.opt.LogID}})
	}
}

// recovered ends a burst of failures, if one is under way.
func (t *Trail) recovered() {
	t.burstMu.Lock()
	in, n := t.inBurst, t.burstN
	t.inBurst, t.burstN = false, 0
	t.burstMu.Unlock()
	if in {
		t.opt.Log.Info("audit records written again", "mode", t.opt.Mode, "log", t.opt.LogID, "lost", n)
	}
}

// properties are a durable record's telemetry copy: its fields as the line
// has them (hashes only, omitted where the line omits them) and the segment.
func properties(r *record, segment string) map[string]string {
	p := map[string]string{
		"v":       strconv.Itoa(r.V),
		"log":     r.Log,
		"seq":     strconv.FormatUint(r.Seq, 10),
		"prev":    r.Prev,
		"time":    r.Time,
		"op":      r.Op,
		"outcome": r.Outcome,
		"segment": segment,
	}
	set := func(k, v string) {
		if v != "" {
			p[k] = v
		}
	}
	num := func(k string, v uint64) {
		if v != 0 {
			p[k] = strconv.FormatUint(v, 10)
		}
	}
	set("continues", r.Continues)
	if r.Status != 0 {
		p["status"] = strconv.Itoa(r.Status)
	}
	set("principal", r.Principal)
	set("roles", strings.Join(r.Roles, ","))
	set("correlation", r.Correlation)
	num("version", r.Version)
	num("kek", uint64(r.KEK))
	set("cmk", r.CMK)
	set("subject", r.Subject)
	if r.Count != 0 {
		p["count"] = strconv.Itoa(r.Count)
	}
	set("reason", r.Reason)
	num("key", uint64(r.Key))
	set("owner", r.Owner)
	set("caller", r.Caller)
	set("name", r.Name)
	return p
}
