package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/data/azcosmos"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/audit/auditblob"
	"github.com/credvault/credvault/internal/audit/auditfile"
	"github.com/credvault/credvault/internal/cmk"
	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/httpapi"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/rotation"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/azureblob"
	"github.com/credvault/credvault/internal/store/cosmos"
	"github.com/credvault/credvault/internal/store/embedded"
	"github.com/credvault/credvault/internal/telemetry"
	"github.com/credvault/credvault/internal/vault"
)

// app is the wired service: the only place that picks concrete adapters.
type app struct {
	handler    http.Handler
	api        httpapi.Options // what handler was built from
	vault      *vault.Vault
	rotation   *rotation.Job
	keys       *keyring.Hierarchy
	cmk        keyring.Wrapper
	localCMK   *cmk.Local // nil when the CMK is in Key Vault
	blobs      store.Blobs
	meta       store.Metadata
	dev        *identity.DevKey // dev mode only
	trail      *audit.Trail
	auditStore audit.Store
	tel        telemetry.Sink
	meters     meters
	close      func() error
}

// deps are what tests inject in place of the process's own: the Azure
// credential and the Key Vault client options (a fake's TLS trust), the
// key cache (off, for the naive baseline), and the Entra authority's HTTP
// client (a fake authority's TLS trust) and clock.
type deps struct {
	cred            azcore.TokenCredential
	keyVaultClient  *azkeys.ClientOptions
	cache           *keyring.CacheOptions
	authorityClient *http.Client
	authClock       func() time.Time
	// Telemetry: a static credential and a transport for a fake ingestion
	// endpoint; auditStore replaces the audit trail's store (faults).
	telemetryCred      azcore.TokenCredential
	telemetryTransport http.RoundTripper
	auditStore         audit.Store
}

func openApp(cfg config.Config, log *slog.Logger) (*app, error) {
	return openAppWith(cfg, log, deps{})
}

// openAppWith wires the adapters the configuration selects. Apart from the
// opt-in container creation it makes no backend call: the first request
// does, so the process listens well within the host's start-up limit.
func openAppWith(cfg config.Config, log *slog.Logger, d deps) (a *app, err error) {
	a = &app{}
	var closers []func() error
	a.close = func() error { // last opened, first closed
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	var flush func() error
	a.tel, flush = openTelemetry(cfg, log, d)
	closers = append(closers, flush)
	kvPolicy := telemetry.NewDependencyPolicy(a.tel, telemetry.KindKeyVault)
	blobPolicy := telemetry.NewDependencyPolicy(a.tel, telemetry.KindBlob)
	cosmosPolicy := telemetry.NewDependencyPolicy(a.tel, telemetry.KindCosmos)

	cred := func() (azcore.TokenCredential, error) {
		if d.cred == nil {
			d.cred, err = credential(cfg)
		}
		return d.cred, err
	}

	switch kv := cfg.KeyVault; {
	case kv.URL != "":
		c, err := cred()
		if err != nil {
			return nil, err
		}
		co := &azkeys.ClientOptions{}
		if d.keyVaultClient != nil {
			*co = *d.keyVaultClient
		}
		co.PerRetryPolicies = append(slices.Clone(co.PerRetryPolicies), kvPolicy)
		if a.cmk, err = cmk.NewKeyVault(kv.URL, kv.KeyName, c, cmk.KeyVaultOptions{Client: co}); err != nil {
			return nil, err
		}
		a.meters.keyVault = kvPolicy
		log.Info("customer-managed key in Key Vault", "key_name", kv.KeyName)
	default:
		log.Warn("using the LOCAL key file as the customer-managed key: for development only, never in production",
			"file", filepath.Join(cfg.DataDir, cmk.LocalFile))
		if a.localCMK, err = cmk.OpenLocal(cfg.DataDir, cmk.LocalOptions{}); err != nil {
			return nil, err
		}
		a.cmk = a.localCMK
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	switch b := cfg.Blob; {
	case b.ConnectionString != "" || b.AccountURL != "":
		var bs *azureblob.Blobs
		bo := azureblob.Options{Client: &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{PerRetryPolicies: []policy.Policy{blobPolicy}}}}
		if b.ConnectionString != "" {
			bs, err = azureblob.NewFromConnectionString(b.ConnectionString, b.Container, bo)
		} else if c, cerr := cred(); cerr != nil {
			return nil, cerr
		} else {
			bs, err = azureblob.New(b.AccountURL, b.Container, c, bo)
		}
		if err != nil {
			return nil, err
		}
		if cfg.CreateContainers {
			if err := bs.EnsureContainer(ctx); err != nil {
				return nil, fmt.Errorf("blob container: %w", err)
			}
		}
		a.blobs = bs
	default:
		if a.blobs, err = embedded.OpenBlobs(filepath.Join(cfg.DataDir, "blobs")); err != nil {
			return nil, err
		}
	}

	switch cs := cfg.Cosmos; {
	case cs.Endpoint != "":
		var m *cosmos.Metadata
		co := cosmos.Options{Client: &azcosmos.ClientOptions{ClientOptions: azcore.ClientOptions{PerRetryPolicies: []policy.Policy{cosmosPolicy}}}}
		if cs.Key != "" {
			m, err = cosmos.NewWithKey(cs.Endpoint, cs.Key, cs.Database, cs.Container, co)
		} else if c, cerr := cred(); cerr != nil {
			return nil, cerr
		} else {
			m, err = cosmos.New(cs.Endpoint, c, cs.Database, cs.Container, co)
		}
		if err != nil {
			return nil, err
		}
		if cfg.CreateContainers {
			if err := m.EnsureContainer(ctx); err != nil {
				return nil, fmt.Errorf("cosmos container: %w", err)
			}
		}
		a.meta = m
	default:
		m, err := embedded.OpenMetadata(filepath.Join(cfg.DataDir, "metadata.db"))
		if err != nil {
			return nil, err
		}
		closers = append(closers, m.Close)
		a.meta = m
	}

	auth, err := authenticator(cfg, d)
	if err != nil {
		return nil, err
	}
	closers = append(closers, auth.close)
	a.dev = auth.dev
	cacheOpt := keyring.CacheOptions{TTL: cfg.KeyTTL, Grace: cfg.KeyGrace}
	if d.cache != nil {
		cacheOpt = *d.cache
	}
	cmkAudit := &auditedCMK{cmk: a.cmk}
	a.keys = keyring.New(cmkAudit, a.meta, keyring.Options{Domains: cfg.KeyDomains, Cache: keyring.NewCache(cacheOpt)})
	store := d.auditStore
	if store == nil {
		if store, err = openAuditStore(ctx, cfg, cred, blobPolicy); err != nil {
			return nil, err
		}
	}
	if c, ok := store.(interface{ Close() error }); ok {
		closers = append(closers, c.Close)
	}
	a.auditStore = store
	a.trail = audit.New(store, audit.Options{Mode: cfg.Audit.Mode, Keys: a.keys, Telemetry: a.tel, Log: log})
	closers = append(closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), flushBound)
		defer cancel()
		return a.trail.Close(ctx)
	})
	cmkAudit.trail = a.trail
	a.vault = vault.New(a.keys, a.blobs, a.meta, vault.Options{MaxVersions: cfg.MaxVersions})
	a.rotation = rotation.New(a.keys, a.vault, a.meta, rotation.Options{
		DomainMaxAge: cfg.Rotation.DomainMaxAge,
		KEKMaxAge:    cfg.Rotation.KEKMaxAge,
		GarbageGrace: cfg.Rotation.GarbageGrace,
		Budget:       cfg.Rotation.Budget,
		Logger:       log,
		Audit:        a.trail,
	})
	a.meters.cache, a.meters.rotation, a.meters.trail = a.keys.Cache(), a.rotation, a.trail
	a.api = httpapi.Options{Vault: a.vault, Auth: auth, Log: log, Rotator: a.rotation,
		Audit: a.trail, Hasher: a.trail, Telemetry: a.tel, CORSOrigins: cfg.CORSOrigins}
	a.handler = httpapi.New(a.api)
	return a, nil
}

// unaudited is the API without its audit trail: the baseline of the audit
// benchmarks, never served.
func (a *app) unaudited() http.Handler {
	opt := a.api
	opt.Audit = nil
	return httpapi.New(opt)
}

// openAuditStore opens the audit trail's store: append blobs in the audit
// container of the blob account when the ciphertext is in Blob Storage,
// else files in the data dir.
func openAuditStore(ctx context.Context, cfg config.Config, cred func() (azcore.TokenCredential, error), dep policy.Policy) (audit.Store, error) {
	b := cfg.Blob
	if b.ConnectionString == "" && b.AccountURL == "" {
		return auditfile.New(filepath.Join(cfg.DataDir, "audit"))
	}
	opt := auditblob.Options{}
	if dep != nil {
		opt.Client = &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{PerRetryPolicies: []policy.Policy{dep}}}
	}
	var s *auditblob.Store
	var err error
	if b.ConnectionString != "" {
		s, err = auditblob.NewFromConnectionString(b.ConnectionString, cfg.Audit.Container, opt)
	} else if c, cerr := cred(); cerr != nil {
		return nil, cerr
	} else {
		s, err = auditblob.New(b.AccountURL, cfg.Audit.Container, c, opt)
	}
	if err != nil {
		return nil, err
	}
	if cfg.CreateContainers {
		if err := s.EnsureContainer(ctx); err != nil {
			return nil, fmt.Errorf("audit container: %w", err)
		}
	}
	return s, nil
}

// credential is the Azure identity of the process: the managed identity in
// Azure (user-assigned when AZURE_CLIENT_ID is set), the developer's own
// sign-in (Azure CLI, environment, …) elsewhere. Never a secret in settings.
func credential(cfg config.Config) (azcore.TokenCredential, error) {
	if cfg.InAzure {
		opt := &azidentity.ManagedIdentityCredentialOptions{}
		if cfg.ManagedIdentityClientID != "" {
			opt.ID = azidentity.ClientID(cfg.ManagedIdentityClientID)
		}
		return azidentity.NewManagedIdentityCredential(opt)
	}
	return azidentity.NewDefaultAzureCredential(nil)
}
