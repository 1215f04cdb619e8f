package audit_test

import (
	"context"
	"testing"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/audit/auditfile"
)

// countingStore counts appends, to report records per append.
type countingStore struct {
	audit.Store
	appends int // only the trail's single writer appends
}

func (c *countingStore) Append(ctx context.Context, segment string, data []byte) error {
	c.appends++
	return c.Store.Append(ctx, segment, data)
}

// BenchmarkRecordClosedParallel: closed-mode Records from many goroutines
// (b.RunParallel: GOMAXPROCS of them; -cpu sets how many) on auditfile,
// every append fsynced. Group commit is what makes this more than one
// record per fsync.
func BenchmarkRecordClosedParallel(b *testing.B) {
	st, err := auditfile.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cs := &countingStore{Store: st}
	tr := audit.New(cs, audit.Options{Keys: keys{}, Log: quiet})
	e := audit.Event{Op: audit.OpSecretRead, Outcome: audit.Success, Status: 200, Principal: audit.PrincipalUser,
		Roles: []string{"Credentials.Read"}, Correlation: "00000000-0000-4000-8000-000000000001", Version: 3, KEK: 1,
		Owner:  "72f988bf-86f1-41af-91ab-2d7cd011db47/0e2c4a6b-8d1f-4b3a-9c5e-7f2a1b3c4d5e",
		Caller: "72f988bf-86f1-41af-91ab-2d7cd011db47/0e2c4a6b-8d1f-4b3a-9c5e-7f2a1b3c4d5e", Name: "github-token"}
	b.SetParallelism(16) // 16 goroutines per CPU: requests waiting on their record
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := tr.Record(context.Background(), e); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if err := tr.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	if cs.appends > 0 {
		b.ReportMetric(float64(b.N)/float64(cs.appends), "records/append")
	}
}

// BenchmarkRecordClosedSerial: one Record at a time, so one fsync per
// record: the baseline that group commit improves on.
func BenchmarkRecordClosedSerial(b *testing.B) {
	st, err := auditfile.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	tr := audit.New(st, audit.Options{Keys: keys{}, Log: quiet})
	e := audit.Event{Op: audit.OpSecretRead, Outcome: audit.Success, Owner: "contoso/alice", Caller: "contoso/alice", Name: "github-token"}
	for b.Loop() {
		if err := tr.Record(context.Background(), e); err != nil {
			b.Fatal(err)
		}
	}
	if err := tr.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
