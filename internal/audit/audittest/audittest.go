// Package audittest is the contract suite of the audit.Store and
// audit.Reader ports. Every adapter's own test file runs it, so each adapter
// is held to the same claims:
//
//	func TestContract(t *testing.T) { audittest.TestStore(t, openStore) }
//
// Beyond what the port's comments say, the suite holds adapters to two
// claims of its own:
//
//   - Open of a segment that does not exist returns an error wrapping
//     fs.ErrNotExist.
//   - Append with a context already canceled returns an error wrapping
//     context.Canceled and writes nothing.
package audittest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sync"
	"testing"

	"github.com/credvault/credvault/internal/audit"
)

// TestStore runs the contract against the store that open returns. open is
// called once per subtest and must return an empty store each time (for an
// emulator: a container of its own); the Store and the Reader may be the
// same value.
func TestStore(t *testing.T, open func(t *testing.T) (audit.Store, audit.Reader)) {
	t.Run("FirstAppendCreates", func(t *testing.T) {
		s, r := open(t)
		data := []byte(`{"seq":0}` + "\n")
		mustAppend(t, s, seg(0), data)
		if got := mustRead(t, r, seg(0)); !bytes.Equal(got, data) {
			t.Fatalf("Open after the first Append: got %q, want %q", got, data)
		}
	})

	t.Run("AppendsAccumulateInOrder", func(t *testing.T) {
		s, r := open(t)
		var want []byte
		for i := range 5 {
			line := fmt.Appendf(nil, `{"seq":%d}`+"\n", i)
			mustAppend(t, s, seg(0), line)
			want = append(want, line...)
		}
		if got := mustRead(t, r, seg(0)); !bytes.Equal(got, want) {
			t.Fatalf("Open after 5 Appends: got %q, want %q", got, want)
		}
	})

	t.Run("EmptyStoreHasNoSegments", func(t *testing.T) {
		_, r := open(t)
		got, err := r.Segments(t.Context())
		if err != nil {
			t.Fatalf("Segments of a new store: %v", err)
		}
		if len(got) != 0 {
			t.Fatalf("Segments of a new store = %q, want none", got)
		}
	})

	t.Run("SegmentsListSlashedNames", func(t *testing.T) {
		s, r := open(t)
		want := []string{
			"2026/11/23/20/0123456789abcdef-000000.jsonl",
			"2026/11/23/20/0123456789abcdef-000001.jsonl",
			"2026/11/23/21/0123456789abcdef-000002.jsonl",
			"2026/12/01/00/fedcba9876543210-000000.jsonl",
		}
		for _, name := range want {
			mustAppend(t, s, name, []byte("{}\n"))
		}
		checkSegments(t, r, want)
	})

	t.Run("ManySegmentsListCompletely", func(t *testing.T) {
		s, r := open(t)
		var want []string
		for i := range 30 {
			want = append(want, seg(i))
			mustAppend(t, s, seg(i), []byte("{}\n"))
		}
		checkSegments(t, r, want)
	})

	t.Run("ConcurrentAppendsToDistinctSegments", func(t *testing.T) {
		s, r := open(t)
		const writers, appends = 8, 6
		var wg sync.WaitGroup
		errs := make(chan error, writers*appends)
		for w := range writers {
			wg.Go(func() {
				for i := range appends {
					if err := s.Append(t.Context(), seg(w), line(w, i)); err != nil {
						errs <- fmt.Errorf("Append #%d to %s: %w", i, seg(w), err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			return
		}
		var names []string
		for w := range writers {
			names = append(names, seg(w))
			var want []byte
			for i := range appends {
				want = append(want, line(w, i)...)
			}
			if got := mustRead(t, r, seg(w)); !bytes.Equal(got, want) {
				t.Errorf("segment %s after concurrent appends: got %q, want %q", seg(w), got, want)
			}
		}
		checkSegments(t, r, names)
	})

	t.Run("OpenMissingIsNotExist", func(t *testing.T) {
		s, r := open(t)
		mustAppend(t, s, seg(0), []byte("{}\n"))
		rc, err := r.Open(t.Context(), seg(1))
		if err == nil {
			rc.Close()
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Open of a segment never written: err = %v, want one wrapping fs.ErrNotExist", err)
		}
	})

	t.Run("LargeAppendRoundTrips", func(t *testing.T) {
		s, r := open(t)
		data := lines(1 << 20)
		mustAppend(t, s, seg(0), []byte("{}\n"))
		mustAppend(t, s, seg(0), data)
		got := mustRead(t, r, seg(0))
		if want := append([]byte("{}\n"), data...); !bytes.Equal(got, want) {
			t.Fatalf("Open after a 1 MiB Append: got %d bytes, want the %d written", len(got), len(want))
		}
	})

	t.Run("AppendHonoursCanceledContext", func(t *testing.T) {
		s, r := open(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := s.Append(ctx, seg(0), []byte("{}\n")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Append with a canceled context: err = %v, want one wrapping context.Canceled", err)
		}
		checkSegments(t, r, nil)
	})

	t.Run("TrailOverStore", func(t *testing.T) {
		s, r := open(t)
		testTrail(t, s, r)
	})
}

// seg returns the name of the i-th segment of a test log.
func seg(i int) string { return fmt.Sprintf("2026/11/23/20/0123456789abcdef-%06d.jsonl", i) }

// line returns writer w's i-th line.
func line(w, i int) []byte { return fmt.Appendf(nil, `{"writer":%d,"seq":%d}`+"\n", w, i) }

// lines returns n bytes of JSON lines that differ from one another.
func lines(n int) []byte {
	b := make([]byte, 0, n+64)
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, `{"seq":%d,"pad":"%0100d"}`+"\n", i, i)
	}
	b = b[:n-1]
	return append(b, '\n')
}

func mustAppend(t *testing.T, s audit.Store, segment string, data []byte) {
	t.Helper()
	if err := s.Append(t.Context(), segment, data); err != nil {
		t.Fatalf("Append %d bytes to %s: %v", len(data), segment, err)
	}
}

func mustRead(t *testing.T, r audit.Reader, segment string) []byte {
	t.Helper()
	rc, err := r.Open(t.Context(), segment)
	if err != nil {
		t.Fatalf("Open %s: %v", segment, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", segment, err)
	}
	return b
}

// checkSegments compares Segments with want, in any order.
func checkSegments(t *testing.T, r audit.Reader, want []string) {
	t.Helper()
	got, err := r.Segments(t.Context())
	if err != nil {
		t.Fatalf("Segments: %v", err)
	}
	got, want = slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Fatalf("Segments = %q (%d), want %q (%d)", got, len(got), want, len(want))
	}
}
