package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credvault/credvault/internal/telemetry"
)

// Defaults of Options.
const (
	DefaultMaxBatch      = 512
	DefaultQueueSize     = 10_000
	DefaultAppendTimeout = 30 * time.Second
	// DefaultCommitInterval paces a busy trail's appends: one fdatasync
	// costs about 100 µs of CPU here, so a burst of records is better one
	// append than many. An idle trail appends at once.
	DefaultCommitInterval = time.Millisecond
)

// maxAppendBytes bounds one append (an Azure append block is at most 4 MiB).
// Records are counted by an upper bound of their size (see entrySize).
const maxAppendBytes = 4 << 20

// Options configure a Trail.
type Options struct {
	Mode      string         // Closed (default) or Open
	Keys      KeySource      // required
	Telemetry telemetry.Sink // each durable record copied as a telemetry.Event named "audit" with the record's fields as properties (hashes only), best effort; default telemetry.Discard
	Log       *slog.Logger   // default slog.Default(); never logs raw ids
	Now       func() time.Time
	MaxBatch  int    // records per append, default 512
	QueueSize int    // bound on queued records, default 10000
	LogID     string // default random (16 hex digits); 1 to 64 characters of 0-9 and a-z
	// AppendTimeout bounds one Store.Append, default 30s. An append that
	// times out failed: the trail moves to a new segment.
	AppendTimeout time.Duration
	// CommitInterval paces a busy trail, default DefaultCommitInterval;
	// negative never waits. A record that finds the writer idle is appended
	// at once. When records were queued while the last append was in
	// flight, the next append waits until CommitInterval after the last one
	// began, so that a burst shares one append (one fdatasync).
	CommitInterval time.Duration
}

// Trail writes audit records through a Store: one writer goroutine, group
// commits (everything queued while an append is in flight, and, when the
// trail is busy, until CommitInterval after its start, goes in the next one,
// up to MaxBatch records), one hash chain per Trail (its log id),
// segments named by the hour of their first record.
//
// Closed mode: Record returns nil only once the record is durable. Open
// mode: Record queues and returns at once; what cannot be written is
// counted (Failures), logged at warn once per burst of failures and sent as
// a telemetry.Exception.
type Trail struct {
	store Store
	opt   Options
	chain *chain // the writer goroutine's only

	queue   chan *entry
	mu      sync.Mutex // guards closed and the senders.Add that depend on it
	closed  bool
	senders sync.WaitGroup // Record calls between the closed check and their send
	noMore  chan struct{}  // closed once no Record can queue any more
	abort   chan struct{}  // closed when Close gives up: fail what is left
	done    chan struct{}  // closed when the writer has stopped
	ctx     context.Context
	cancel  context.CancelFunc
	stop    sync.Once
	give    sync.Once

	failures atomic.Int64
	burstMu  sync.Mutex
	inBurst  bool
	burstN   int64

	queuedHook   func()          // tests: called after each record is queued
	appendedHook func(err error) // tests: called after each append has been answered
}

// entry is one queued record.
type entry struct {
	rec  record // without its place in the chain
	at   time.Time
	size int
	span telemetry.Span
	done chan error // closed mode: the batch's outcome; nil in open mode
}

var errClosed = errors.New("audit trail closed")

// New starts a trail writing to s. It panics on a missing KeySource, an
// unknown mode or an invalid LogID: these are wiring errors.
func New(s Store, o Options) *Trail {
	switch o.Mode {
	case "":
		o.Mode = Closed
	case Closed, Open:
	default:
		panic(fmt.Sprintf("audit.New: unknown mode %q (want %q or %q)", o.Mode, Closed, Open))
	}
	if s == nil || o.Keys == nil {
		panic("audit.New: a Store and Options.Keys are required")
	}
	if o.Telemetry == nil {
		o.Telemetry = telemetry.Discard
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.AppendTimeout <= 0 {
		o.AppendTimeout = DefaultAppendTimeout
	}
	if o.CommitInterval == 0 {
		o.CommitInterval = DefaultCommitInterval
	}
	if o.LogID == "" {
		o.LogID = newLogID()
	} else if !validLogID(o.LogID) {
		panic(fmt.Sprintf("audit.New: log id %q: want 1 to 64 characters of 0-9 and a-z", o.LogID))
	}
	t := &Trail{
		store:  s,
		opt:    o,
		chain:  newChain(o.LogID),
		queue:  make(chan *entry, o.QueueSize),
		noMore: make(chan struct{}),
		abort:  make(chan struct{}),
		done:   make(chan struct{}),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	go t.run()
	return t
}

func newLogID() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// LogID is the id of the trail's log: its segments' names and its records'
// "log" field carry it.
func (t *Trail) LogID() string { return t.opt.LogID }

// Record writes the event's record. The raw Owner, Caller and Name become
// HMACs under the audit key (fetched only when one of them is set). In
// closed mode it returns nil once the record is durable, and otherwise an
// error wrapping ErrUnavailable: the store or the audit key failed, the
// trail is closed, or ctx ended first (the record may still be written
// later). In open mode it returns nil at once (ErrUnavailable only after
// Close), and counts what it drops.
func (t *Trail) Record(ctx context.Context, e Event) error {
	span, _ := telemetry.SpanFrom(ctx)
	if t.isClosed() {
		t.lost(1, errClosed, span)
		return fmt.Errorf("record %s: %w: %w", e.Op, ErrUnavailable, errClosed)
	}
	en, err := t.newEntry(ctx, e)
	if err != nil {
		err = fmt.Errorf("record %s: %w: %w", e.Op, ErrUnavailable, err)
		t.lost(1, err, span)
		if t.opt.Mode == Open {
			return nil
		}
		return err
	}
	en.span = span
	if t.opt.Mode == Open {
		return t.queueOpen(en)
	}
	return t.queueClosed(ctx, en)
}

func (t *Trail) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// newEntry builds the record: time, hashes, size bound.
func (t *Trail) newEntry(ctx context.Context, e Event) (*entry, error) {
	if n := e.textSize(); n > maxEventText {
		return nil, fmt.Errorf("event text fields are %d bytes, more than %d", n, maxEventText)
	}
	at := e.Time
	if at.IsZero() {
		at = t.opt.Now()
	}
	var key []byte
	var version uint32
	if e.hasIdentities() {
		var err error
		if key, version, err = t.opt.Keys.AuditKey(ctx); err != nil {
			return nil, fmt.Errorf("audit key: %w", err)
		}
		defer clear(key)
	}
	return &entry{rec: newRecord(e, at, key, version), at: at, size: entrySize(e)}, nil
}

// entrySize bounds the size of an event's line: JSON escapes at most six
// bytes per byte of text; the rest of a record is under 1 KiB.
func entrySize(e Event) int { return 6*e.textSize() + 1024 }

// register counts a Record about to send on the queue, unless the trail is
// closed.
func (t *Trail) register() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.senders.Add(1)
	return true
}

func (t *Trail) queueOpen(en *entry) error {
	if !t.register() {
		t.lost(1, errClosed, en.span)
		return fmt.Errorf("record %s: %w: %w", en.rec.Op, ErrUnavailable, errClosed)
	}
	var queued bool
	select {
	case t.queue <- en:
		queued = true
	default:
	}
	t.senders.Done()
	if !queued {
		t.lost(1, fmt.Errorf("record %s: queue full (%d records): dropped", en.rec.Op, t.opt.QueueSize), en.span)
		return nil
	}
	t.queued()
	return nil
}

func (t *Trail) queueClosed(ctx context.Context, en *entry) error {
	en.done = make(chan error, 1)
	if !t.register() {
		t.lost(1, errClosed, en.span)
		return fmt.Errorf("record %s: %w: %w", en.rec.Op, ErrUnavailable, errClosed)
	}
	var err error
	select {
	case t.queue <- en:
	default:
		select { // the queue is full: wait for room
		case t.queue <- en:
		case <-ctx.Done():
			err = fmt.Errorf("record %s: queue full until the request ended: %w: %w", en.rec.Op, ErrUnavailable, context.Cause(ctx))
		case <-t.abort:
			err = fmt.Errorf("record %s: %w: %w", en.rec.Op, ErrUnavailable, errClosed)
			t.lost(1, err, en.span)
		}
	}
	t.senders.Done()
	if err != nil {
		return err
	}
	t.queued()
	select {
	case err := <-en.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("record %s: not yet durable when the request ended: %w: %w", en.rec.Op, ErrUnavailable, context.Cause(ctx))
	case <-t.done:
		select {
		case err := <-en.done:
			return err
		default: // queued after Close gave up
			t.lost(1, errClosed, en.span)
			return fmt.Errorf("record %s: %w: %w", en.rec.Op, ErrUnavailable, errClosed)
		}
	}
}

func (t *Trail) queued() {
	if t.queuedHook != nil {
		t.queuedHook()
	}
}

// Hash returns the HMACs the trail writes for these raw identifiers, for an
// investigator to search the trail (POST /api/admin/audit-hash). Empty input
// gives empty output, and all empty needs no key.
func (t *Trail) Hash(ctx context.Context, owner, caller, name string) (Hashes, error) {
	if owner == "" && caller == "" && name == "" {
		return Hashes{}, nil
	}
	key, version, err := t.opt.Keys.AuditKey(ctx)
	if err != nil {
		return Hashes{}, fmt.Errorf("audit hash: audit key: %w: %w", ErrUnavailable, err)
	}
	defer clear(key)
	return hashes(key, version, owner, caller, name), nil
}

// Failures is the number of records that could not be made durable: failed
// appends, audit key errors, records dropped from a full queue (open mode),
// records refused after Close. A closed-mode Record whose ctx ends before
// its record could be queued is the caller's and is not counted.
func (t *Trail) Failures() int64 { return t.failures.Load() }

// Close stops accepting records, writes what is queued and stops the
// writer. If ctx ends first, what is still queued fails (and is counted)
// and Close returns ctx's error. Record after Close returns ErrUnavailable.
func (t *Trail) Close(ctx context.Context) error {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.stop.Do(func() {
		go func() {
			t.senders.Wait() // no Add after closed: see register
			close(t.noMore)
		}()
	})
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		t.give.Do(func() {
			close(t.abort)
			t.cancel()
		})
		return fmt.Errorf("audit trail close: %w", context.Cause(ctx))
	}
}
