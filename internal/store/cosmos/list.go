package cosmos

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/Azure/azure-sdk-for-go/sdk/data/azcosmos"

	"github.com/credvault/credvault/internal/store"
)

const (
	// partitionQuery lists one kind in one partition. The query is sent with
	// the partition key, and names the partition in its WHERE clause too, so
	// that no server ignoring the partition key header (the emulator did)
	// could let another owner's documents through.
	partitionQuery = "SELECT c.id, c.pk, c.kind, c.body, c._etag FROM c" +
		" WHERE c.pk = @pk AND c.kind = @kind ORDER BY c.id"
	// kindQuery and kindAfterQuery list one kind across partitions, in no
	// particular order: the gateway refuses a cross-partition ORDER BY to
	// the Go SDK, which has no query engine of its own to merge sorted
	// partitions.
	kindQuery      = "SELECT c.id, c.pk, c.kind, c.body, c._etag FROM c WHERE c.kind = @kind"
	kindAfterQuery = kindQuery + " AND (c.pk > @pk OR (c.pk = @pk AND c.id > @id))"
)

// cursor is the content of a continuation, base64url-encoded JSON. It names
// the listing it continues, so that one given to another listing is refused
// with ErrInvalid.
type cursor struct {
	Kind string `json:"k"`
	// One partition: the partition and the SDK's continuation token.
	Partition string `json:"p,omitempty"`
	Token     string `json:"t,omitempty"`
	// Every partition: the last item returned.
	AfterPartition string `json:"ap,omitempty"`
	AfterID        string `json:"ai,omitempty"`
}

func (c cursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor returns the cursor of a continuation that List could have
// returned for q, or ErrInvalid.
func decodeCursor(q store.Query) (cursor, error) {
	var c cursor
	b, err := base64.RawURLEncoding.DecodeString(q.Continuation)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil {
		return cursor{}, fmt.Errorf("malformed continuation: %w", store.ErrInvalid)
	}
	ok := c.Kind == q.Kind
	if q.Partition != "" {
		ok = ok && c.Partition == q.Partition && c.Token != "" && c.AfterPartition == "" && c.AfterID == ""
	} else {
		ok = ok && c.Partition == "" && c.Token == "" && c.AfterPartition != "" && c.AfterID != ""
	}
	if !ok {
		return cursor{}, fmt.Errorf("continuation of another listing: %w", store.ErrInvalid)
	}
	return c, nil
}

// List returns documents of one kind, in ascending ID order within a
// partition, or in ascending (partition, ID) order across partitions when
// q.Partition is "". Limit defaults to 100 and is at most 1000.
//
// Within a partition, List is one page of a single-partition query ordered
// by id, Limit as its page size, and the SDK's continuation token inside
// the returned continuation. A page may hold fewer than Limit documents
// and still have a continuation; the last page has none.
//
// Across partitions, Cosmos DB can only filter for the Go SDK, not sort. So
// the continuation holds the last (partition, id) returned, and each page
// runs a cross-partition query for the documents of the kind after it,
// reads that query to its end, keeps the Limit+1 smallest in memory,
// sorts them and returns Limit of them. This is exact, holds O(Limit)
// documents at a time and works the same on Cosmos DB and the emulator, but
// each page reads every remaining document of the kind: listing n documents
// reads about n²/(2·Limit) of them. It is meant for administration and
// rotation, with a large Limit; at the scale where that cost matters, an
// unordered scan per feed range would be the tool, not this listing.
//
// A document that exists, keeping its kind, for the whole of a listing is
// returned exactly once; one created or deleted meanwhile may or may not be.
// The order is that of UTF-8 bytes, which is Cosmos DB's string order.
func (m *Metadata) List(ctx context.Context, q store.Query) (store.Page, error) {
	if q.Kind == "" {
		return store.Page{}, fmt.Errorf("list %s: empty kind: %w", q.Partition, store.ErrInvalid)
	}
	limit := q.Limit
	switch {
	case limit <= 0:
		limit = defaultListLimit
	case limit > maxListLimit:
		limit = maxListLimit
	}
	var cur *cursor
	if q.Continuation != "" {
		c, err := decodeCursor(q)
		if err != nil {
			return store.Page{}, fmt.Errorf("list %s %s: %w", q.Partition, q.Kind, err)
		}
		cur = &c
	}
	var (
		page store.Page
		err  error
	)
	if q.Partition != "" {
		page, err = m.listPartition(ctx, q, limit, cur)
	} else {
		page, err = m.listAll(ctx, q, limit, cur)
	}
	if err != nil {
		return store.Page{}, fmt.Errorf("list %s %s: %w", q.Partition, q.Kind, err)
	}
	return page, nil
}

func (m *Metadata) listPartition(ctx context.Context, q store.Query, limit int, cur *cursor) (store.Page, error) {
	opts := &azcosmos.QueryOptions{
		PageSizeHint: int32(limit),
		QueryParameters: []azcosmos.QueryParameter{
			{Name: "@pk", Value: q.Partition},
			{Name: "@kind", Value: q.Kind},
		},
	}
	if cur != nil {
		opts.ContinuationToken = &cur.Token
	}
	resp, err := call(m, ctx, "list", func(ctx context.Context, c *conn) (azcosmos.QueryItemsResponse, error) {
		return c.items.NewQueryItemsPager(partitionQuery, azcosmos.NewPartitionKeyString(q.Partition), opts).NextPage(ctx)
	})
	if err != nil {
		return store.Page{}, err
	}
	if len(resp.Items) > limit {
		return store.Page{}, fmt.Errorf("cosmos returned %d documents for a page of %d", len(resp.Items), limit)
	}
	var page store.Page
	for _, raw := range resp.Items {
		d, err := decodeListed(raw, q)
		if err != nil {
			return store.Page{}, err
		}
		page.Items = append(page.Items, d.item())
	}
	if resp.ContinuationToken != nil && *resp.ContinuationToken != "" {
		page.Continuation = cursor{Kind: q.Kind, Partition: q.Partition, Token: *resp.ContinuationToken}.encode()
	}
	return page, nil
}

func (m *Metadata) listAll(ctx context.Context, q store.Query, limit int, cur *cursor) (store.Page, error) {
	query := kindQuery
	params := []azcosmos.QueryParameter{{Name: "@kind", Value: q.Kind}}
	if cur != nil {
		query = kindAfterQuery
		params = append(params,
			azcosmos.QueryParameter{Name: "@pk", Value: cur.AfterPartition},
			azcosmos.QueryParameter{Name: "@id", Value: cur.AfterID})
	}
	pager := m.conn.Load().items.NewQueryItemsPager(query, azcosmos.NewPartitionKey(), &azcosmos.QueryOptions{
		PageSizeHint:    m.drainPage,
		QueryParameters: params,
	})
	// best holds the smallest documents seen so far, at least keep of them
	// once sorted; it is cut back to keep whenever it doubles.
	keep := limit + 1
	var best []document
	for pager.More() {
		resp, err := call(m, ctx, "list", func(ctx context.Context, _ *conn) (azcosmos.QueryItemsResponse, error) {
			return pager.NextPage(ctx)
		})
		if err != nil {
			return store.Page{}, err
		}
		for _, raw := range resp.Items {
			d, err := decodeListed(raw, q)
			if err != nil {
				return store.Page{}, err
			}
			// The query filtered already; this guards the order's
			// definition against a server that compares strings otherwise.
			if cur != nil && compareKeys(d.PK, d.ID, cur.AfterPartition, cur.AfterID) <= 0 {
				continue
			}
			best = append(best, d)
		}
		if len(best) >= 2*keep {
			best = smallest(best, keep)
		}
	}
	best = smallest(best, keep)
	var page store.Page
	for _, d := range best[:min(limit, len(best))] {
		page.Items = append(page.Items, d.item())
	}
	if len(best) > limit {
		last := page.Items[limit-1]
		page.Continuation = cursor{Kind: q.Kind, AfterPartition: last.Partition, AfterID: last.ID}.encode()
	}
	return page, nil
}

// smallest sorts docs by (partition, id), drops repeats and returns at most
// n of the smallest.
func smallest(docs []document, n int) []document {
	slices.SortFunc(docs, func(a, b document) int { return compareKeys(a.PK, a.ID, b.PK, b.ID) })
	docs = slices.CompactFunc(docs, func(a, b document) bool { return a.PK == b.PK && a.ID == b.ID })
	return docs[:min(n, len(docs))]
}

func compareKeys(p1, id1, p2, id2 string) int {
	return cmp.Or(cmp.Compare(p1, p2), cmp.Compare(id1, id2))
}

// decodeListed decodes a document a listing returned and checks that the
// listing asked for it.
func decodeListed(raw []byte, q store.Query) (document, error) {
	var d document
	if err := json.Unmarshal(raw, &d); err != nil {
		return document{}, fmt.Errorf("undecodable document: %w", err)
	}
	if d.Kind != q.Kind || (q.Partition != "" && d.PK != q.Partition) || d.ID == "" || d.PK == "" {
		return document{}, fmt.Errorf("cosmos returned document %s/%s of kind %q", d.PK, d.ID, d.Kind)
	}
	return d, nil
}
