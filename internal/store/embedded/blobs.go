// Package embedded holds the local adapters of the store ports, for `make run`
// and tests: blobs as files in a directory, metadata in a bbolt database file.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/credvault/credvault/internal/store"
)

// ErrInvalidName: a blob name this adapter cannot store (empty, absolute,
// with "..", '\\', NUL, an empty segment or one starting with '.'), or one
// whose path clashes with another blob's ("a" and "a/b" cannot both exist).
var ErrInvalidName = errors.New("embedded: invalid blob name")

const (
	defaultBlobListLimit = 100
	maxBlobListLimit     = 1000

	// tmpDir holds blobs being written, under the root so that a link from
	// it into place stays on one file system. Names never start with '.', so
	// it is never a blob's directory and never listed.
	tmpDir = ".tmp"
	// staleTemp is the age after which OpenBlobs removes a temp file, the
	// remains of a Create cut short by a crash.
	staleTemp = time.Hour
	// maxSyncedDirs bounds the cache of directories known to be durable.
	maxSyncedDirs = 1 << 14
)

// Blobs stores each blob as a file under a root directory; the name "a/b/c"
// is the file root/a/b/c. A blob is written to a temp file, fsync'd, then
// linked into place, so a reader or a crash never sees part of one.
type Blobs struct {
	root string

	// syncedDirs holds the directories (slash-separated, relative to root)
	// whose entries up to the root are known to be fsync'd, so Create does
	// not sync them again.
	syncedDirs sync.Map
	nSynced    atomic.Int64

	// dirSyncs holds a groupSync per blob directory and kind (by syncKey).
	dirSyncs sync.Map
}

// OpenBlobs opens the blob store rooted at dir, creating it (mode 0700) if
// needed, and removes temp files that a crash left behind.
func OpenBlobs(dir string) (*Blobs, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open blobs %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(root, tmpDir), 0o700); err != nil {
		return nil, fmt.Errorf("open blobs %s: %w", dir, err)
	}
	// Make the root's own entry durable too, in case MkdirAll just made it.
	for _, d := range []string{root, filepath.Dir(root)} {
		if err := syncDir(d); err != nil {
			return nil, fmt.Errorf("open blobs %s: %w", dir, err)
		}
	}
	b := &Blobs{root: root}
	if err := b.removeStaleTemps(time.Now().Add(-staleTemp)); err != nil {
		return nil, fmt.Errorf("open blobs %s: %w", dir, err)
	}
	return b, nil
}

func (b *Blobs) removeStaleTemps(before time.Time) error {
	entries, err := os.ReadDir(filepath.Join(b.root, tmpDir))
	if err != nil {
		return err
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(before) {
			continue
		}
		if err := os.Remove(filepath.Join(b.root, tmpDir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Create writes a new blob, create-only. When it returns nil the blob's bytes
// and its directory entries are on disk.
func (b *Blobs) Create(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create blob %q: %w", name, err)
	}
	if err := validName(name); err != nil {
		return fmt.Errorf("create blob %q: %w", name, err)
	}
	dir := pathDir(name)
	if err := b.ensureDir(dir); err != nil {
		return fmt.Errorf("create blob %q: %w", name, err)
	}
	tmp, err := b.writeTemp(b.path(dir), data)
	if err != nil {
		return fmt.Errorf("create blob %q: %w", name, err)
	}
	defer tmp.discard()
	// Link, unlike rename, refuses to replace an existing name.
	if err := tmp.linkTo(b.path(name)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			if info, serr := os.Lstat(b.path(name)); serr == nil && info.IsDir() {
				return fmt.Errorf("create blob %q: %w: it is the directory of other blobs", name, ErrInvalidName)
			}
			return fmt.Errorf("create blob %q: %w", name, store.ErrConflict)
		}
		return fmt.Errorf("create blob %q: %w", name, err)
	}
	if err := b.groupSync(b.path(dir), true); err != nil {
		return fmt.Errorf("create blob %q: %w", name, err)
	}
	return nil
}

// groupSync makes a change to a blob directory durable, sharing the sync
// with concurrent callers of the same kind (see groupSync): syncCreated
// after a Create (data and name), syncDir after a Delete (the name alone).
func (b *Blobs) groupSync(path string, created bool) error {
	sync := syncDir
	if created {
		sync = syncCreated
	}
	g, _ := b.dirSyncs.LoadOrStore(syncKey{path, created}, &groupSync{})
	return g.(*groupSync).do(func() error { return sync(path) })
}

// syncKey names a group of syncs: a directory, and whether it is a
// Create's (whose group must not be led by a Delete's lighter sync).
type syncKey struct {
	path    string
	created bool
}

// tempFile is a blob's bytes, not yet under their name (not yet durable on
// Linux, where syncCreated syncs them after the link).
type tempFile interface {
	linkTo(path string) error // create-only: fs.ErrExist when path exists
	discard()
}

// namedTemp is a temp file in the root's temp folder.
type namedTemp string

func (t namedTemp) linkTo(path string) error { return os.Link(string(t), path) }
func (t namedTemp) discard()                 { os.Remove(string(t)) }

// writeNamedTemp writes data to a new temp file, fsync'd.
func (b *Blobs) writeNamedTemp(data []byte) (tempFile, error) {
	f, err := os.CreateTemp(filepath.Join(b.root, tmpDir), "blob-*") // mode 0600
	if err != nil {
		return nil, err
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		os.Remove(f.Name())
		return nil, werr
	}
	return namedTemp(f.Name()), nil
}

// ensureDir creates the directory dir (relative, slash-separated) and its
// parents, and makes their entries durable. Every directory is synced after
// its child is made, whoever made it, so a concurrent Create that found a
// directory already there never returns before that directory is on disk.
func (b *Blobs) ensureDir(dir string) error {
	if dir == "." {
		return nil
	}
	if _, ok := b.syncedDirs.Load(dir); ok {
		return nil
	}
	segs := strings.Split(dir, "/")
	for i := range segs {
		p := b.path(strings.Join(segs[:i+1], "/"))
		err := os.Mkdir(p, 0o700)
		if err == nil {
			continue
		}
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if !info.IsDir() {
			return fmt.Errorf("%w: %q is a blob", ErrInvalidName, strings.Join(segs[:i+1], "/"))
		}
	}
	for i := range segs {
		if err := syncDir(b.path(strings.Join(segs[:i], "/"))); err != nil {
			return err
		}
	}
	if b.nSynced.Add(1) > maxSyncedDirs {
		b.syncedDirs.Clear()
		b.nSynced.Store(0)
	}
	b.syncedDirs.Store(dir, struct{}{})
	return nil
}

// Read returns the blob's bytes, or ErrNotFound.
func (b *Blobs) Read(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read blob %q: %w", name, err)
	}
	if err := validName(name); err != nil {
		return nil, fmt.Errorf("read blob %q: %w", name, err)
	}
	f, err := os.Open(b.path(name))
	if err != nil {
		if notExist(err) {
			return nil, fmt.Errorf("read blob %q: %w", name, store.ErrNotFound)
		}
		return nil, fmt.Errorf("read blob %q: %w", name, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read blob %q: %w", name, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("read blob %q: %w", name, store.ErrNotFound)
	}
	data := make([]byte, info.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("read blob %q: %w", name, err)
	}
	return data, nil
}

// Delete removes the blob; deleting a missing blob is not an error. The
// removal is on disk when Delete returns. Directories left empty are kept.
func (b *Blobs) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete blob %q: %w", name, err)
	}
	if err := validName(name); err != nil {
		return fmt.Errorf("delete blob %q: %w", name, err)
	}
	// syscall.Unlink, unlike os.Remove, never removes a directory.
	if err := syscall.Unlink(b.path(name)); err != nil {
		if notExist(err) {
			return nil
		}
		if info, serr := os.Lstat(b.path(name)); serr == nil && info.IsDir() {
			return nil // a directory of other blobs, not a blob
		}
		return fmt.Errorf("delete blob %q: %w", name, err)
	}
	if err := b.groupSync(b.path(pathDir(name)), false); err != nil {
		return fmt.Errorf("delete blob %q: %w", name, err)
	}
	return nil
}

// List returns the blobs whose names start with prefix, in ascending byte
// order of name, at most limit of them (default 100, at most 1000). The
// continuation is the last name returned.
func (b *Blobs) List(ctx context.Context, prefix, continuation string, limit int) (store.BlobPage, error) {
	if err := ctx.Err(); err != nil {
		return store.BlobPage{}, fmt.Errorf("list blobs %q: %w", prefix, err)
	}
	switch {
	case limit <= 0:
		limit = defaultBlobListLimit
	case limit > maxBlobListLimit:
		limit = maxBlobListLimit
	}
	if !validPrefix(prefix) {
		return store.BlobPage{}, nil // no valid name starts with it
	}
	// Start in the deepest directory the prefix names in full.
	dir, rest := ".", prefix
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dir, rest = prefix[:i], prefix[i+1:]
	}
	l := lister{ctx: ctx, b: b, after: continuation, limit: limit}
	if err := l.walk(dir, rest); err != nil {
		return store.BlobPage{}, fmt.Errorf("list blobs %q: %w", prefix, err)
	}
	page := store.BlobPage{Blobs: l.found}
	if l.more {
		page.Continuation = l.found[len(l.found)-1].Name
	}
	return page, nil
}

// lister walks the tree depth-first, visiting each directory's entries in the
// byte order of the names below them: a directory "a" sorts as "a/", so after
// "a-c" and before "a0", as the names "a/…" do.
type lister struct {
	ctx   context.Context
	b     *Blobs
	after string // list names greater than this
	limit int
	found []store.BlobInfo
	more  bool
}

// walk lists dir's entries whose names start with match. It stops once it has
// found one more blob than the limit.
func (l *lister) walk(dir, match string) error {
	if err := l.ctx.Err(); err != nil {
		return err
	}
	entries, err := os.ReadDir(l.b.path(dir))
	if err != nil {
		if notExist(err) {
			return nil // no such directory, or removed while listing
		}
		return err
	}
	type entry struct {
		key   string // the name below root, a directory's with a '/' after it
		isDir bool
		de    fs.DirEntry
	}
	var es []entry
	for _, de := range entries {
		n := de.Name()
		if !strings.HasPrefix(n, match) || strings.HasPrefix(n, ".") {
			continue // not asked for, or a temp file
		}
		key := n
		if dir != "." {
			key = dir + "/" + n
		}
		switch {
		case de.IsDir():
			es = append(es, entry{key + "/", true, de})
		case de.Type().IsRegular():
			es = append(es, entry{key, false, de})
		}
	}
	slices.SortFunc(es, func(a, b entry) int { return strings.Compare(a.key, b.key) })
	for _, e := range es {
		if e.isDir {
			// Every name under it starts with e.key: skip the directory when
			// the continuation is past them all.
			if l.after > e.key && !strings.HasPrefix(l.after, e.key) {
				continue
			}
			if err := l.walk(strings.TrimSuffix(e.key, "/"), ""); err != nil {
				return err
			}
			if l.more {
				return nil
			}
			continue
		}
		if e.key <= l.after {
			continue
		}
		if len(l.found) == l.limit {
			l.more = true
			return nil
		}
		info, err := e.de.Info()
		if err != nil {
			if notExist(err) {
				continue // deleted while listing
			}
			return err
		}
		l.found = append(l.found, store.BlobInfo{Name: e.key, Modified: info.ModTime(), Size: info.Size()})
	}
	return nil
}

// path returns the file path of a slash-separated name relative to root.
func (b *Blobs) path(name string) string {
	return filepath.Join(b.root, filepath.FromSlash(name))
}

// pathDir returns the directory part of a slash-separated name, "." if none.
func pathDir(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i]
	}
	return "."
}

// validName reports whether name maps to a path under the root: not empty or
// absolute, no "..", '\\' or NUL, and no segment that is empty or starts
// with '.' (which keeps temp files and the temp directory out of reach).
func validName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if strings.Contains(name, "..") || strings.ContainsAny(name, "\\\x00") {
		return fmt.Errorf("%w: contains \"..\", '\\\\' or NUL", ErrInvalidName)
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" {
			return fmt.Errorf("%w: absolute, or an empty segment", ErrInvalidName)
		}
		if seg[0] == '.' {
			return fmt.Errorf("%w: a segment starts with '.'", ErrInvalidName)
		}
	}
	if filepath.IsAbs(filepath.FromSlash(name)) || filepath.VolumeName(filepath.FromSlash(name)) != "" {
		return fmt.Errorf("%w: absolute", ErrInvalidName)
	}
	return nil
}

// validPrefix reports whether some valid name could start with prefix.
func validPrefix(prefix string) bool {
	if prefix == "" {
		return true
	}
	if validName(prefix) == nil {
		return true
	}
	return strings.HasSuffix(prefix, "/") && validName(prefix[:len(prefix)-1]) == nil
}

func notExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
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

var _ store.Blobs = (*Blobs)(nil)
