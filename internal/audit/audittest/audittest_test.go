package audittest_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/audit/audittest"
)

// memStore is the simplest store that keeps the contract: the suite's own
// check that it asks for nothing more.
type memStore struct {
	mu   sync.Mutex
	segs map[string][]byte
}

func (m *memStore) Append(ctx context.Context, segment string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("append to %s: %w", segment, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.segs[segment] = append(m.segs[segment], data...)
	return nil
}

func (m *memStore) Segments(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Collect(maps.Keys(m.segs)), nil
}

func (m *memStore) Open(_ context.Context, segment string) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.segs[segment]
	if !ok {
		return nil, fmt.Errorf("open %s: %w", segment, fs.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(bytes.Clone(b))), nil
}

func TestMemStore(t *testing.T) {
	audittest.TestStore(t, func(t *testing.T) (audit.Store, audit.Reader) {
		m := &memStore{segs: map[string][]byte{}}
		return m, m
	})
}
