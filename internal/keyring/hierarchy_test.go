package keyring_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/embedded"
)

// world is one deployment: a CMK, a metadata store and a clock, over which a
// test starts as many service instances (Hierarchy values) as it needs.
type world struct {
	cmk   *cmkDouble
	meta  store.Metadata
	clock *fakeClock
}

func newWorld(t testing.TB) *world {
	t.Helper()
	meta, err := embedded.OpenMetadata(filepath.Join(t.TempDir(), "metadata.db"))
	if err != nil {
		t.Fatalf("open embedded metadata store: %v", err)
	}
	t.Cleanup(func() { meta.Close() })
	return &world{cmk: newCMKDouble(t), meta: meta, clock: newFakeClock()}
}

// instance starts a service instance with a cold cache of its own.
func (w *world) instance(domains int) *keyring.Hierarchy {
	return keyring.New(w.cmk, w.meta, keyring.Options{Domains: domains, Cache: newTestCache(w.clock, 0), Now: w.clock.Now})
}

func mustOwnerHash(t testing.TB, h *keyring.Hierarchy, owner string) string {
	t.Helper()
	hash, err := h.OwnerHash(context.Background(), owner)
	if err != nil {
		t.Fatalf("OwnerHash(%q): %v", owner, err)
	}
	return hash
}

func mustCreateOwner(t testing.TB, h *keyring.Hierarchy, hash string) *keyring.Owner {
	t.Helper()
	o, err := h.CreateOwner(context.Background(), hash)
	if err != nil {
		t.Fatalf("CreateOwner(%s): %v", hash, err)
	}
	return o
}

// mustKEK reads the owner's keyring (the one point read every request makes)
// and returns its active KEK.
func mustKEK(t testing.TB, h *keyring.Hierarchy, hash string) []byte {
	t.Helper()
	kek, err := kekOf(h, hash)
	if err != nil {
		t.Fatalf("KEK of %s: %v", hash, err)
	}
	if len(kek) != keyring.KeySize || isZero(kek) {
		t.Fatalf("KEK of %s = %x, want %d random bytes", hash, kek, keyring.KeySize)
	}
	return kek
}

func kekOf(h *keyring.Hierarchy, hash string) ([]byte, error) {
	ctx := context.Background()
	o, err := h.Owner(ctx, hash)
	if err != nil {
		return nil, err
	}
	return o.KEK(ctx, o.Active())
}

func TestHierarchyRecordsTheDeploymentOnce(t *testing.T) {
	tests := []struct {
		name          string
		first, second int // Options.Domains of the first and of a later instance
		want          int
	}{
		{"default", 0, 4, 16},
		{"configured", 4, 16, 4},
		{"later default", 8, 0, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t)
			for i, domains := range []int{tt.first, tt.second} {
				n, err := w.instance(domains).Domains(ctx)
				if err != nil {
					t.Fatalf("instance %d: Domains: %v", i+1, err)
				}
				if n != tt.want {
					t.Fatalf("instance %d (Options.Domains %d): Domains = %d, want %d", i+1, domains, n, tt.want)
				}
			}
			page, err := w.meta.List(ctx, store.Query{Partition: store.Domains, Kind: store.KindDeployment})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Items) != 1 {
				t.Fatalf("deployment documents = %d, want 1", len(page.Items))
			}
		})
	}
}

func TestHierarchyConcurrentFirstStart(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	const instances = 8
	hashes := make([]string, instances)
	errs := make([]error, instances)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range instances {
		h := w.instance(16)
		wg.Go(func() {
			<-start
			hashes[i], errs[i] = h.OwnerHash(ctx, "tid-1/oid-1")
		})
	}
	close(start)
	wg.Wait()
	for i := range instances {
		if errs[i] != nil {
			t.Fatalf("instance %d: OwnerHash: %v", i, errs[i])
		}
		if hashes[i] != hashes[0] {
			t.Fatalf("instances started together disagree: OwnerHash = %s and %s", hashes[0], hashes[i])
		}
	}
	for _, kind := range []string{store.KindDeployment, store.KindDomain} {
		page, err := w.meta.List(ctx, store.Query{Partition: store.Domains, Kind: kind})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != 1 {
			t.Fatalf("after %d instances started together: %d %s documents, want 1", instances, len(page.Items), kind)
		}
	}
}

func TestOwnerHash(t *testing.T) {
	owners := []string{
		"72f988bf-86f1-41af-91ab-2d7cd011db47/00000000-0000-0000-0000-000000000001",
		"72f988bf-86f1-41af-91ab-2d7cd011db47/00000000-0000-0000-0000-000000000002",
		"00000000-0000-0000-0000-000000000001/72f988bf-86f1-41af-91ab-2d7cd011db47",
		"a",
		"A",
		"",
		"ünïcødé/owner",
	}
	w := newWorld(t)
	first, second := w.instance(0), w.instance(0)
	elsewhere := newWorld(t).instance(0) // another deployment, another index key

	seen := map[string]string{}
	for _, owner := range owners {
		hash := mustOwnerHash(t, first, owner)
		if again := mustOwnerHash(t, second, owner); again != hash {
			t.Errorf("OwnerHash(%q) = %s on one instance, %s on another over the same store", owner, hash, again)
		}
		if again := mustOwnerHash(t, first, owner); again != hash {
			t.Errorf("OwnerHash(%q) = %s, then %s", owner, hash, again)
		}
		if b, err := hex.DecodeString(hash); err != nil || len(b) != 16 || hash != strings.ToLower(hash) {
			t.Errorf("OwnerHash(%q) = %q, want 32 lower-case hex digits", owner, hash)
		}
		if len(owner) >= 8 && strings.Contains(hash, owner) { // a short owner can be a hex substring by chance
			t.Errorf("OwnerHash(%q) = %q contains the owner", owner, hash)
		}
		if other, dup := seen[hash]; dup {
			t.Errorf("OwnerHash(%q) = OwnerHash(%q) = %s", owner, other, hash)
		}
		seen[hash] = owner
		if other := mustOwnerHash(t, elsewhere, owner); other == hash {
			t.Errorf("OwnerHash(%q) is the same in two deployments: it is not keyed", owner)
		}
	}
}

func TestCreateOwnerCreatesOnce(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	instances := []*keyring.Hierarchy{w.instance(0), w.instance(0)}
	hash := mustOwnerHash(t, instances[0], "tid-1/oid-1")

	const racers = 8
	owners := make([]*keyring.Owner, racers)
	errs := make([]error, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			<-start
			owners[i], errs[i] = instances[i%len(instances)].CreateOwner(ctx, hash)
		})
	}
	close(start)
	wg.Wait()

	var kek []byte
	for i, o := range owners {
		if errs[i] != nil {
			t.Fatalf("racer %d: CreateOwner: %v", i, errs[i])
		}
		if o.ETag != owners[0].ETag {
			t.Fatalf("racers 0 and %d got keyrings with ETags %s and %s, want one keyring", i, owners[0].ETag, o.ETag)
		}
		if len(o.Ring.Versions) != 1 || !bytes.Equal(o.Ring.Versions[0].Wrapped, owners[0].Ring.Versions[0].Wrapped) {
			t.Fatalf("racer %d got a different wrapped KEK from racer 0", i)
		}
		k, err := o.KEK(ctx, o.Active())
		if err != nil {
			t.Fatalf("racer %d: KEK: %v", i, err)
		}
		if kek == nil {
			kek = k
		} else if !bytes.Equal(k, kek) {
			t.Fatalf("racer %d: KEK %x, racer 0: %x; want one KEK", i, k, kek)
		}
	}
	page, err := w.meta.List(ctx, store.Query{Partition: hash, Kind: store.KindKeyring})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 1 {
		t.Fatalf("keyring documents of the owner = %d, want 1", len(page.Items))
	}
	if !bytes.Equal(mustKEK(t, w.instance(0), hash), kek) {
		t.Fatal("a new instance reads another KEK than the racers got")
	}

	again := mustCreateOwner(t, instances[0], hash)
	if again.ETag != owners[0].ETag {
		t.Fatal("CreateOwner of an owner with a keyring made a new one")
	}
}

func TestKEKRoundTrip(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	writer := w.instance(0)
	hash := mustOwnerHash(t, writer, "tid-1/oid-1")
	created := mustCreateOwner(t, writer, hash)
	if created.Active() != 1 || created.Hash != hash {
		t.Fatalf("new keyring: Active = %d, Hash = %s; want 1, %s", created.Active(), created.Hash, hash)
	}
	n, _ := writer.Domains(ctx)
	if created.Domain < 0 || created.Domain >= n {
		t.Fatalf("new keyring in domain %d of %d", created.Domain, n)
	}

	kek := mustKEK(t, writer, hash)
	reader := w.instance(0)
	o, err := reader.Owner(ctx, hash)
	if err != nil {
		t.Fatal(err)
	}
	if o.ETag != created.ETag || o.Domain != created.Domain {
		t.Fatalf("keyring read back: ETag %s, domain %d; want %s, %d", o.ETag, o.Domain, created.ETag, created.Domain)
	}
	got, err := o.KEK(ctx, o.Active())
	if err != nil || !bytes.Equal(got, kek) {
		t.Fatalf("KEK on another instance = %x, %v; want %x", got, err, kek)
	}
	clear(got) // the caller's copy
	if again := mustKEK(t, reader, hash); !bytes.Equal(again, kek) {
		t.Fatal("clearing a KEK copy changed the cached KEK")
	}
	_, err = o.KEK(ctx, 2)
	wantErr(t, "KEK of a version the keyring does not have", err, keyring.ErrCorrupt)

	other := mustCreateOwner(t, writer, mustOwnerHash(t, writer, "tid-1/oid-2"))
	if k, _ := other.KEK(ctx, 1); bytes.Equal(k, kek) {
		t.Fatal("two owners have the same KEK")
	}
}

func TestCreateOwnerOnAWarmDomainCallsNoCMK(t *testing.T) {
	w := newWorld(t)
	h := w.instance(1) // one domain: every owner shares the warm domain key
	mustKEK(t, h, mustCreateOwner(t, h, mustOwnerHash(t, h, "tid-1/oid-1")).Hash)
	wraps, unwraps := w.cmk.wraps.Load(), w.cmk.unwraps.Load()
	for i := range 20 {
		hash := mustOwnerHash(t, h, fmt.Sprintf("tid-1/oid-%d", i+2))
		mustCreateOwner(t, h, hash)
		mustKEK(t, h, hash)
	}
	if dw, du := w.cmk.wraps.Load()-wraps, w.cmk.unwraps.Load()-unwraps; dw != 0 || du != 0 {
		t.Fatalf("20 new owners on a warm domain: CMK wraps %d, unwraps %d; want 0 and 0", dw, du)
	}
}

// readDoc reads a document and decodes its body into v.
func readDoc(t *testing.T, meta store.Metadata, partition, id string, v any) store.Item {
	t.Helper()
	it, err := meta.Get(context.Background(), partition, id)
	if err != nil {
		t.Fatalf("read %s/%s: %v", partition, id, err)
	}
	if err := json.Unmarshal(it.Body, v); err != nil {
		t.Fatalf("decode %s/%s: %v", partition, id, err)
	}
	return it
}

// writeDoc writes v back as the body of a document read by readDoc.
func writeDoc(t *testing.T, meta store.Metadata, it store.Item, v any) {
	t.Helper()
	var err error
	if it.Body, err = json.Marshal(v); err != nil {
		t.Fatal(err)
	}
	if _, err := meta.Replace(context.Background(), it, it.ETag); err != nil {
		t.Fatalf("write %s/%s: %v", it.Partition, it.ID, err)
	}
}

func domainDocID(d int) string { return fmt.Sprintf("domain-%04d", d) }

// victims are the owner hashes a tampering test works on: two owners with
// keyrings in two domains other than 0, and one without a keyring.
type victims struct{ victim, other, fresh string }

func TestTamperedKeysDoNotOpen(t *testing.T) {
	tests := []struct {
		name string
		// tamper changes stored documents; it returns the owner to read.
		tamper func(t *testing.T, w *world, o victims, domainOf map[string]int) string
		// warmOK: the tampered document is one the warm instance still holds
		// from before (domain documents are trusted for DocumentTTL), and the
		// KEK document is intact: that instance serves the genuine KEK.
		warmOK bool
	}{
		{
			name: "keyring copied to another owner's partition",
			tamper: func(t *testing.T, w *world, o victims, _ map[string]int) string {
				it, err := w.meta.Get(context.Background(), o.victim, keyring.KeyringID)
				if err != nil {
					t.Fatal(err)
				}
				it.Partition = o.fresh
				if _, err := w.meta.Create(context.Background(), it); err != nil {
					t.Fatal(err)
				}
				return o.fresh
			},
		},
		{
			name: "keyring copied over another owner's keyring",
			tamper: func(t *testing.T, w *world, o victims, _ map[string]int) string {
				ctx := context.Background()
				src, err := w.meta.Get(ctx, o.victim, keyring.KeyringID)
				if err != nil {
					t.Fatal(err)
				}
				dst, err := w.meta.Get(ctx, o.other, keyring.KeyringID)
				if err != nil {
					t.Fatal(err)
				}
				dst.Body = src.Body
				if _, err := w.meta.Replace(ctx, dst, dst.ETag); err != nil {
					t.Fatal(err)
				}
				return o.other
			},
		},
		{name: "wrapped KEK: first byte flipped", tamper: flipKEKByte(0)},
		{name: "wrapped KEK: nonce byte flipped", tamper: flipKEKByte(5)},
		{name: "wrapped KEK: ciphertext byte flipped", tamper: flipKEKByte(30)},
		{name: "wrapped KEK: last byte flipped", tamper: flipKEKByte(-1)},
		{name: "wrapped KEK: truncated", tamper: editKeyring(func(o *keyring.Owner, _ map[string]int) {
			v := &o.Ring.Versions[0]
			v.Wrapped = v.Wrapped[:len(v.Wrapped)-1]
		})},
		{name: "KEK version renumbered", tamper: editKeyring(func(o *keyring.Owner, _ map[string]int) {
			o.Ring.Versions[0].N, o.Ring.Active = 2, 2
		})},
		{name: "KEK parent names another domain", tamper: editKeyring(func(o *keyring.Owner, domainOf map[string]int) {
			o.Ring.Versions[0].Parent = fmt.Sprintf("domain/%d/1", domainOf["other"])
		})},
		{name: "keyring moved to another domain", tamper: editKeyring(func(o *keyring.Owner, domainOf map[string]int) {
			o.Domain = domainOf["other"]
			o.Ring.Versions[0].Parent = fmt.Sprintf("domain/%d/1", domainOf["other"])
		})},
		{
			name:   "domain key swapped with another domain's",
			warmOK: true,
			tamper: func(t *testing.T, w *world, o victims, domainOf map[string]int) string {
				var a, b keyring.Ring
				ita := readDoc(t, w.meta, store.Domains, domainDocID(domainOf["victim"]), &a)
				itb := readDoc(t, w.meta, store.Domains, domainDocID(domainOf["other"]), &b)
				a.Versions[0].Wrapped, b.Versions[0].Wrapped = b.Versions[0].Wrapped, a.Versions[0].Wrapped
				writeDoc(t, w.meta, ita, &a)
				writeDoc(t, w.meta, itb, &b)
				return o.victim
			},
		},
	}
	for _, tt := range tests {
		for _, instance := range []string{"warm", "cold"} {
			t.Run(tt.name+"/"+instance, func(t *testing.T) {
				w := newWorld(t)
				h := w.instance(16)
				o, domainOf := setUpVictims(t, h)
				read := h
				if instance == "cold" {
					read = w.instance(16)
				}
				target := tt.tamper(t, w, o, domainOf)
				kek, err := kekOf(read, target)
				if instance == "warm" && tt.warmOK {
					if err != nil {
						t.Fatalf("instance with the intact KEK cached: %v", err)
					}
					return
				}
				wantErr(t, "KEK lookup after tampering", err, keyring.ErrCorrupt)
				if kek != nil {
					t.Fatal("KEK lookup after tampering returned a key")
				}
			})
		}
	}
}

// setUpVictims creates two owners in two different domains other than domain
// 0 (which holds the index key), looks their KEKs up once so that the instance
// is warm, and names a third owner without a keyring.
func setUpVictims(t *testing.T, h *keyring.Hierarchy) (victims, map[string]int) {
	t.Helper()
	var o victims
	domainOf := map[string]int{}
	for i := 0; o.other == "" || o.fresh == ""; i++ {
		if i > 100 {
			t.Fatal("no two owners in distinct domains other than 0 among 100")
		}
		hash := mustOwnerHash(t, h, fmt.Sprintf("tid-1/oid-%d", i))
		if o.victim != "" && o.other != "" {
			o.fresh = hash
			break
		}
		kr := mustCreateOwner(t, h, hash)
		switch {
		case kr.Domain == 0:
		case o.victim == "":
			o.victim, domainOf["victim"] = hash, kr.Domain
		case kr.Domain != domainOf["victim"]:
			o.other, domainOf["other"] = hash, kr.Domain
		}
	}
	mustKEK(t, h, o.victim)
	mustKEK(t, h, o.other)
	return o, domainOf
}

func editKeyring(edit func(o *keyring.Owner, domainOf map[string]int)) func(*testing.T, *world, victims, map[string]int) string {
	return func(t *testing.T, w *world, o victims, domainOf map[string]int) string {
		var kr keyring.Owner
		it := readDoc(t, w.meta, o.victim, keyring.KeyringID, &kr)
		edit(&kr, domainOf)
		writeDoc(t, w.meta, it, &kr)
		return o.victim
	}
}

func flipKEKByte(i int) func(*testing.T, *world, victims, map[string]int) string {
	return editKeyring(func(o *keyring.Owner, _ map[string]int) {
		b := o.Ring.Versions[0].Wrapped
		b[(i+len(b))%len(b)] ^= 0x01
	})
}

func TestEraseShredsTheKeyring(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	h := w.instance(0)
	hash := mustOwnerHash(t, h, "tid-1/oid-1")
	_, err := h.Owner(ctx, hash)
	wantErr(t, "Owner before the first write", err, keyring.ErrNoKeyring)

	mustCreateOwner(t, h, hash)
	kek := mustKEK(t, h, hash)
	other := w.instance(0)
	mustKEK(t, other, hash)
	dropped := h.Cache().Stats().Dropped

	if err := h.Erase(ctx, hash); err != nil {
		t.Fatalf("Erase: %v", err)
	}
	for name, inst := range map[string]*keyring.Hierarchy{"erasing instance": h, "other instance": other} {
		_, err := inst.Owner(ctx, hash)
		wantErr(t, "Owner after Erase on the "+name, err, keyring.ErrNoKeyring)
	}
	if got := h.Cache().Stats().Dropped - dropped; got != 1 {
		t.Fatalf("Erase dropped %d cached KEKs, want 1", got)
	}
	if err := h.Erase(ctx, hash); err != nil {
		t.Fatalf("Erase of an erased owner: %v", err)
	}
	mustCreateOwner(t, h, hash)
	if again := mustKEK(t, h, hash); bytes.Equal(again, kek) {
		t.Fatal("the keyring created after Erase has the erased KEK")
	}
}

// TestKEKLookupsScaleWithDomainsNotOwners measures the design's main scaling
// property: a new instance serves every owner with at most one CMK unwrap per
// key domain.
func TestKEKLookupsScaleWithDomainsNotOwners(t *testing.T) {
	const owners, domains, workers = 1000, 16, 32
	w := newWorld(t)
	writer := w.instance(domains)
	ids := make([]string, owners)
	keks := make([][]byte, owners)
	parallel(t, owners, workers, func(i int) error {
		ids[i] = fmt.Sprintf("72f988bf-86f1-41af-91ab-2d7cd011db47/%08d-0000-0000-0000-000000000000", i)
		hash, err := writer.OwnerHash(context.Background(), ids[i])
		if err != nil {
			return err
		}
		if _, err := writer.CreateOwner(context.Background(), hash); err != nil {
			return err
		}
		keks[i], err = kekOf(writer, hash)
		return err
	})

	cold := w.instance(3) // a fresh cache and hierarchy; the recorded 16 domains win over its option
	if n, err := cold.Domains(context.Background()); err != nil || n != domains {
		t.Fatalf("new instance over a deployment of %d domains: Domains = %d, %v", domains, n, err)
	}
	wraps, unwraps := w.cmk.wraps.Load(), w.cmk.unwraps.Load()
	used := make([]int, owners)
	parallel(t, owners, workers, func(i int) error {
		ctx := context.Background()
		hash, err := cold.OwnerHash(ctx, ids[i])
		if err != nil {
			return err
		}
		o, err := cold.Owner(ctx, hash)
		if err != nil {
			return err
		}
		used[i] = o.Domain
		kek, err := o.KEK(ctx, o.Active())
		if err != nil {
			return err
		}
		if !bytes.Equal(kek, keks[i]) {
			return fmt.Errorf("owner %d: the new instance reads another KEK", i)
		}
		return nil
	})
	distinct := map[int]bool{0: true} // domain 0 holds the index key
	for _, d := range used {
		distinct[d] = true
	}
	dw, du := w.cmk.wraps.Load()-wraps, w.cmk.unwraps.Load()-unwraps
	t.Logf("cold instance, %d owners in %d domains: %d CMK unwraps, %d wraps; cache %+v", owners, len(distinct), du, dw, cold.Cache().Stats())
	if du > domains {
		t.Fatalf("cold start, KEK lookups of %d owners: %d CMK unwraps, want at most %d (one per domain)", owners, du, domains)
	}
	if du != int64(len(distinct)) {
		t.Fatalf("cold start: %d CMK unwraps for %d domains in use, want one each", du, len(distinct))
	}
	if dw != 0 {
		t.Fatalf("cold start, KEK lookups only: %d CMK wraps, want 0", dw)
	}
}

// parallel runs f(0..n-1) on workers goroutines and fails on the first error.
func parallel(t *testing.T, n, workers int, f func(i int) error) {
	t.Helper()
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			t.Fatal(err)
			break feed
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

func TestRevokedCMKStopsKEKsWithinOneTTL(t *testing.T) {
	tests := []struct {
		name     string
		firstUse time.Duration // when the KEK is first looked up, after the domain key was unwrapped
	}{
		{"KEK looked up at warm-up", 0},
		{"KEK first looked up late in the domain key's TTL", testTTL - testAhead - time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t)
			h := w.instance(16)
			hash := mustOwnerHash(t, h, "tid-1/oid-1")
			mustCreateOwner(t, h, hash) // unwraps the domain key at 0
			if tt.firstUse == 0 {
				mustKEK(t, h, hash)
			}

			w.cmk.set(answerRevoked) // the customer revokes the CMK
			w.clock.Set(tt.firstUse)
			mustKEK(t, h, hash) // the revocation is not known yet

			w.clock.Set(testTTL + time.Second)
			kek, err := kekOf(h, hash)
			wantErr(t, fmt.Sprintf("KEK lookup %v after the CMK was revoked", testTTL+time.Second), err, keyring.ErrRevoked)
			if kek != nil {
				t.Fatal("KEK lookup after revocation returned a key")
			}
			_, err = h.OwnerHash(ctx, "tid-1/oid-1")
			wantErr(t, "OwnerHash after the CMK was revoked", err, keyring.ErrRevoked)
			_, err = h.CreateOwner(ctx, "00112233445566778899aabbccddeeff") // a new owner
			wantErr(t, "CreateOwner after the CMK was revoked", err, keyring.ErrRevoked)

			w.cmk.set(answerUnreachable) // and then Key Vault times out: still closed
			w.clock.Set(testTTL + 2*time.Second)
			if kek, err := kekOf(h, hash); err == nil || kek != nil {
				t.Fatalf("KEK lookup after revocation, then an outage: %x, %v; want no key", kek, err)
			}
		})
	}
}

func TestCMKOutageServesKEKsThroughGraceOnly(t *testing.T) {
	w := newWorld(t)
	h := w.instance(16)
	hash := mustOwnerHash(t, h, "tid-1/oid-1")
	mustCreateOwner(t, h, hash)
	kek := mustKEK(t, h, hash)

	w.cmk.set(answerUnreachable)
	steps := []struct {
		at      time.Duration
		wantErr error
	}{
		{testTTL + time.Second, nil},
		{testTTL + testGrace/2, nil},
		{testTTL + testGrace - time.Second, nil},
		{testTTL + testGrace + time.Second, keyring.ErrUnavailable},
		{testTTL + testGrace + testTTL, keyring.ErrUnavailable},
	}
	for _, s := range steps {
		w.clock.Set(s.at)
		got, err := kekOf(h, hash)
		if s.wantErr == nil {
			if err != nil || !bytes.Equal(got, kek) {
				t.Fatalf("Key Vault unreachable, %v after the last unwrap (within grace): KEK = %x, %v; want the cached KEK", s.at, got, err)
			}
			continue
		}
		wantErr(t, fmt.Sprintf("Key Vault unreachable, %v after the last unwrap (grace is %v)", s.at, testGrace), err, s.wantErr)
		if errors.Is(err, keyring.ErrRevoked) {
			t.Fatalf("an outage reported as a revocation: %v", err)
		}
	}
}
