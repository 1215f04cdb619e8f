package rotation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/rotation"
)

// kvLatency is the Key Vault latency the benchmarks inject in the fake.
const kvLatency = 20 * time.Millisecond

// What a per-owner design would spend: one Key Vault key per owner KEK (or
// the KEKs wrapped by the CMK directly) makes a CMK rotation cost 2 Key
// Vault calls (unwrap + wrap) per owner. Key Vault throttles per vault and
// region: "RSA 3,072-bit: Software key, all other transactions: 1,000;
// HSM key: 500" per 10 seconds (Azure Key Vault service limits,
// https://learn.microsoft.com/en-us/azure/key-vault/general/service-limits,
// "Key transactions (maximum transactions allowed in 10 seconds, per vault
// per region)"). So 1,000 owners would take 2,000 calls: 20 s of a vault's
// whole software-key throttle budget (40 s for an HSM key), during which
// every other request of the service is throttled too; 1,000,000 owners
// would take 5.6 h (11 h). The domain design costs 2 × 16 calls whatever the
// number of owners.
const (
	throttleSoftware3072 = 1000.0 / 10 // wrap/unwrap transactions per second and vault
	throttleHSM3072      = 500.0 / 10
)

func perOwnerSeconds(owners int, perSecond float64) float64 { return float64(2*owners) / perSecond }

// BenchmarkCMKRotation16Domains measures step 1 (re-wrap every domain key
// under a new CMK version) for 16 domains through the Key Vault fake with
// 20 ms latency and the default Key Vault concurrency (4).
func BenchmarkCMKRotation16Domains(b *testing.B) {
	e := newEnv(b, envOptions{keyVault: true})
	e.populate(40)
	e.ensureAllDomains()
	e.kv.SetLatency(kvLatency)
	j := e.job(rotation.Options{}, nil, nil)
	only := rotation.Request{Steps: []rotation.Step{rotation.StepCMK}}
	calls := 0
	var took time.Duration
	for b.Loop() {
		b.StopTimer()
		e.rotateCMK()
		e.kv.ResetCalls()
		b.StartTimer()
		began := time.Now()
		rep, err := j.Run(context.Background(), only)
		took += time.Since(began)
		if err != nil || step(rep, rotation.StepCMK).Rewrapped != 16 {
			b.Fatalf("run: %v, %s", err, reportJSON(rep))
		}
		calls += e.kvCalls()
	}
	b.ReportMetric(float64(calls)/float64(b.N), "kv-calls/op")
	b.ReportMetric(took.Seconds()/float64(b.N), "s/rotation")
	b.ReportMetric(perOwnerSeconds(1000, throttleSoftware3072), "per-owner-design-1000-owners-throttle-s")
	b.ReportMetric(perOwnerSeconds(1000, throttleHSM3072), "per-owner-design-1000-owners-hsm-throttle-s")
}

// BenchmarkDomainRotation measures step 2 for 10 and 1,000 owners: a new
// version for each domain in use (one Key Vault wrap each, plus the unwrap
// of the old version a cold instance needs), then every owner keyring
// re-wrapped locally, one CAS each and no Key Vault call: kv-calls/op is
// at most 2 × domains whatever the number of owners.
func BenchmarkDomainRotation(b *testing.B) {
	for _, owners := range []int{10, 1000} {
		b.Run(fmt.Sprintf("%d-owners", owners), func(b *testing.B) {
			e := newEnv(b, envOptions{keyVault: true})
			e.populateN(owners, 1)
			e.kv.SetLatency(kvLatency)
			only := rotation.Request{Steps: []rotation.Step{rotation.StepDomain}}
			var rewrapped, calls int
			var took time.Duration
			for b.Loop() {
				b.StopTimer()
				e.clock.Advance(91 * day)
				j := e.job(rotation.Options{}, nil, nil) // the timer's own, cold instance
				e.kv.ResetCalls()
				b.StartTimer()
				began := time.Now()
				rep, err := j.Run(context.Background(), only)
				took += time.Since(began)
				if err != nil || !rep.Complete {
					b.Fatalf("run: %v, %s", err, reportJSON(rep))
				}
				rewrapped += step(rep, rotation.StepDomain).Rewrapped
				calls += e.kvCalls()
			}
			b.ReportMetric(float64(rewrapped)/took.Seconds(), "keyrings/s")
			b.ReportMetric(float64(calls)/float64(b.N), "kv-calls/op")
			b.ReportMetric(perOwnerSeconds(owners, throttleSoftware3072), "per-owner-design-throttle-s")
		})
	}
}

// BenchmarkReencryptSweep measures step 3 for 300 owners with 3 secrets
// each: a new KEK per owner and every secret version re-encrypted (read,
// open, seal, new blob, CAS, old blob deleted). Settle is 100 ms here (5 s
// by default: each page then waits up to that once for the new KEKs). The
// KEKs are wrapped by their domain keys, so the only Key Vault calls are a
// cold instance's domain unwraps; a per-owner design (each KEK wrapped by
// the CMK) would spend an unwrap and a wrap per owner.
func BenchmarkReencryptSweep(b *testing.B) {
	e := newEnv(b, envOptions{keyVault: true})
	e.populate(300)
	e.kv.SetLatency(kvLatency)
	opt := rotation.Options{DomainMaxAge: 100 * 365 * day, Settle: 100 * time.Millisecond}
	only := rotation.Request{Steps: []rotation.Step{rotation.StepKEK}}
	var moved, calls int
	var took time.Duration
	for b.Loop() {
		b.StopTimer()
		e.clock.Advance(366 * day)
		j := e.job(opt, nil, nil)
		e.kv.ResetCalls()
		b.StartTimer()
		began := time.Now()
		rep, err := j.Run(context.Background(), only)
		took += time.Since(began)
		if err != nil || !rep.Complete {
			b.Fatalf("run: %v, %s", err, reportJSON(rep))
		}
		moved += step(rep, rotation.StepKEK).Reencrypted
		calls += e.kvCalls()
	}
	b.ReportMetric(float64(moved)/took.Seconds(), "versions/s")
	b.ReportMetric(float64(calls)/float64(b.N), "kv-calls/op")
	b.ReportMetric(perOwnerSeconds(300, throttleSoftware3072), "per-owner-design-throttle-s")
}
