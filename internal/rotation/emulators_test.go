package rotation_test

// The Azure backend of the tests: Blob Storage (Azurite) and Cosmos DB (the
// emulator) as the stores, each test on a blob container and a Cosmos
// database of its own, and Key Vault (the fake, through the real azkeys
// client) as the CMK. The rotation claims run on it as the "azure" subtests
// of forEachBackend (env_test.go). The emulators are started once per test
// process (emulators.Main stops them); without them (`make tools`) those
// subtests skip, or fail under make test.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/credvault/credvault/internal/emulators"
	"github.com/credvault/credvault/internal/emulators/azurestores"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/rotation"
	"github.com/credvault/credvault/internal/store"
)

func TestMain(m *testing.M) { emulators.Main(m) }

// azureWorkers is how many goroutines seed and read an environment on the
// emulators: each call is a round trip over loopback.
const azureWorkers = 32

// requireEmulators starts the emulators, or skips (fails under make test)
// when they are not installed, before any case needs them.
func requireEmulators(t testing.TB) {
	t.Helper()
	emulators.Blob(t)
	emulators.Cosmos(t)
}

// newAzureEnv is newEnv on the emulators with Key Vault (the fake) as the CMK.
func newAzureEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	requireEmulators(t)
	o.azure, o.keyVault = true, true
	return newEnv(t, o)
}

// azureStores returns the Blob Storage and Cosmos DB adapters on the
// emulators, on a blob container and a Cosmos database of their own
// (removed when the test ends), and what they keep at rest: every blob, read
// through the port, and every document of the Cosmos container, read whole.
func azureStores(t testing.TB) (store.Metadata, store.Blobs, func() map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	s := azurestores.New(t, "rotation-")
	blobs := s.Blobs

	atRest := func() map[string][]byte {
		t.Helper()
		var names []string
		cont := ""
		for {
			p, err := blobs.List(ctx, "", cont, 1000)
			if err != nil {
				t.Fatalf("list blobs: %v", err)
			}
			for _, b := range p.Blobs {
				names = append(names, b.Name)
			}
			if cont = p.Continuation; cont == "" {
				break
			}
		}
		var mu sync.Mutex
		out := s.Documents(t)
		parallel(t, len(names), azureWorkers, func(i int) error {
			data, err := blobs.Read(ctx, names[i])
			if errors.Is(err, store.ErrNotFound) {
				return nil // deleted since the listing
			}
			if err != nil {
				return fmt.Errorf("read blob %s: %w", names[i], err)
			}
			mu.Lock()
			out["blob:"+names[i]] = data
			mu.Unlock()
			return nil
		})
		return out
	}
	return s.Meta, blobs, atRest
}

// TestAzureAtRestSeesEverything: the at-rest scan of the Azure stores, on
// which checkState's "no secret value at rest" relies there, sees every blob
// and every kind of document, the job's report included.
func TestAzureAtRestSeesEverything(t *testing.T) {
	e := newAzureEnv(t, envOptions{domains: 2})
	e.populate(3)
	if _, err := e.job(rotation.Options{}, nil, nil).Run(context.Background(), rotation.Request{}); err != nil {
		t.Fatal(err)
	}
	rest := e.atRest()
	want := map[string]int{ // where (or its prefix, ending in '/') → how many
		"document:" + store.Domains + "/deployment":           1,
		"document:" + store.Domains + "/domain-":              len(e.domainsUsed()),
		"document:" + store.Domains + "/" + rotation.ReportID: 1,
	}
	blobs := e.blobNames()
	for _, b := range blobs {
		want["blob:"+b] = 1
	}
	for _, o := range e.keyrings() {
		want["document:"+o.Hash+"/"+keyring.KeyringID] = 1
	}
	for oh, docs := range e.secretDocs() {
		want["document:"+oh+"/"] += len(docs) + 1 // its secret documents and its keyring
	}
	for w, n := range want {
		got := 0
		for where := range rest {
			if where == w || (strings.HasSuffix(w, "/") || strings.HasSuffix(w, "-")) && strings.HasPrefix(where, w) {
				got++
			}
		}
		if got != n {
			t.Errorf("the at-rest scan holds %d of %s, want %d", got, w, n)
		}
	}
	if len(blobs) != 9 {
		t.Fatalf("%d blobs, want 9", len(blobs))
	}
}
