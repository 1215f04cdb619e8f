//go:build !linux

package auditfile

import "os"

// datasync makes an append durable (fsync where fdatasync is not offered).
func datasync(f *os.File) error { return f.Sync() }
