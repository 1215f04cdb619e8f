package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/cmk/kvfake"
	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/vault"
)

// BenchmarkAzure measures put and get through the Azure adapters against
// Azurite, the Cosmos DB emulator and the Key Vault fake (the emulators,
// not the adapters, bound these figures).
func BenchmarkAzure(b *testing.B) {
	for _, op := range []string{"get", "put"} {
		for _, conc := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/c%d", op, conc), func(b *testing.B) {
				benchVault(b, startWith(b, true).app.vault, op, conc)
			})
		}
	}
	b.Run("keyvault-calls-10k-gets-100-owners", benchKeyVaultCalls)
}

// benchKeyVaultCalls counts the Key Vault calls of 10,000 gets over 100
// owners from a cold instance, with the fake answering in 20 ms, for the
// design's cache and for a naive configuration that unwraps on every get,
// in the same run.
func benchKeyVaultCalls(b *testing.B) {
	ctx := context.Background()
	e := startWith(b, true)
	const owners, gets, workers = 100, 10000, 64
	for o := range owners {
		if _, err := e.app.vault.Put(ctx, ownerOf(fmt.Sprint("owner-", o)), vault.PutRequest{Name: "s", Value: []byte(`1`)}); err != nil {
			b.Fatal(err)
		}
	}
	cfg, err := config.Load(e.getenv)
	if err != nil {
		b.Fatal(err)
	}
	e.kv.SetLatency(20 * time.Millisecond)
	b.ResetTimer()
	for _, mode := range []struct {
		name  string
		cache *keyring.CacheOptions
	}{{"cached", nil}, {"naive", &keyring.CacheOptions{Disabled: true}}} {
		var calls, elapsed float64
		for range b.N {
			d := e.deps
			d.cache = mode.cache
			cold, err := openAppWith(cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)), d)
			if err != nil {
				b.Fatal(err)
			}
			e.kv.ResetCalls()
			t0 := time.Now()
			var next atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for i := next.Add(1) - 1; i < gets; i = next.Add(1) - 1 {
						if _, err := cold.vault.Get(ctx, ownerOf(fmt.Sprint("owner-", i%owners)), "s", 0); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed += time.Since(t0).Seconds()
			calls += float64(e.kv.Calls(kvfake.OpGetKey) + e.kv.Calls(kvfake.OpWrapKey) + e.kv.Calls(kvfake.OpUnwrapKey))
			cold.close()
		}
		b.ReportMetric(calls/float64(b.N), mode.name+"-kv-calls")
		b.ReportMetric(elapsed/float64(b.N), mode.name+"-seconds")
	}
}
