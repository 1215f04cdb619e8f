package auditblob

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/appendblob"

	"github.com/credvault/credvault/internal/emulators"
)

const segName = "2026/11/23/20/0123456789abcdef-000000.jsonl"

func read(t *testing.T, s *Store, name string) string {
	t.Helper()
	rc, err := s.Open(t.Context(), name)
	if err != nil {
		t.Fatalf("Open %s: %v", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(b)
}

func mustAppend(t *testing.T, s *Store, name, data string) {
	t.Helper()
	if err := s.Append(t.Context(), name, []byte(data)); err != nil {
		t.Fatalf("Append %q to %s: %v", data, name, err)
	}
}

// An append after another writer appended to the same blob fails, and
// neither writer's lines are interleaved with the other's.
func TestAnotherWriterAppended(t *testing.T) {
	s := openAzurite(t, Options{})
	mustAppend(t, s, segName, "a\n")

	raw, err := appendblob.NewClientFromConnectionString(emulators.Blob(t), s.name, segName, nil)
	if err != nil {
		t.Fatalf("raw client: %v", err)
	}
	if _, err := raw.AppendBlock(t.Context(), streaming.NopCloser(strings.NewReader("x\n")), nil); err != nil {
		t.Fatalf("raw AppendBlock: %v", err)
	}

	err = s.Append(t.Context(), segName, []byte(secretPayload))
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("Append after another writer's: err = %v, want ErrConflict", err)
	}
	checkNoSecrets(t, "Append after another writer's", err)
	if got, want := read(t, s, segName), "a\nx\n"; got != want {
		t.Fatalf("segment after a refused Append = %q, want %q", got, want)
	}
	// The store does not try again at a guessed offset.
	if err := s.Append(t.Context(), segName, []byte("b\n")); !errors.Is(err, errFailedBefore) {
		t.Fatalf("Append after a failed one: err = %v, want errFailedBefore", err)
	}
}

// A second Store (another instance, or this one after a restart) cannot
// create a segment that exists.
func TestSegmentExists(t *testing.T) {
	s := openAzurite(t, Options{})
	mustAppend(t, s, segName, "a\n")
	other, err := NewFromConnectionString(emulators.Blob(t), s.name, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = other.Append(t.Context(), segName, []byte(secretPayload))
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("second store's Append to an existing segment: err = %v, want ErrConflict", err)
	}
	checkNoSecrets(t, "second store's Append", err)
	mustAppend(t, s, segName, "b\n")
	if got, want := read(t, s, segName), "a\nb\n"; got != want {
		t.Fatalf("segment = %q, want %q", got, want)
	}
}

// A request that the service carried out but whose answer was lost is
// retried; the retry finds its own work done and neither fails nor writes
// twice.
func TestAnswerLost(t *testing.T) {
	for _, tc := range []struct {
		name  string
		match func(*http.Request) bool
	}{
		{"Create", isCreate},
		{"AppendBlock", isAppendBlock},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lost atomic.Bool
			lose := transport(func(r *http.Request) (*http.Response, error) {
				resp, err := forward(r)
				if err == nil && tc.match(r) && lost.CompareAndSwap(false, true) {
					resp.Body.Close()
					return answer(r, http.StatusInternalServerError, "InternalError"), nil
				}
				return resp, err
			})
			s := openAzurite(t, Options{Client: via(lose, 2)})
			mustAppend(t, s, segName, "a\n")
			mustAppend(t, s, segName, "b\n")
			if !lost.Load() {
				t.Fatalf("no %s answer was lost", tc.name)
			}
			if got, want := read(t, s, segName), "a\nb\n"; got != want {
				t.Fatalf("segment = %q, want %q", got, want)
			}
		})
	}
}

// Data larger than one append block goes in several, in order.
func TestLargeAppendSplit(t *testing.T) {
	var blocks atomic.Int32
	s := openAzurite(t, Options{Client: via(counter(isAppendBlock, &blocks), 0)})
	data := bytes.Repeat([]byte(strings.Repeat("x", 1023)+"\n"), 9<<10) // 9 MiB
	data[0], data[len(data)-2] = 'A', 'Z'
	if err := s.Append(t.Context(), segName, data); err != nil {
		t.Fatalf("Append 9 MiB: %v", err)
	}
	if got, want := blocks.Load(), int32(3); got != want {
		t.Errorf("Append 9 MiB: %d Append Block requests, want %d", got, want)
	}
	if got := read(t, s, segName); got != string(data) {
		t.Fatalf("Open after a 9 MiB Append: got %d bytes, want the %d written", len(got), len(data))
	}
	mustAppend(t, s, segName, "tail\n")
	if got := read(t, s, segName); got != string(data)+"tail\n" {
		t.Fatalf("Open after another Append: got %d bytes, want %d", len(got), len(data)+5)
	}
}

// An append to a segment older than the ones the store remembers fails as
// one that exists, rather than at a guessed offset.
func TestForgottenSegmentRefused(t *testing.T) {
	s := openAzurite(t, Options{})
	s.maxTracked = 2
	names := []string{segName, "2026/11/23/21/0123456789abcdef-000001.jsonl", "2026/11/23/22/0123456789abcdef-000002.jsonl"}
	for _, n := range names {
		mustAppend(t, s, n, "a\n")
	}
	mustAppend(t, s, names[2], "b\n")
	if err := s.Append(t.Context(), names[0], []byte("b\n")); !errors.Is(err, ErrConflict) {
		t.Fatalf("Append to a forgotten segment: err = %v, want ErrConflict", err)
	}
}
