//go:build !linux

package embedded

// writeTemp writes data to a named temp file in the root's temp folder.
func (b *Blobs) writeTemp(_ string, data []byte) (tempFile, error) {
	return b.writeNamedTemp(data)
}

// syncCreated makes the blob just linked in dir durable: its data was
// fsync'd before the link, so the directory's entry is what is left.
func syncCreated(dir string) error { return syncDir(dir) }
