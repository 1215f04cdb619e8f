// Package azurestores sets up the Azure store adapters on the emulators for
// tests: Blob Storage on Azurite and Cosmos DB on the Cosmos DB emulator,
// on a blob container and a Cosmos database of their own per test. It is
// test support, like package emulators; it is a package of its own because
// the adapters' own tests import emulators, which therefore cannot import
// the adapters.
package azurestores

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/azcosmos"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/credvault/credvault/internal/emulators"
	"github.com/credvault/credvault/internal/store/azureblob"
	"github.com/credvault/credvault/internal/store/cosmos"
)

// Stores are the Blob Storage and Cosmos DB adapters on the emulators, and
// a raw client of the Cosmos container they use, to read what it keeps.
type Stores struct {
	Blobs *azureblob.Blobs
	Meta  *cosmos.Metadata
	docs  *azcosmos.ContainerClient

	connStr, endpoint, name string // where they are, for Open
}

// New returns the adapters on the emulators (starting them, or skipping the
// test when they are not installed: see emulators.Blob), on a blob container
// and a Cosmos database named prefix plus a random suffix, both created now
// and removed when the test ends.
func New(t testing.TB, prefix string) Stores {
	t.Helper()
	ctx := context.Background()
	connStr, endpoint := emulators.Blob(t), emulators.Cosmos(t)
	name := prefix + randomHex(8)

	blobs, err := azureblob.NewFromConnectionString(connStr, name, azureblob.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := blobs.EnsureContainer(ctx); err != nil {
		t.Fatalf("blob container: %v", err)
	}
	raw, err := container.NewClientFromConnectionString(connStr, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	removeAtEnd(t, func(ctx context.Context) { raw.Delete(ctx, nil) })

	meta, err := cosmos.NewWithKey(endpoint, emulators.CosmosKey, name, "metadata", cosmos.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(meta.Close)
	if err := meta.EnsureContainer(ctx); err != nil {
		t.Fatalf("cosmos container: %v", err)
	}
	cred, err := azcosmos.NewKeyCredential(emulators.CosmosKey)
	if err != nil {
		t.Fatal(err)
	}
	client, err := azcosmos.NewClientWithKey(endpoint, cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	db, err := client.NewDatabase(name)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := db.NewContainer("metadata")
	if err != nil {
		t.Fatal(err)
	}
	removeAtEnd(t, func(ctx context.Context) { db.Delete(ctx, nil) })
	return Stores{Blobs: blobs, Meta: meta, docs: docs, connStr: connStr, endpoint: endpoint, name: name}
}

// Open returns more adapters on the blob container and the Cosmos database
// of s, with the options given (a test's own retry budget or SDK pipeline
// policies, say). The Cosmos adapter is closed when the test ends.
func (s Stores) Open(t testing.TB, blobOpt azureblob.Options, metaOpt cosmos.Options) (*azureblob.Blobs, *cosmos.Metadata) {
	t.Helper()
	blobs, err := azureblob.NewFromConnectionString(s.connStr, s.name, blobOpt)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := cosmos.NewWithKey(s.endpoint, emulators.CosmosKey, s.name, "metadata", metaOpt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(meta.Close)
	return blobs, meta
}

// Documents returns every document of the Cosmos container, whatever its
// kind or partition, as Cosmos DB keeps it, by "document:" + its partition
// key + "/" + its id.
func (s Stores) Documents(t testing.TB) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	out := map[string][]byte{}
	pager := s.docs.NewQueryItemsPager("SELECT * FROM c", azcosmos.NewPartitionKey(), nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatalf("read the documents: %v", err)
		}
		for _, doc := range page.Items {
			var d struct {
				ID string `json:"id"`
				PK string `json:"pk"`
			}
			if err := json.Unmarshal(doc, &d); err != nil {
				t.Fatalf("document %.80q: %v", doc, err)
			}
			out["document:"+d.PK+"/"+d.ID] = doc
		}
	}
	return out
}

// removeAtEnd calls remove when the test ends, with 10 seconds to do it.
func removeAtEnd(t testing.TB, remove func(ctx context.Context)) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		remove(ctx)
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
