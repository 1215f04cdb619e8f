package auditblob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/appendblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/credvault/credvault/internal/blobclient"
)

const contentType = "application/x-ndjson"

// errFailedBefore refuses an append to a segment whose earlier append
// failed: how much of it landed is unknown.
var errFailedBefore = errors.New("an earlier append to this segment failed; it takes no more")

// segment is what a Store knows of a segment it writes.
type segment struct {
	mu      sync.Mutex // serializes the appends to the segment
	created bool       // this store created the blob
	offset  int64      // the bytes this store has appended
	failed  bool       // an append failed: offset may be wrong
	used    uint64     // Store.uses at the last Append, for eviction
}

// Append appends data to the segment's append blob, creating the blob
// create-only on the segment's first Append: a segment that exists already
// (another writer's, or this store's before a restart) is an ErrConflict.
// Data is appended in blocks of at most 4 MiB, each at the offset this store
// has written so far: a blob whose length is not that offset (another
// writer appended) is an ErrConflict, and nothing is appended. After an
// append that failed, the segment takes no more appends from this store.
//
// A Store remembers the length of the last 256 segments it appended to; an
// Append to an older one fails as a segment that exists.
func (s *Store) Append(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("auditblob: append to %s: %w", name, err)
	}
	if err := validName(name); err != nil {
		return fmt.Errorf("auditblob: append to %s: %w", name, err)
	}
	sg := s.segment(name)
	sg.mu.Lock()
	defer sg.mu.Unlock()
	if sg.failed {
		return fmt.Errorf("auditblob: append to %s: %w", name, errFailedBefore)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ab := s.c.NewAppendBlobClient(name)
	if !sg.created {
		// Nothing is appended yet: a failed create leaves nothing to
		// distrust, and the next Append tries again.
		if err := s.create(ctx, ab, name); err != nil {
			return err
		}
		sg.created = true
	}
	for len(data) > 0 {
		n := min(len(data), s.maxBlock)
		if err := s.appendBlock(ctx, ab, name, sg.offset, data[:n]); err != nil {
			sg.failed = true
			return err
		}
		sg.offset += int64(n)
		data = data[n:]
	}
	return nil
}

// segment returns the state of the named segment, adding it (and evicting
// the least recently used one beyond maxTracked) when it is new.
func (s *Store) segment(name string) *segment {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uses++
	if sg, ok := s.segs[name]; ok {
		sg.used = s.uses
		return sg
	}
	if len(s.segs) >= s.maxTracked {
		var oldest string
		for n, sg := range s.segs {
			if oldest == "" || sg.used < s.segs[oldest].used {
				oldest = n
			}
		}
		delete(s.segs, oldest)
	}
	sg := &segment{used: s.uses}
	s.segs[name] = sg
	return sg
}

// create creates the empty append blob, if none exists.
func (s *Store) create(ctx context.Context, ab *appendblob.Client, name string) error {
	tctx, tries := blobclient.WithTries(ctx)
	_, err := ab.Create(tctx, &appendblob.CreateOptions{
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: to.Ptr(contentType)},
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{
			IfNoneMatch: to.Ptr(azcore.ETagAny),
		}},
	})
	if err == nil {
		return nil
	}
	err = mapErr(ctx, "create segment", name, err)
	if errors.Is(err, ErrConflict) && tries.Load() > 1 && emptyAppendBlob(ctx, ab) {
		// An earlier try created the blob and its answer was lost. Had
		// another writer created it, the append positions would still
		// keep the two apart.
		return nil
	}
	return err
}

// appendBlock appends chunk at offset off.
func (s *Store) appendBlock(ctx context.Context, ab *appendblob.Client, name string, off int64, chunk []byte) error {
	tctx, tries := blobclient.WithTries(ctx)
	_, err := ab.AppendBlock(tctx, streaming.NopCloser(bytes.NewReader(chunk)), &appendblob.AppendBlockOptions{
		AppendPositionAccessConditions: &appendblob.AppendPositionAccessConditions{AppendPosition: to.Ptr(off)},
	})
	if err == nil {
		return nil
	}
	if tries.Load() > 1 && bloberror.HasCode(err, bloberror.AppendPositionConditionNotMet) && landed(ctx, ab, off, chunk) {
		// An earlier try appended the block and its answer was lost.
		return nil
	}
	return mapErr(ctx, "append to", name, err)
}

// emptyAppendBlob reports an append blob of no bytes.
func emptyAppendBlob(ctx context.Context, ab *appendblob.Client) bool {
	p, err := ab.GetProperties(ctx, nil)
	return err == nil && p.BlobType != nil && *p.BlobType == blob.BlobTypeAppendBlob &&
		p.ContentLength != nil && *p.ContentLength == 0
}

// landed reports whether the blob ends with chunk, exactly at off.
func landed(ctx context.Context, ab *appendblob.Client, off int64, chunk []byte) bool {
	resp, err := ab.DownloadStream(ctx, &blob.DownloadStreamOptions{
		Range: blob.HTTPRange{Offset: off, Count: int64(len(chunk))},
	})
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	if resp.ContentRange == nil || totalLength(*resp.ContentRange) != off+int64(len(chunk)) {
		return false
	}
	got, err := io.ReadAll(io.LimitReader(resp.Body, int64(len(chunk))+1))
	return err == nil && bytes.Equal(got, chunk)
}

// totalLength returns the total of a Content-Range ("bytes 0-9/10"), or -1.
func totalLength(contentRange string) int64 {
	_, total, ok := strings.Cut(contentRange, "/")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(total, 10, 64)
	if err != nil {
		return -1
	}
	return n
}
