package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/credvault/credvault/internal/telemetry"
)

// testKey is the audit key of the tests and vectors: bytes 00 01 .. 1f.
func testKey() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

// staticKeys is a KeySource with one key (or one error), counting calls.
type staticKeys struct {
	key     []byte
	version uint32
	err     error
	calls   atomic.Int64
}

func newKeys() *staticKeys { return &staticKeys{key: testKey(), version: 1} }

func (k *staticKeys) AuditKey(context.Context) ([]byte, uint32, error) {
	k.calls.Add(1)
	if k.err != nil {
		return nil, 0, k.err
	}
	return bytes.Clone(k.key), k.version, nil
}

// failMode says what a failing append leaves behind.
type failMode int

const (
	failNone    failMode = iota
	failLost             // nothing written
	failWritten          // everything written, and still an error (a lost response)
	failPartial          // half the data written (a torn write)
)

var errInjected = errors.New("injected append failure")

// memStore is an in-memory Store and Reader. fail, if set, decides the fate
// of append number n (1-based); gate, if set, holds every append until it is
// closed; entered, if set, is sent a value as each append begins.
type memStore struct {
	mu      sync.Mutex
	segs    map[string][]byte
	appends int
	fail    func(n int) failMode
	gate    chan struct{}
	entered chan struct{}
}

func newMemStore() *memStore { return &memStore{segs: map[string][]byte{}} }

func (m *memStore) Append(ctx context.Context, segment string, data []byte) error {
	if m.entered != nil {
		m.entered <- struct{}{}
	}
	if m.gate != nil {
		select {
		case <-m.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.appends++
	mode := failNone
	if m.fail != nil {
		mode = m.fail(m.appends)
	}
	switch mode {
	case failLost:
		return errInjected
	case failWritten:
		m.segs[segment] = append(m.segs[segment], data...)
		return errInjected
	case failPartial:
		m.segs[segment] = append(m.segs[segment], data[:len(data)/2]...)
		return errInjected
	}
	m.segs[segment] = append(m.segs[segment], data...)
	return nil
}

func (m *memStore) Segments(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var names []string
	for name := range m.segs {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

func (m *memStore) Open(_ context.Context, segment string) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	data, ok := m.segs[segment]
	if !ok {
		return nil, fmt.Errorf("segment %s: not found", segment)
	}
	return io.NopCloser(bytes.NewReader(bytes.Clone(data))), nil
}

func (m *memStore) appendCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.appends
}

func (m *memStore) content(segment string) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.segs[segment])
}

// failAt fails the listed appends in the given way.
func failAt(mode failMode, ns ...int) func(int) failMode {
	return func(n int) failMode {
		if slices.Contains(ns, n) {
			return mode
		}
		return failNone
	}
}

// sink records telemetry items.
type sink struct {
	mu    sync.Mutex
	items []telemetry.Item
}

func (s *sink) Track(it telemetry.Item) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = append(s.items, it)
}

func (s *sink) events() []*telemetry.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*telemetry.Event
	for _, it := range s.items {
		if e, ok := it.(*telemetry.Event); ok {
			out = append(out, e)
		}
	}
	return out
}

func (s *sink) exceptions() []*telemetry.Exception {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*telemetry.Exception
	for _, it := range s.items {
		if e, ok := it.(*telemetry.Exception); ok {
			out = append(out, e)
		}
	}
	return out
}

// closeTrail closes t at the end of the test.
func closeTrail(t testing.TB, tr *Trail) {
	t.Helper()
	t.Cleanup(func() {
		if err := tr.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// verifyOK runs Verify and fails the test on an error or a problem.
func verifyOK(t testing.TB, r Reader) Report {
	t.Helper()
	rep, err := Verify(context.Background(), r, VerifyOptions{})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !rep.OK() {
		t.Fatalf("Verify found problems in a trail that is intact: %v", rep.Problems)
	}
	return rep
}

// userRead is a typical event: a user reads a secret.
func userRead(i int) Event {
	return Event{
		Op: OpSecretRead, Outcome: Success, Status: 200, Principal: PrincipalUser,
		Roles: []string{"Credentials.Read"}, Correlation: fmt.Sprintf("corr-%d", i),
		Version: uint64(i + 1), KEK: 1,
		Owner: "contoso/alice", Caller: "contoso/alice", Name: fmt.Sprintf("secret-%d", i),
	}
}
