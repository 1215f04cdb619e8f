// Package auditfile is the embedded audit.Store and audit.Reader: each
// segment is an append-only file under one directory, its name the
// segment's relative path. An Append returns nil only once its bytes (and,
// for a new file, the directory entries that lead to it) are on disk.
package auditfile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/credvault/credvault/internal/audit"
)

var (
	_ audit.Store  = (*Store)(nil)
	_ audit.Reader = (*Store)(nil)
)

// ErrInvalidName reports a segment name that is not a clean relative
// slash-separated path (no "..", not absolute, no empty element).
var ErrInvalidName = errors.New("auditfile: invalid segment name")

// errReadOnly reports a directory whose mode has no owner write bit: the
// trail is not to be written there, even by a process (root) that could.
var errReadOnly = errors.New("read-only directory")

// Store keeps segments as files under one directory.
type Store struct {
	dir string

	mu    sync.Mutex // serializes appends and guards files
	files map[string]*os.File
}

// New opens (creating it with mode 0700 if needed) the directory dir.
func New(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auditfile: %w", err)
	}
	return &Store{dir: dir, files: map[string]*os.File{}}, nil
}

func validName(segment string) error {
	if segment == "" || segment == "." || path.Clean(segment) != segment || !filepath.IsLocal(filepath.FromSlash(segment)) ||
		strings.ContainsAny(segment, "\\\x00") || strings.HasPrefix(segment, "/") {
		return fmt.Errorf("%w: %q", ErrInvalidName, segment)
	}
	return nil
}

// Append appends data to segment, creating it (and its directories) when it
// does not exist. Directories are created 0700, files 0600. It writes and
// fdatasyncs the file, and for a new file fsyncs the directories that
// gained an entry, before it returns nil. The file stays open until the trail appends to
// another segment or Close.
func (s *Store) Append(ctx context.Context, segment string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("auditfile: append to %s: %w", segment, err)
	}
	if err := validName(segment); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, created, err := s.open(segment)
	if err != nil {
		return fmt.Errorf("auditfile: append to %s: %w", segment, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = datasync(f)
	}
	if err == nil && created {
		err = syncDir(filepath.Dir(f.Name()))
	}
	if err != nil {
		f.Close()
		delete(s.files, segment)
		return fmt.Errorf("auditfile: append to %s: %w", segment, err)
	}
	return nil
}

// open returns the segment's open file, opening it (and closing the
// others: the trail has moved on) when it is not open.
func (s *Store) open(segment string) (f *os.File, created bool, err error) {
	if f, ok := s.files[segment]; ok {
		return f, false, nil
	}
	for name, f := range s.files {
		f.Close()
		delete(s.files, name)
	}
	p := filepath.Join(s.dir, filepath.FromSlash(segment))
	f, err = os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err := s.mkdirs(path.Dir(segment)); err != nil {
			return nil, false, err
		}
		if err := writable(filepath.Dir(p)); err != nil {
			return nil, false, err
		}
		f, err = os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		created = true
	}
	if err != nil {
		return nil, false, err
	}
	s.files[segment] = f
	return f, created, nil
}

// mkdirs creates the relative directory rel and its parents under the
// store's directory, fsyncing each parent that gains an entry.
func (s *Store) mkdirs(rel string) error {
	if rel == "." {
		return nil
	}
	parts := strings.Split(rel, "/")
	for i := range parts {
		parent := filepath.Join(s.dir, filepath.FromSlash(strings.Join(parts[:i], "/")))
		p := filepath.Join(parent, parts[i])
		if info, err := os.Stat(p); err == nil {
			if !info.IsDir() {
				return fmt.Errorf("%s is not a directory", p)
			}
			continue
		}
		if err := writable(parent); err != nil {
			return err
		}
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := syncDir(parent); err != nil {
			return err
		}
	}
	return nil
}

// writable refuses a directory whose mode has no owner write bit, which
// root could write into anyway: a read-only trail directory stops the
// trail for everyone.
func writable(dir string) error {
	info, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if info.Mode().Perm()&0o200 == 0 {
		return fmt.Errorf("%s: %w", dir, errReadOnly)
	}
	return nil
}

// syncDir makes a directory's entries durable. Windows cannot fsync a
// directory and does not need to.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Segments lists every *.jsonl file under the directory, as slash-separated
// paths relative to it, sorted.
func (s *Store) Segments(ctx context.Context) ([]string, error) {
	var names []string
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.HasSuffix(d.Name(), ".jsonl") {
			rel, err := filepath.Rel(s.dir, p)
			if err != nil {
				return err
			}
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("auditfile: list segments: %w", err)
	}
	slices.Sort(names)
	return names, nil
}

// Open opens a segment for reading. A segment that does not exist is an
// error wrapping fs.ErrNotExist.
func (s *Store) Open(ctx context.Context, segment string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("auditfile: open %s: %w", segment, err)
	}
	if err := validName(segment); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(s.dir, filepath.FromSlash(segment)))
	if err != nil {
		return nil, fmt.Errorf("auditfile: open %s: %w", segment, err)
	}
	return f, nil
}

// Close closes the open segment files.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for name, f := range s.files {
		errs = append(errs, f.Close())
		delete(s.files, name)
	}
	return errors.Join(errs...)
}
