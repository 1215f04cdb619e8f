package embedded

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// writeTemp writes data to an unnamed file in dir (O_TMPFILE), fsync'd, so
// that linking it is the only step that gives it a name: no temp name to
// create and remove in a shared folder (which, under concurrent writers,
// cost more than the fsyncs), and nothing left behind by a crash. File
// systems without O_TMPFILE get a named temp file instead.
func (b *Blobs) writeTemp(dir string, data []byte) (tempFile, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
		return b.writeNamedTemp(data)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open O_TMPFILE", Path: dir, Err: err}
	}
	f := os.NewFile(uintptr(fd), dir)
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return anonTemp{f}, nil
}

type anonTemp struct{ f *os.File }

func (t anonTemp) linkTo(path string) error {
	src := fmt.Sprintf("/proc/self/fd/%d", t.f.Fd())
	if err := unix.Linkat(unix.AT_FDCWD, src, unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW); err != nil {
		return &os.LinkError{Op: "link", Old: "O_TMPFILE", New: path, Err: err}
	}
	return nil
}

func (t anonTemp) discard() { t.f.Close() }
