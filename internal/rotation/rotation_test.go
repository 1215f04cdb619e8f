package rotation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/rotation"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/vault"
)

// TestCMKRotationCallsScaleWithDomainsNotOwners rotates the CMK of a
// deployment of 16 key domains (all in use) with 10 owners and with 1,000
// owners (3,000 secrets), and runs the job: every secret still decrypts
// (on a new instance, and again once the old CMK version is disabled),
// every domain key version is under the new CMK version, and the job asks
// Key Vault for 2 calls per domain (at most 2 on the emulators): the same
// number with 10 owners as with 1,000. On both backends.
func TestCMKRotationCallsScaleWithDomainsNotOwners(t *testing.T) {
	forEachBackend(t, func(t *testing.T, azure bool) {
		calls := map[int]int{}
		for _, owners := range []int{10, 1000} {
			t.Run(fmt.Sprintf("%d owners", owners), func(t *testing.T) {
				ctx := context.Background()
				began := time.Now()
				e := backendEnv(t, azure, envOptions{keyVault: true})
				e.populate(owners)
				e.ensureAllDomains()
				seeded := time.Since(began)
				old := e.currentCMK()
				kid := e.rotateCMK()
				e.kv.ResetCalls()

				began = time.Now()
				rep, err := e.job(rotation.Options{}, nil, nil).Run(ctx, rotation.Request{})
				if err != nil {
					t.Fatalf("Run: %v (%s)", err, reportJSON(rep))
				}
				if !rep.Complete {
					t.Fatalf("run not complete: %s", reportJSON(rep))
				}
				ran := time.Since(began)
				got, reported := e.kvCalls(), 0
				for _, s := range rotation.Steps {
					reported += step(rep, s).KeyVaultCalls
				}
				t.Logf("%d owners (%d secrets): seeded in %v, job in %v: %d wrap/unwrap calls to Key Vault (%d getKey), %d reported",
					owners, 3*owners, seeded.Round(time.Millisecond), ran.Round(time.Millisecond), got, e.kv.Calls("getKey"), reported)
				if azure && got > 2*e.domains {
					t.Fatalf("Key Vault wrap/unwrap calls = %d, want at most 2 × %d domains", got, e.domains)
				}
				if !azure && got != 2*e.domains {
					t.Fatalf("Key Vault wrap/unwrap calls = %d, want 2 × %d domains", got, e.domains)
				}
				if reported != got {
					t.Fatalf("report counts %d Key Vault calls, the fake answered %d", reported, got)
				}
				if s := step(rep, rotation.StepCMK); s.Rewrapped != e.domains || s.Examined != e.domains {
					t.Fatalf("cmk step: %+v, want %d domain keys re-wrapped", s, e.domains)
				}
				began = time.Now()
				e.checkState(want{cmk: kid, noOrphans: true})

				// The old version can go: every secret still opens, on a new instance.
				if err := e.kv.SetEnabled(old, false); err != nil {
					t.Fatal(err)
				}
				e.checkState(want{cmk: kid})
				t.Logf("checks in %v", time.Since(began).Round(time.Millisecond))
				calls[owners] = got
			})
		}
		if len(calls) == 2 && calls[10] != calls[1000] {
			t.Fatalf("Key Vault calls: %d with 10 owners, %d with 1,000: they must not grow with owners", calls[10], calls[1000])
		}
	})
}

// TestDomainRotationMakesNoPerOwnerKeyVaultCall ages the domain keys past
// the policy: each domain gets a new version (one Key Vault wrap), every
// owner keyring and the index key are re-wrapped locally, the old versions
// are retired, and destroyed only after DestroyAfter. On both backends.
func TestDomainRotationMakesNoPerOwnerKeyVaultCall(t *testing.T) {
	forEachBackend(t, func(t *testing.T, azure bool) {
		ctx := context.Background()
		e := backendEnv(t, azure, envOptions{keyVault: true})
		const owners = 50
		e.populate(owners)
		used := e.domainsInUse()
		e.clock.Advance(91 * day)
		e.kv.ResetCalls()
		j := e.job(rotation.Options{}, nil, nil)
		rep, err := j.Run(ctx, rotation.Request{})
		if err != nil || !rep.Complete {
			t.Fatalf("Run: %v, %s", err, reportJSON(rep))
		}
		ds := step(rep, rotation.StepDomain)
		t.Logf("domain step: %s", reportJSON(rotation.Report{Steps: []rotation.StepReport{ds}}))
		if ds.Added != used || ds.Rewrapped != owners+2 || ds.Retired != used || ds.Destroyed != 0 || ds.Failed != 0 {
			t.Fatalf("domain step = %+v; want %d added, %d re-wrapped (owners, the index and the audit key), %d retired, none destroyed", ds, used, owners+2, used)
		}
		if wraps := e.kv.Calls("wrapKey"); wraps != used {
			t.Fatalf("Key Vault wraps = %d, want one per domain (%d)", wraps, used)
		}
		if calls := e.kvCalls(); calls > 2*used || calls != ds.KeyVaultCalls+step(rep, rotation.StepKEK).KeyVaultCalls {
			t.Fatalf("Key Vault calls = %d (reported %d); want at most 2 per domain (%d), none per owner", calls, ds.KeyVaultCalls, 2*used)
		}
		if s := step(rep, rotation.StepKEK); s.Added != 0 || s.Reencrypted != 0 {
			t.Fatalf("kek step = %+v: KEKs are not old enough to rotate", s)
		}
		e.checkState(want{settled: true, noOrphans: true})
		for d := range e.domains {
			if r, ok := e.domainRing(d); ok && (len(r.Versions) != 2 || !r.Versions[0].Retired || r.Active != 2) {
				t.Fatalf("domain %d: %+v, want version 1 retired, version 2 active", d, r.Versions)
			}
		}

		calls := e.kvCalls()
		if rep, err := j.Run(ctx, rotation.Request{}); err != nil || step(rep, rotation.StepDomain).Destroyed != 0 {
			t.Fatalf("a run soon after destroyed %d versions (%v); want none before DestroyAfter", step(rep, rotation.StepDomain).Destroyed, err)
		}
		e.clock.Advance(2 * day)
		rep, err = j.Run(ctx, rotation.Request{})
		if err != nil || step(rep, rotation.StepDomain).Destroyed != used {
			t.Fatalf("Run after DestroyAfter: %v, %s; want %d versions destroyed", err, reportJSON(rep), used)
		}
		if e.kvCalls() != calls {
			t.Fatalf("the later runs called Key Vault %d times", e.kvCalls()-calls)
		}
		e.checkState(want{settled: true, oneDomain: true, noOrphans: true})
	})
}

// TestKEKRotationSweepsEverySecret ages the owner KEKs past the policy:
// each owner gets a new KEK (no Key Vault wrap; a new instance unwraps each
// domain key it uses once), the sweep moves every secret version
// (soft-deleted ones too) and deletes the old ciphertext, the old KEK is
// retired, then destroyed once it is safe. Then one owner's KEK is rotated
// on demand, still with no Key Vault call. On both backends.
func TestKEKRotationSweepsEverySecret(t *testing.T) {
	forEachBackend(t, func(t *testing.T, azure bool) {
		ctx := context.Background()
		e := backendEnv(t, azure, envOptions{keyVault: true})
		const owners = 50
		e.populate(owners)
		for i := range 5 {
			if err := e.put(ctx, e.v, ownerID(i), "secret-0"); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.v.Delete(ctx, ownerID(7), "secret-2", ""); err != nil { // soft-deleted: moved too
			t.Fatal(err)
		}
		used := e.domainsInUse()
		e.clock.Advance(366 * day)
		e.kv.ResetCalls()
		j := e.job(rotation.Options{DomainMaxAge: 10 * 365 * day}, nil, nil)
		rep, err := j.Run(ctx, rotation.Request{})
		if err != nil || !rep.Complete {
			t.Fatalf("Run: %v, %s", err, reportJSON(rep))
		}
		ks := step(rep, rotation.StepKEK)
		t.Logf("kek step: %s", reportJSON(rotation.Report{Steps: []rotation.StepReport{ks}}))
		versions := owners*3 + 5
		if ks.Added != owners || ks.Reencrypted != versions || ks.VersionsExamined != versions || ks.Retired != owners ||
			ks.Destroyed != 0 || ks.Collected != versions || ks.Failed != 0 {
			t.Fatalf("kek step = %+v; want %d KEKs added and retired, %d versions re-encrypted and old blobs deleted", ks, owners, versions)
		}
		// A new instance unwraps each domain key it uses once: nothing per owner.
		if calls := e.kvCalls(); calls > used || e.kv.Calls("wrapKey") != 0 {
			t.Fatalf("Key Vault calls = %d (%d wraps); want at most one unwrap per domain in use (%d), none per owner", calls, e.kv.Calls("wrapKey"), used)
		}
		if _, err := e.v.Restore(ctx, ownerID(7), "secret-2"); err != nil {
			t.Fatal(err)
		}
		e.checkState(want{settled: true, noOrphans: true, kekVersion: 2})

		e.clock.Advance(2 * day)
		rep, err = j.Run(ctx, rotation.Request{})
		if ks := step(rep, rotation.StepKEK); err != nil || ks.Destroyed != owners || ks.Reencrypted != 0 {
			t.Fatalf("Run after DestroyAfter: %v, %s; want the %d old KEKs destroyed, nothing to move", err, reportJSON(rep), owners)
		}
		e.checkState(want{settled: true, oneKEK: true, noOrphans: true, kekVersion: 2})
		rep, err = j.Run(ctx, rotation.Request{})
		if ks := step(rep, rotation.StepKEK); err != nil || ks.VersionsExamined != 0 || ks.Examined != owners {
			t.Fatalf("Run with nothing to do: %v, %s; want only the %d keyrings read", err, reportJSON(rep), owners)
		}

		// On demand: one owner's KEK now, whatever its age; still no Key Vault call.
		calls := e.kvCalls()
		oh, err := e.keys.OwnerHash(ctx, ownerID(3))
		if err != nil {
			t.Fatal(err)
		}
		rep, err = j.Run(ctx, rotation.Request{Owner: oh})
		if ks := step(rep, rotation.StepKEK); err != nil || ks.Added != 1 || ks.Reencrypted != 4 || ks.Retired != 1 {
			t.Fatalf("Run for one owner: %v, %s; want 1 KEK added, its 4 versions moved", err, reportJSON(rep))
		}
		if rep.Owner != oh {
			t.Fatalf("report owner = %q, want %q", rep.Owner, oh)
		}
		if e.kvCalls() != calls {
			t.Fatalf("rotating one owner's KEK called Key Vault %d times", e.kvCalls()-calls)
		}
		o, err := e.keys.Owner(ctx, oh)
		if err != nil || o.Active() != 3 {
			t.Fatalf("owner's active KEK = %d (%v), want 3", o.Active(), err)
		}
		e.checkState(want{settled: true, noOrphans: true})

		for _, tt := range []struct {
			req  rotation.Request
			want error
		}{
			{rotation.Request{Owner: "tenant/alice"}, rotation.ErrInvalidOwner},
			{rotation.Request{Owner: strings.Repeat("0", 32)}, rotation.ErrUnknownOwner},
			{rotation.Request{Steps: []rotation.Step{"everything"}}, rotation.ErrInvalidStep},
		} {
			if _, err := j.Run(ctx, tt.req); !errors.Is(err, tt.want) {
				t.Errorf("Run(%+v) = %v, want %v", tt.req, err, tt.want)
			}
		}
	})
}

// TestGarbageStepCollectsOldOrphansOnly leaves orphan blobs (as a crashed
// writer does): the job deletes them once they are older than the grace
// period, and nothing else.
func TestGarbageStepCollectsOldOrphansOnly(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOptions{domains: 2})
	e.populate(5)
	oh, err := e.keys.OwnerHash(ctx, ownerID(1))
	if err != nil {
		t.Fatal(err)
	}
	orphans := []string{oh + "/0000000000000000000000000000000a", strings.Repeat("f", 32) + "/0000000000000000000000000000000b"}
	for _, n := range append(orphans, "elsewhere/not-ciphertext") {
		if err := e.blobs.Create(ctx, n, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	all := len(e.blobNames())
	j := e.job(rotation.Options{PageSize: 1}, nil, nil) // 10 blobs a page
	only := rotation.Request{Steps: []rotation.Step{rotation.StepGarbage}}
	reps := runUntilComplete(t, j, only, 10)
	if s := sum(reps, rotation.StepGarbage); s.Examined != all || s.Collected != 0 {
		t.Fatalf("within the grace period: %+v; want %d examined, none collected", s, all)
	}
	e.clock.Advance(25 * time.Hour)
	reps = runUntilComplete(t, j, only, 10)
	if s := sum(reps, rotation.StepGarbage); s.Examined != all || s.Collected != len(orphans) || s.Failed != 0 {
		t.Fatalf("after the grace period: %+v; want %d examined, %d collected", s, all, len(orphans))
	}
	if got := len(e.blobNames()); got != all-len(orphans) {
		t.Fatalf("%d blobs left, want %d", got, all-len(orphans))
	}
	if err := e.blobs.Delete(ctx, "elsewhere/not-ciphertext"); err != nil {
		t.Fatal(err)
	}
	e.checkState(want{noOrphans: true})
}

// TestCheckpointResumes gives every run a budget too small for more than one
// page per step: each run goes one page further from where the last one
// stopped, until the work is done; nothing is done twice.
func TestCheckpointResumes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOptions{domains: 4})
	const owners = 10
	e.populate(owners)
	e.clock.Advance(366 * day)
	j := e.job(rotation.Options{Budget: time.Nanosecond, PageSize: 2}, nil, nil)

	checkpoint := func() map[string]json.RawMessage {
		it, err := e.meta.Get(ctx, store.Domains, rotation.CheckpointID)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		var cp map[string]json.RawMessage
		if err := json.Unmarshal(it.Body, &cp); err != nil {
			t.Fatal(err)
		}
		return cp
	}

	// Step 2: one domain a run (each is a unit of Key Vault work), then one
	// page of keyrings a run.
	var reps []rotation.Report
	midPass := 0
	for len(reps) < 40 {
		rep, err := j.Run(ctx, rotation.Request{Steps: []rotation.Step{rotation.StepDomain}})
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, rep)
		if rep.Complete {
			break
		}
		if s := step(rep, rotation.StepDomain); !s.More || s.Stopped != "budget" {
			t.Fatalf("run %d incomplete but its step says %+v", len(reps), s)
		}
		if checkpoint()["domains"] != nil {
			midPass++
		}
	}
	ds := sum(reps, rotation.StepDomain)
	t.Logf("domain step: %d runs, %d of them mid-pass; %+v", len(reps), midPass, ds)
	if !reps[len(reps)-1].Complete || midPass < owners/2-1 {
		t.Fatalf("%d runs, %d stopped mid-pass: want the pass over %d keyrings spread over runs of one page", len(reps), midPass, owners)
	}
	if ds.Examined != owners || ds.Rewrapped != owners+2 { // and the index and audit keys
		t.Fatalf("domain step over the runs = %+v; want each of the %d keyrings examined and re-wrapped once", ds, owners)
	}

	// Step 3: KEK rotation and sweeps, a page at a time.
	reps = runUntilComplete(t, j, rotation.Request{Steps: []rotation.Step{rotation.StepKEK}}, 60)
	ks := sum(reps, rotation.StepKEK)
	t.Logf("kek step: %d runs; %+v", len(reps), ks)
	if len(reps) < 5 || ks.Added != owners || ks.VersionsExamined != 3*owners || ks.Reencrypted != 3*owners || ks.Retired != owners {
		t.Fatalf("kek step over %d runs = %+v; want %d KEKs added and retired, %d versions examined and moved once", len(reps), ks, owners, 3*owners)
	}
	if cp := checkpoint(); cp["sweeps"] != nil {
		t.Fatalf("checkpoint keeps sweeps after the work is done: %s", cp["sweeps"])
	}
	e.checkState(want{settled: true, kekVersion: 2})
}

// TestReportIsSavedAndLogged checks the report a run saves (GET
// /api/admin/rotate), its JSON, and its log line.
func TestReportIsSavedAndLogged(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOptions{domains: 2})
	var logs bytes.Buffer
	j := e.job(rotation.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, nil, nil)
	if _, err := j.LastReport(ctx); !errors.Is(err, rotation.ErrNoReport) {
		t.Fatalf("LastReport before any run: %v, want ErrNoReport", err)
	}
	e.populate(3)
	e.rotateCMK()
	e.clock.Advance(400 * day) // work for every step: the counts are not all zero
	rep, err := j.Run(ctx, rotation.Request{})
	if err != nil {
		t.Fatal(err)
	}
	last, err := j.LastReport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := reportJSON(last), reportJSON(rep); got != want {
		t.Fatalf("LastReport = %s, want %s", got, want)
	}
	var generic struct {
		Started, Finished, Complete any
		Steps                       []map[string]any
	}
	if err := json.Unmarshal([]byte(reportJSON(rep)), &generic); err != nil {
		t.Fatal(err)
	}
	if generic.Started == nil || generic.Finished == nil || generic.Complete == nil {
		t.Errorf("report JSON lacks started, finished or complete: %s", reportJSON(rep))
	}
	if len(rep.Steps) != 4 || len(generic.Steps) != 4 {
		t.Fatalf("report has %d steps, want 4", len(rep.Steps))
	}
	// Every count of every step is in the JSON and in the step's group of
	// the one log line, with the same value.
	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil || line["msg"] != "rotation" {
		t.Fatalf("log line %q (%v): want one JSON line, msg rotation", logs.String(), err)
	}
	fields := []string{"examined", "added", "rewrapped", "reencrypted", "retired", "destroyed",
		"collected", "failed", "keyVaultCalls", "durationMs", "backlog"}
	nonzero := map[string]bool{}
	for i, s := range rep.Steps {
		group, ok := line[string(s.Step)].(map[string]any)
		if !ok {
			t.Fatalf("log line has no group for step %s: %s", s.Step, logs.String())
		}
		for _, f := range fields {
			inJSON, ok := generic.Steps[i][f]
			if !ok {
				t.Errorf("step %s: report JSON has no %q", s.Step, f)
			}
			if group[f] != inJSON {
				t.Errorf("step %s: log has %s=%v, report %v", s.Step, f, group[f], inJSON)
			}
			if n, _ := inJSON.(float64); n != 0 {
				nonzero[f] = true
			}
		}
	}
	for _, f := range []string{"examined", "added", "rewrapped", "reencrypted", "retired", "keyVaultCalls"} {
		if !nonzero[f] {
			t.Errorf("no step reports any %s after a run with work for every step: %s", f, reportJSON(rep))
		}
	}
	if strings.Contains(logs.String(), "rotation-marker") || strings.Contains(logs.String(), "owner-0") {
		t.Fatal("the log line holds a value or an owner id")
	}
}

// TestKeyVaultUnavailableStopsTheStep makes Key Vault answer 503 during the
// CMK step: the step stops and says so, the run's error wraps
// keyring.ErrUnavailable (503 for the HTTP route, a failed invocation for
// the timer), the steps that need no Key Vault still run, and the next run
// finishes the work.
func TestKeyVaultUnavailableStopsTheStep(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOptions{keyVault: true, domains: 4})
	e.populate(8)
	kid := e.rotateCMK()
	if _, err := e.keys.CMKCurrent(ctx); err != nil { // the current version is known: only wraps and unwraps fail
		t.Fatal(err)
	}
	j := e.job(rotation.Options{KeyVaultConcurrency: 1}, nil, nil)
	e.kv.FailNext(3, 503) // one unwrap and its two retries
	rep, err := j.Run(ctx, rotation.Request{})
	if !errors.Is(err, keyring.ErrUnavailable) {
		t.Fatalf("Run with Key Vault down: %v, want ErrUnavailable", err)
	}
	if s := step(rep, rotation.StepCMK); s.Stopped != "unavailable" || s.Backlog == 0 || rep.Complete {
		t.Fatalf("cmk step with Key Vault down: %+v", s)
	}
	if s := step(rep, rotation.StepGarbage); s.Examined == 0 {
		t.Fatalf("the garbage step did not run: %+v", s)
	}
	last, err := j.LastReport(ctx)
	if err != nil || last.Error == "" || strings.Contains(last.Error, "http") {
		t.Fatalf("saved report: %+v, %v; want an error class without detail", last, err)
	}
	if rep, err = j.Run(ctx, rotation.Request{}); err != nil || !rep.Complete {
		t.Fatalf("Run once Key Vault is back: %v, %s", err, reportJSON(rep))
	}
	e.checkState(want{cmk: kid, noOrphans: true})
}

// probeCMK counts the CMK calls in flight at once.
type probeCMK struct {
	keyring.Wrapper
	mu       sync.Mutex
	now, max int
}

func (p *probeCMK) enter() {
	p.mu.Lock()
	p.now++
	p.max = max(p.max, p.now)
	p.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
}

func (p *probeCMK) leave() {
	p.mu.Lock()
	p.now--
	p.mu.Unlock()
}

func (p *probeCMK) Wrap(ctx context.Context, key, aad []byte) (keyring.Wrapped, error) {
	p.enter()
	defer p.leave()
	return p.Wrapper.Wrap(ctx, key, aad)
}

func (p *probeCMK) Unwrap(ctx context.Context, w keyring.Wrapped, aad []byte) ([]byte, error) {
	p.enter()
	defer p.leave()
	return p.Wrapper.Unwrap(ctx, w, aad)
}

func (p *probeCMK) CurrentKeyID(ctx context.Context) (string, error) {
	return p.Wrapper.(keyring.CurrentKey).CurrentKeyID(ctx)
}

// TestKeyVaultConcurrencyIsBounded rotates the CMK and every domain key of
// 16 domains on a cold instance: never more than KeyVaultConcurrency CMK
// calls are in flight at once.
func TestKeyVaultConcurrencyIsBounded(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOptions{})
	e.populate(40)
	e.ensureAllDomains()
	e.rotateCMK()
	e.clock.Advance(91 * day)
	probe := &probeCMK{Wrapper: e.cmk}
	keys := keyring.New(probe, e.meta, keyring.Options{Now: e.clock.Now, Cache: keyring.NewCache(keyring.CacheOptions{})})
	v := vault.New(keys, e.blobs, e.meta, vault.Options{Now: e.clock.Now})
	const bound = 3
	j := rotation.New(keys, v, e.meta, rotation.Options{Now: e.clock.Now, KeyVaultConcurrency: bound, Settle: time.Millisecond})
	rep, err := j.Run(ctx, rotation.Request{})
	if err != nil || !rep.Complete {
		t.Fatalf("Run: %v, %s", err, reportJSON(rep))
	}
	if probe.max > bound || probe.max < 2 {
		t.Fatalf("CMK calls in flight at once: at most %d, want between 2 and %d", probe.max, bound)
	}
	if s := step(rep, rotation.StepDomain); s.Added != 16 || s.KeyVaultCalls > 2*16 {
		t.Fatalf("domain step: %+v", s)
	}
}
