package auditfile

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/audit/audittest"
)

const segA = "2026/03/01/09/5f3a9c0e12b47d86-000000.jsonl"
const segB = "2026/03/01/10/5f3a9c0e12b47d86-000001.jsonl"

func open(t *testing.T) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "audit")
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

// TestContract holds the store to the audit.Store and audit.Reader
// contract that every adapter runs.
func TestContract(t *testing.T) {
	audittest.TestStore(t, func(t *testing.T) (audit.Store, audit.Reader) {
		s, _ := open(t)
		return s, s
	})
}

func read(t *testing.T, s *Store, seg string) string {
	t.Helper()
	rc, err := s.Open(context.Background(), seg)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAppendCreatesAndAppends(t *testing.T) {
	s, dir := open(t)
	ctx := context.Background()
	for _, step := range []struct{ seg, data string }{{segA, "a\n"}, {segA, "b\nc\n"}, {segB, "d\n"}} {
		if err := s.Append(ctx, step.seg, []byte(step.data)); err != nil {
			t.Fatalf("Append(%s): %v", step.seg, err)
		}
	}
	if got := read(t, s, segA); got != "a\nb\nc\n" {
		t.Fatalf("%s holds %q, want the two appends in order", segA, got)
	}
	names, err := s.Segments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{segA, segB}; !slices.Equal(names, want) {
		t.Fatalf("Segments = %v, want %v", names, want)
	}
	for _, p := range []struct {
		rel  string
		mode fs.FileMode
	}{{".", fs.ModeDir | 0o700}, {"2026", fs.ModeDir | 0o700}, {"2026/03/01/09", fs.ModeDir | 0o700}, {segA, 0o600}} {
		info, err := os.Stat(filepath.Join(dir, filepath.FromSlash(p.rel)))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode() != p.mode {
			t.Errorf("%s has mode %v, want %v", p.rel, info.Mode(), p.mode)
		}
	}
}

// TestOneOpenFile: moving to a segment closes the previous one's file.
func TestOneOpenFile(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	for _, seg := range []string{segA, segB} {
		if err := s.Append(ctx, seg, []byte("x\n")); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	_, openA := s.files[segA]
	n := len(s.files)
	s.mu.Unlock()
	if n != 1 || openA {
		t.Fatalf("%d files open (segment A open: %v), want only the current segment's", n, openA)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(s.files) != 0 {
		t.Fatalf("%d files open after Close", len(s.files))
	}
}

func TestInvalidNames(t *testing.T) {
	s, _ := open(t)
	for _, name := range []string{"", ".", "..", "../x.jsonl", "a/../../x.jsonl", "/etc/x.jsonl", "a//b.jsonl", "a/./b.jsonl", "a/", `a\b.jsonl`, "a\x00.jsonl"} {
		if err := s.Append(context.Background(), name, []byte("x\n")); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Append(%q) = %v, want ErrInvalidName", name, err)
		}
		if _, err := s.Open(context.Background(), name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Open(%q) = %v, want ErrInvalidName", name, err)
		}
	}
}

// TestReadOnlyDirectory: a read-only directory makes Append fail, also for
// root (which the kernel would let write).
func TestReadOnlyDirectory(t *testing.T) {
	s, dir := open(t)
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	if err := s.Append(context.Background(), segA, []byte("x\n")); err == nil {
		t.Fatal("Append into a read-only directory succeeded")
	}
	if names, _ := s.Segments(context.Background()); len(names) != 0 {
		t.Fatalf("segments %v written into a read-only directory", names)
	}
}

func TestSegmentsSkipsOtherFiles(t *testing.T) {
	s, dir := open(t)
	if err := s.Append(context.Background(), segA, []byte("x\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README.txt"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	names, err := s.Segments(context.Background())
	if err != nil || !slices.Equal(names, []string{segA}) {
		t.Fatalf("Segments = %v, %v; want only %s", names, err, segA)
	}
}

func TestOpenMissing(t *testing.T) {
	s, _ := open(t)
	if _, err := s.Open(context.Background(), segA); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open of a segment never written = %v, want fs.ErrNotExist", err)
	}
}

func TestAppendCancelled(t *testing.T) {
	s, _ := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Append(ctx, segA, []byte("x\n")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled ctx = %v, want context.Canceled", err)
	}
}
