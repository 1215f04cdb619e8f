package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/vault"
)

// benchApp opens the service as make run wires it, on a fresh data dir.
func benchApp(b *testing.B, settings map[string]string) (*app, string) {
	b.Helper()
	dir := b.TempDir()
	cfg, err := config.Load(func(k string) string {
		if k == "CREDVAULT_DATA_DIR" {
			return dir
		}
		return settings[k]
	})
	if err != nil {
		b.Fatal(err)
	}
	a, err := openApp(cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.close() })
	return a, dir
}

// latencies collects per-operation durations and reports percentiles.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B) {
	slices.Sort(l.d)
	if len(l.d) == 0 {
		return
	}
	b.ReportMetric(float64(l.d[len(l.d)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(l.d[len(l.d)*99/100].Microseconds()), "p99-µs")
}

func BenchmarkInProcess(b *testing.B) {
	for _, op := range []string{"get", "put"} {
		for _, conc := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/c%d", op, conc), func(b *testing.B) {
				a, _ := benchApp(b, nil)
				benchVault(b, a.vault, op, conc)
			})
		}
	}
}

// benchVault seeds 64 secrets of one owner, then runs op ("get" of those,
// or "put" of new versions over 1,024 names) from conc goroutines through
// the service, and reports ops/s and latency percentiles.
func benchVault(b *testing.B, v *vault.Vault, op string, conc int) {
	ctx := context.Background()
	owner := ownerOf("bench")
	for i := range 64 {
		if _, err := v.Put(ctx, owner, vault.PutRequest{Name: fmt.Sprintf("s%d", i), Value: []byte(`"a 64-byte secret value ................................."`)}); err != nil {
			b.Fatal(err)
		}
	}
	var lat latencies
	var n atomic.Int64
	b.SetParallelism(max(1, conc/2)) // 2 cores: GOMAXPROCS × this = conc goroutines
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			t0 := time.Now()
			var err error
			if op == "get" {
				_, err = v.Get(ctx, owner, fmt.Sprintf("s%d", i%64), 0)
			} else {
				_, err = v.Put(ctx, owner, vault.PutRequest{Name: fmt.Sprintf("p%d", i%1024), Value: []byte(`"value"`)})
			}
			if err != nil {
				b.Error(err)
				return
			}
			lat.add(time.Since(t0))
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
	lat.report(b)
}

// BenchmarkHTTP drives a real loopback server with a client beside it, as a
// load generator on the same 2-core machine would.
func BenchmarkHTTP(b *testing.B) {
	for _, op := range []string{"get", "put"} {
		for _, conc := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/c%d", op, conc), func(b *testing.B) {
				a, _ := benchApp(b, nil)
				benchHTTP(b, a, a.handler, op, conc)
			})
		}
	}
}

// BenchmarkHTTPAudit measures what the audit trail costs over loopback at
// concurrency 16: closed (every response waits for its record to be
// durable, in group commits), open (records queued) and off (no trail).
func BenchmarkHTTPAudit(b *testing.B) {
	for _, op := range []string{"get", "put"} {
		for _, mode := range []string{"closed", "open", "off"} {
			b.Run(fmt.Sprintf("%s/%s/c16", op, mode), func(b *testing.B) {
				settings := map[string]string{"CREDVAULT_AUDIT_MODE": mode}
				if mode == "off" {
					settings = nil
				}
				a, _ := benchApp(b, settings)
				h := a.handler
				if mode == "off" {
					h = a.unaudited()
				}
				benchHTTP(b, a, h, op, 16)
			})
		}
	}
}

// BenchmarkHTTPAuditFloor is the same load against a bare handler that only
// answers a fixed body, with (closed) and without one audit record through
// the app's trail: what a durable, group-committed record costs on this
// machine's disk when a request does nothing else. The vault's closed-mode
// cost cannot be lower than this floor's.
func BenchmarkHTTPAuditFloor(b *testing.B) {
	for _, mode := range []string{"closed", "off"} {
		b.Run(fmt.Sprintf("get/bare/%s/c16", mode), func(b *testing.B) {
			a, _ := benchApp(b, nil)
			ev := audit.Event{Op: audit.OpSecretRead, Outcome: audit.Success, Status: http.StatusOK,
				Principal: audit.PrincipalUser, Roles: []string{"Credentials.Read"}, Version: 1, KEK: 1,
				Owner: "bench-owner", Caller: "bench-owner", Name: "bench-secret"}
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if mode == "closed" {
					if err := a.trail.Record(r.Context(), ev); err != nil {
						http.Error(w, "audit", http.StatusServiceUnavailable)
						return
					}
				}
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(`{"name":"s","version":1,"value":"a 64-byte secret value ..................................."}`))
			})
			benchHTTP(b, a, h, "get", 16)
		})
	}
}

// benchHTTP serves h on loopback, seeds 64 secrets of one owner, then runs
// op ("get" of those, or "put" of new versions over 1,024 names) from conc
// client goroutines, and reports requests/s and latency percentiles.
func benchHTTP(b *testing.B, a *app, h http.Handler, op string, conc int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()
	base := "http://" + ln.Addr().String() + "/api/credentials/"
	tok, err := a.dev.Mint("bench", []identity.Role{identity.CredentialsRead, identity.CredentialsWrite}, time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}}
	call := func(method, name string, body []byte) error {
		req, _ := http.NewRequest(method, base+name, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s %s: %d", method, name, resp.StatusCode)
		}
		return nil
	}
	for i := range 64 {
		if err := call("PUT", fmt.Sprintf("s%d", i), []byte(`{"value":"a 64-byte secret value ..................................."}`)); err != nil {
			b.Fatal(err)
		}
	}
	var lat latencies
	var n atomic.Int64
	b.SetParallelism(max(1, conc/2))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			t0 := time.Now()
			var err error
			if op == "get" {
				err = call("GET", fmt.Sprintf("s%d", i%64), nil)
			} else {
				err = call("PUT", fmt.Sprintf("p%d", i%1024), []byte(`{"value":"v"}`))
			}
			if err != nil {
				b.Error(err)
				return
			}
			lat.add(time.Since(t0))
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	lat.report(b)
}

// BenchmarkColdStartCMKUnwraps counts the CMK unwraps that 10,000 gets over
// 1,000 owners need from a cold start (a new instance: empty key cache).
// The design's bound is the number of key domains.
func BenchmarkColdStartCMKUnwraps(b *testing.B) {
	ctx := context.Background()
	a, dir := benchApp(b, nil)
	const owners, gets = 1000, 10000
	for o := range owners {
		if _, err := a.vault.Put(ctx, ownerOf(fmt.Sprint("owner-", o)), vault.PutRequest{Name: "s", Value: []byte(`1`)}); err != nil {
			b.Fatal(err)
		}
	}
	a.close()
	b.ResetTimer()
	var unwraps uint64
	for range b.N {
		cfg, _ := config.Load(func(k string) string {
			if k == "CREDVAULT_DATA_DIR" {
				return dir
			}
			return ""
		})
		cold, err := openApp(cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
		if err != nil {
			b.Fatal(err)
		}
		for i := range gets {
			if _, err := cold.vault.Get(ctx, ownerOf(fmt.Sprint("owner-", i%owners)), "s", 0); err != nil {
				b.Fatal(err)
			}
		}
		unwraps += cold.localCMK.Unwraps()
		cold.close()
	}
	b.ReportMetric(float64(unwraps)/float64(b.N), "cmk-unwraps/10k-gets")
	b.ReportMetric(16, "domains")
}
