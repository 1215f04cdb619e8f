package audit

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
)

// line is one line of a segment as Verify reads it.
type line struct {
	data    []byte   // without the "\n"; nil when tooLong
	hash    [32]byte // SHA-256 of the whole line without the "\n"
	partial bool     // the segment ends without a "\n" after it
	tooLong bool     // longer than maxLineBytes: hashed, not kept
}

// lineReader splits a segment into lines, hashing each as it goes, and
// keeps at most maxLineBytes of any line in memory.
type lineReader struct {
	r   *bufio.Reader
	h   hash.Hash
	buf []byte
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), h: sha256.New()}
}

// next returns the next line, or nil at the end of the segment.
func (lr *lineReader) next() (*line, error) {
	lr.h.Reset()
	lr.buf = lr.buf[:0]
	l := &line{}
	n := 0
	for {
		chunk, err := lr.r.ReadSlice('\n')
		done := err == nil
		if done {
			chunk = chunk[:len(chunk)-1]
		}
		lr.h.Write(chunk)
		n += len(chunk)
		if n > maxLineBytes {
			l.tooLong = true
		} else {
			lr.buf = append(lr.buf, chunk...)
		}
		switch {
		case done:
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if n == 0 {
				return nil, nil
			}
			l.partial = true
		default:
			return nil, err
		}
		break
	}
	if !l.tooLong {
		l.data = lr.buf
	}
	lr.h.Sum(l.hash[:0])
	return l, nil
}
