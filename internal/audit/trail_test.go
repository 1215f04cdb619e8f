package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/telemetry"
)

var t0 = time.Date(2026, 3, 1, 9, 15, 0, 0, time.UTC)

// TestGroupCommit: 64 concurrent closed-mode Records share appends. The
// store holds the first append until all 64 are queued, so everything
// after the first batch goes in one more append.
func TestGroupCommit(t *testing.T) {
	st := newMemStore()
	st.gate = make(chan struct{})
	tr := New(st, Options{Keys: newKeys(), LogID: "group", Log: quiet})
	closeTrail(t, tr)
	const n = 64
	var queued sync.WaitGroup
	queued.Add(n)
	tr.queuedHook = queued.Done // before the first Record: the writer reads it only after one

	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- tr.Record(context.Background(), userRead(i)) }()
	}
	queued.Wait()
	close(st.gate)
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	if got := st.appendCount(); got > 2 {
		t.Fatalf("%d concurrent records took %d appends, want at most 2 (one batch in flight, one for the rest)", n, got)
	}
	rep := verifyOK(t, st)
	if rep.Records != n || rep.Segments != 1 {
		t.Fatalf("Verify read %d records in %d segments, want %d in 1", rep.Records, rep.Segments, n)
	}
}

// TestCommitInterval: a record that finds the trail idle is appended at
// once; records queued while an append is in flight mean the trail is busy,
// so they wait until CommitInterval after that append began and share one
// append; Close writes them without waiting out the interval.
func TestCommitInterval(t *testing.T) {
	st := newMemStore()
	st.gate = make(chan struct{})
	st.entered = make(chan struct{}, 4)
	tr := New(st, Options{Keys: newKeys(), LogID: "paced", Log: quiet, CommitInterval: time.Hour})
	const n = 8
	var queued sync.WaitGroup
	queued.Add(1 + n)
	tr.queuedHook = queued.Done
	first := make(chan error, 1)
	go func() { first <- tr.Record(context.Background(), userRead(0)) }()
	<-st.entered // appended at once, not in an hour
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- tr.Record(context.Background(), userRead(1+i)) }()
	}
	queued.Wait()
	close(st.gate)
	if err := <-first; err != nil {
		t.Fatalf("first Record: %v", err)
	}
	select {
	case <-st.entered:
		t.Fatalf("the %d records queued behind an append were appended without waiting out the interval", n)
	case <-time.After(50 * time.Millisecond):
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	if got := st.appendCount(); got != 2 {
		t.Fatalf("%d appends, want 2: one at once, one for the %d that waited", got, n)
	}
	if rep := verifyOK(t, st); rep.Records != 1+n {
		t.Fatalf("%d records written, want %d", rep.Records, 1+n)
	}
}

// TestMaxBatch: a batch holds at most MaxBatch records.
func TestMaxBatch(t *testing.T) {
	st := newMemStore()
	st.gate = make(chan struct{})
	tr := New(st, Options{Keys: newKeys(), Mode: Open, LogID: "batch", Log: quiet, MaxBatch: 4})
	for i := range 9 {
		tr.Record(context.Background(), userRead(i))
	}
	close(st.gate)
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := st.appendCount(); got < 3 {
		t.Fatalf("9 records with MaxBatch 4 took %d appends, want at least 3", got)
	}
	if rep := verifyOK(t, st); rep.Records != 9 {
		t.Fatalf("%d records written, want 9", rep.Records)
	}
}

// TestFailures: what each mode returns, and counts, when a record cannot be
// made durable.
func TestFailures(t *testing.T) {
	cases := []struct {
		name  string
		mode  string
		store func() *memStore
		keys  func() *staticKeys
		event Event
	}{
		{"closed, store fails", Closed, failingStore, newKeys, userRead(0)},
		{"open, store fails", Open, failingStore, newKeys, userRead(0)},
		{"closed, audit key fails", Closed, newMemStore, brokenKeys, userRead(0)},
		{"open, audit key fails", Open, newMemStore, brokenKeys, userRead(0)},
		{"closed, event too large", Closed, newMemStore, newKeys, Event{Op: OpSecretRead, Subject: strings.Repeat("x", maxEventText+1)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := c.store()
			tr := New(st, Options{Mode: c.mode, Keys: c.keys(), Log: quiet})
			err := tr.Record(context.Background(), c.event)
			if c.mode == Closed && !errors.Is(err, ErrUnavailable) {
				t.Fatalf("closed mode: Record = %v, want an error wrapping ErrUnavailable", err)
			}
			if c.mode == Open && err != nil {
				t.Fatalf("open mode: Record = %v, want nil", err)
			}
			if err := tr.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := tr.Failures(); got != 1 {
				t.Fatalf("Failures = %d, want 1", got)
			}
		})
	}
}

func failingStore() *memStore {
	st := newMemStore()
	st.fail = func(int) failMode { return failLost }
	return st
}

func brokenKeys() *staticKeys {
	k := newKeys()
	k.err = errors.New("key vault unreachable")
	return k
}

// TestFailedAppendMovesOn: after a failed append the trail never appends to
// that segment again; the next segment continues it from the last
// acknowledged record, and Verify finds the chain intact.
func TestFailedAppendMovesOn(t *testing.T) {
	for _, mode := range []failMode{failLost, failWritten, failPartial} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			st := newMemStore()
			st.fail = failAt(mode, 2, 3)
			tr := New(st, Options{Keys: newKeys(), LogID: "moves", Log: quiet, Now: func() time.Time { return t0 }})
			var results []bool
			for i := range 5 {
				results = append(results, tr.Record(context.Background(), userRead(i)) == nil)
			}
			if err := tr.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if want := []bool{true, false, false, true, true}; fmt.Sprint(results) != fmt.Sprint(want) {
				t.Fatalf("Record succeeded %v, want %v", results, want)
			}
			if got := tr.Failures(); got != 2 {
				t.Fatalf("Failures = %d, want 2", got)
			}
			names, _ := st.Segments(context.Background())
			last := names[len(names)-1]
			if !strings.HasSuffix(last, "moves-000002.jsonl") {
				t.Fatalf("segments %v: want the last to be number 000002 (two failed appends, each abandoning its segment)", names)
			}
			first, _, _ := bytes.Cut(st.content(last), []byte("\n"))
			r, err := parseRecord(first)
			if err != nil {
				t.Fatal(err)
			}
			if r.Seq != 2 || r.Continues != strings.Replace(last, "000002", "000001", 1) {
				t.Fatalf("first record of %s: seq %d continues %q; want seq 2, continuing segment 000001", last, r.Seq, r.Continues)
			}
			rep := verifyOK(t, st)
			if rep.Records < 3 {
				t.Fatalf("Verify read %d records, want at least 3", rep.Records)
			}
			if mode != failLost && len(rep.Notes) == 0 {
				t.Fatalf("Verify notes nothing about what the failed appends wrote")
			}
		})
	}
}

// TestFailureBursts: in open mode a burst of failures is logged once at
// warn and sent once as a telemetry.Exception; its end is logged at info;
// the logs never hold a raw identity.
func TestFailureBursts(t *testing.T) {
	st := newMemStore()
	st.fail = failAt(failLost, 1, 2, 3, 5)
	var logs bytes.Buffer
	sk := &sink{}
	tr := New(st, Options{Mode: Open, Keys: newKeys(), Log: slog.New(slog.NewJSONHandler(&logs, nil)), Telemetry: sk})
	appended := make(chan error)
	tr.appendedHook = func(err error) { appended <- err }
	for i := range 6 {
		if err := tr.Record(context.Background(), userRead(i)); err != nil {
			t.Fatalf("open mode: Record = %v", err)
		}
		<-appended
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := tr.Failures(); got != 4 {
		t.Fatalf("Failures = %d, want 4", got)
	}
	out := logs.String()
	if got := strings.Count(out, `"level":"WARN"`); got != 2 {
		t.Fatalf("%d warnings for two bursts of failures, want 2:\n%s", got, out)
	}
	if !strings.Contains(out, `"lost":3`) {
		t.Fatalf("the end of the first burst (3 records lost) is not logged:\n%s", out)
	}
	if got := len(sk.exceptions()); got != 2 {
		t.Fatalf("%d exceptions sent for two bursts, want 2", got)
	}
	for _, raw := range []string{"contoso/alice", "secret-1"} {
		if strings.Contains(out, raw) {
			t.Fatalf("the log holds the raw identifier %q:\n%s", raw, out)
		}
	}
}

// TestOpenQueueFull: with the writer stuck and the queue full, open-mode
// Record drops and counts, and never blocks.
func TestOpenQueueFull(t *testing.T) {
	st := newMemStore()
	st.gate = make(chan struct{})
	tr := New(st, Options{Mode: Open, Keys: newKeys(), Log: quiet, QueueSize: 2, MaxBatch: 1}) // at most 3 records get past the stuck writer
	const n = 10
	for i := range n {
		if err := tr.Record(context.Background(), userRead(i)); err != nil {
			t.Fatalf("open mode: Record = %v", err)
		}
	}
	close(st.gate)
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep := verifyOK(t, st)
	if got := int64(rep.Records) + tr.Failures(); got != n || tr.Failures() < n-3 {
		t.Fatalf("%d records written and %d counted as failures; want them to add up to %d with at least %d dropped", rep.Records, tr.Failures(), n, n-3)
	}
}

// TestRecordContextEnds: a closed-mode Record whose ctx ends before its
// batch is durable returns an error wrapping ErrUnavailable and the ctx's;
// the record is still written, and is not a failure.
func TestRecordContextEnds(t *testing.T) {
	st := newMemStore()
	st.gate = make(chan struct{})
	tr := New(st, Options{Keys: newKeys(), Log: quiet})
	queued := make(chan struct{}, 1)
	tr.queuedHook = func() { queued <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- tr.Record(ctx, userRead(0)) }()
	<-queued
	cancel()
	err := <-done
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Record with its ctx cancelled = %v, want ErrUnavailable and context.Canceled", err)
	}
	close(st.gate)
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rep := verifyOK(t, st); rep.Records != 1 || tr.Failures() != 0 {
		t.Fatalf("%d records written, %d failures; want the record written and no failure", rep.Records, tr.Failures())
	}
}

func TestRecordAfterClose(t *testing.T) {
	for _, mode := range []string{Closed, Open} {
		tr := New(newMemStore(), Options{Mode: mode, Keys: newKeys(), Log: quiet})
		if err := tr.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := tr.Record(context.Background(), userRead(0)); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%s mode: Record after Close = %v, want ErrUnavailable", mode, err)
		}
		if tr.Failures() != 1 {
			t.Fatalf("%s mode: Failures = %d after a refused record, want 1", mode, tr.Failures())
		}
		if err := tr.Close(context.Background()); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
}

// TestCloseDrains: records queued in open mode are written by Close.
func TestCloseDrains(t *testing.T) {
	st := newMemStore()
	tr := New(st, Options{Mode: Open, Keys: newKeys(), Log: quiet})
	for i := range 100 {
		tr.Record(context.Background(), userRead(i))
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rep := verifyOK(t, st); rep.Records != 100 {
		t.Fatalf("%d records after Close, want 100", rep.Records)
	}
}

// TestCloseGivesUp: when ctx ends before the queue is drained, Close
// returns, the append in flight is cancelled and the records fail.
func TestCloseGivesUp(t *testing.T) {
	st := newMemStore()
	st.gate = make(chan struct{}) // never opened: appends wait for their ctx
	tr := New(st, Options{Keys: newKeys(), Log: quiet})
	queued := make(chan struct{}, 2)
	tr.queuedHook = func() { queued <- struct{}{} }
	done := make(chan error, 2)
	for i := range 2 {
		go func() { done <- tr.Record(context.Background(), userRead(i)) }()
	}
	<-queued
	<-queued
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tr.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close with an ended ctx = %v, want context.Canceled", err)
	}
	for range 2 {
		if err := <-done; !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Record when Close gave up = %v, want ErrUnavailable", err)
		}
	}
	<-tr.done
	if tr.Failures() != 2 {
		t.Fatalf("Failures = %d, want 2", tr.Failures())
	}
}

// TestTelemetryCopy: each durable record is sent as an "audit" event with
// the Record call's span and the record's fields (hashes, never raw ids).
func TestTelemetryCopy(t *testing.T) {
	st := newMemStore()
	sk := &sink{}
	tr := New(st, Options{Keys: newKeys(), Telemetry: sk, LogID: "tele", Log: quiet, Now: func() time.Time { return t0 }})
	span := telemetry.Span{TraceID: strings.Repeat("ab", 16), SpanID: strings.Repeat("cd", 8)}
	e := userRead(3)
	if err := tr.Record(telemetry.WithSpan(context.Background(), span), e); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs := sk.events()
	if len(evs) != 1 {
		t.Fatalf("%d telemetry events, want 1", len(evs))
	}
	ev := evs[0]
	if ev.Name != "audit" || ev.Span != span {
		t.Fatalf("telemetry event %q with span %+v, want \"audit\" with the Record call's span %+v", ev.Name, ev.Span, span)
	}
	h, err := tr.Hash(context.Background(), e.Owner, e.Caller, e.Name)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"v": "1", "log": "tele", "seq": "1", "prev": zeroHash, "time": "2026-03-01T09:15:00.000000000Z",
		"op": OpSecretRead, "outcome": Success, "status": "200", "principal": PrincipalUser, "roles": "Credentials.Read",
		"correlation": "corr-3", "version": "4", "kek": "1", "key": "1", "owner": h.Owner, "caller": h.Caller, "name": h.Name,
		"segment": "2026/03/01/09/tele-000000.jsonl",
	}
	if fmt.Sprint(ev.Properties) != fmt.Sprint(want) {
		t.Fatalf("telemetry properties:\n%v\nwant\n%v", ev.Properties, want)
	}
}

func TestHash(t *testing.T) {
	keys := newKeys()
	tr := New(newMemStore(), Options{Keys: keys, Log: quiet})
	closeTrail(t, tr)
	if h, err := tr.Hash(context.Background(), "", "", ""); err != nil || h != (Hashes{}) || keys.calls.Load() != 0 {
		t.Fatalf("Hash of nothing = %+v, %v after %d key calls; want empty, without the key", h, err, keys.calls.Load())
	}
	h, err := tr.Hash(context.Background(), "contoso/alice", "", "github-token")
	if err != nil {
		t.Fatal(err)
	}
	want := Hashes{Owner: independentHMAC(testKey(), "owner", "contoso/alice"), Name: independentHMAC(testKey(), "name", "github-token"), Key: 1}
	if h != want {
		t.Fatalf("Hash = %+v, want %+v", h, want)
	}
	keys.err = errors.New("down")
	if _, err := tr.Hash(context.Background(), "contoso/alice", "", ""); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Hash with the audit key unavailable = %v, want ErrUnavailable", err)
	}
}

// TestNoKeyWithoutIdentities: an event without owner, caller or name (a
// CMK call, a failed authentication) never asks for the audit key, so
// recording the CMK unwrap that fetching the audit key causes cannot
// recurse.
func TestNoKeyWithoutIdentities(t *testing.T) {
	keys := newKeys()
	keys.err = errors.New("the audit key must not be asked for")
	tr := New(newMemStore(), Options{Keys: keys, Log: quiet})
	closeTrail(t, tr)
	if err := tr.Record(context.Background(), Event{Op: OpCMKUnwrap, Outcome: Success, Principal: PrincipalSystem, CMK: "v1"}); err != nil {
		t.Fatalf("Record of a CMK event: %v", err)
	}
	if keys.calls.Load() != 0 {
		t.Fatalf("the audit key was asked for %d times", keys.calls.Load())
	}
}

func TestEventTimeDefaultsToNow(t *testing.T) {
	st := newMemStore()
	tr := New(st, Options{Keys: newKeys(), LogID: "now", Log: quiet, Now: func() time.Time { return t0.Add(time.Nanosecond) }})
	if err := tr.Record(context.Background(), Event{Op: OpSecretList, Outcome: Success}); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(-2 * time.Hour)
	if err := tr.Record(context.Background(), Event{Op: OpSecretList, Outcome: Success, Time: at}); err != nil {
		t.Fatal(err)
	}
	tr.Close(context.Background())
	data := string(st.content("2026/03/01/09/now-000000.jsonl"))
	if !strings.Contains(data, `"time":"2026-03-01T09:15:00.000000001Z"`) || !strings.Contains(data, `"time":"2026-03-01T07:15:00.000000000Z"`) {
		t.Fatalf("want the clock's time on the first record and the event's own on the second (an earlier hour stays in the segment):\n%s", data)
	}
}

func TestNewRefusesBadWiring(t *testing.T) {
	cases := map[string]Options{
		"unknown mode": {Mode: "ajar", Keys: newKeys()},
		"no key":       {},
		"bad log id":   {Keys: newKeys(), LogID: "../x"},
	}
	for name, o := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatalf("New(%+v) did not panic", o)
				}
			}()
			New(newMemStore(), o)
		})
	}
}

// TestEventPrinting: printing or logging an Event shows no raw identity.
func TestEventPrinting(t *testing.T) {
	e := Event{Op: OpSecretRead, Outcome: Success, Owner: "contoso/alice", Caller: "contoso/bob", Name: "github-token"}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("event", "e", e)
	for _, out := range []string{fmt.Sprint(e), fmt.Sprintf("%+v", e), fmt.Sprintf("%#v", e), fmt.Sprintf("%v", &e), logs.String()} {
		for _, raw := range []string{e.Owner, e.Caller, e.Name} {
			if strings.Contains(out, raw) {
				t.Fatalf("%q shows the raw identifier %q", out, raw)
			}
		}
		if !strings.Contains(out, OpSecretRead) {
			t.Fatalf("%q does not say which operation", out)
		}
	}
}
