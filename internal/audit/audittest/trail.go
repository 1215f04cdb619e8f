package audittest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/credvault/credvault/internal/audit"
)

// fixedKey is a KeySource with one 32-byte key, version 1.
type fixedKey struct{}

func (fixedKey) AuditKey(context.Context) ([]byte, uint32, error) {
	// A fresh copy each time: the trail clears the key after use.
	return bytes.Repeat([]byte{0x5a}, 32), 1, nil
}

// testTrail runs a closed-mode Trail over the store: 200 records from 16
// goroutines, then Close, then Verify over the reader.
func testTrail(t *testing.T, s audit.Store, r audit.Reader) {
	const records, writers = 200, 16
	tr := audit.New(s, audit.Options{
		Mode: audit.Closed,
		Keys: fixedKey{},
		Log:  slog.New(slog.DiscardHandler),
	})
	var wg sync.WaitGroup
	errs := make(chan error, records)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < records; i += writers {
				err := tr.Record(t.Context(), audit.Event{
					Op:          audit.OpSecretRead,
					Outcome:     audit.Success,
					Status:      200,
					Principal:   audit.PrincipalUser,
					Correlation: fmt.Sprintf("corr-%03d", i),
					Version:     uint64(i),
					Owner:       "tenant/owner",
					Caller:      fmt.Sprintf("tenant/caller-%d", w),
					Name:        fmt.Sprintf("secret-%d", i),
				})
				if err != nil {
					errs <- fmt.Errorf("Record #%d: %w", i, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := tr.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	rep, err := audit.Verify(t.Context(), r, audit.VerifyOptions{})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	for _, p := range rep.Problems {
		t.Errorf("Verify problem: %s", p)
	}
	if got, want := rep.Records, records; got != want {
		t.Errorf("Verify: %d records, want %d", got, want)
	}
	if !rep.OK() {
		t.Errorf("Verify: report not OK")
	}
}
