//go:build !linux

package embedded

// writeTemp writes data to a named temp file in the root's temp folder.
func (b *Blobs) writeTemp(_ string, data []byte) (tempFile, error) {
	return b.writeNamedTemp(data)
}
