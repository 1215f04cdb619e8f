package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

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
	"github.com/credvault/credvault/internal/vault"
)

// app is the wired service: the only place that picks concrete adapters.
type app struct {
	handler  http.Handler
	vault    *vault.Vault
	rotation *rotation.Job
	keys     *keyring.Hierarchy
	cmk      keyring.Wrapper
	localCMK *cmk.Local // nil when the CMK is in Key Vault
	blobs    store.Blobs
	meta     store.Metadata
	dev      *identity.DevKey // dev mode only
	close    func() error
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
	a.close = func() error {
		var errs []error
		for _, c := range closers {
			errs = append(errs, c())
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
		if a.cmk, err = cmk.NewKeyVault(kv.URL, kv.KeyName, c, cmk.KeyVaultOptions{Client: d.keyVaultClient}); err != nil {
			return nil, err
		}
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
		if b.ConnectionString != "" {
			bs, err = azureblob.NewFromConnectionString(b.ConnectionString, b.Container, azureblob.Options{})
		} else if c, cerr := cred(); cerr != nil {
			return nil, cerr
		} else {
			bs, err = azureblob.New(b.AccountURL, b.Container, c, azureblob.Options{})
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
		if cs.Key != "" {
			m, err = cosmos.NewWithKey(cs.Endpoint, cs.Key, cs.Database, cs.Container, cosmos.Options{})
		} else if c, cerr := cred(); cerr != nil {
			return nil, cerr
		} else {
			m, err = cosmos.New(cs.Endpoint, c, cs.Database, cs.Container, cosmos.Options{})
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
	a.keys = keyring.New(a.cmk, a.meta, keyring.Options{Domains: cfg.KeyDomains, Cache: keyring.NewCache(cacheOpt)})
	a.vault = vault.New(a.keys, a.blobs, a.meta, vault.Options{MaxVersions: cfg.MaxVersions})
	a.rotation = rotation.New(a.keys, a.vault, a.meta, rotation.Options{
		DomainMaxAge: cfg.Rotation.DomainMaxAge,
		KEKMaxAge:    cfg.Rotation.KEKMaxAge,
		GarbageGrace: cfg.Rotation.GarbageGrace,
		Budget:       cfg.Rotation.Budget,
		Logger:       log,
	})
	a.handler = httpapi.New(httpapi.Options{Vault: a.vault, Auth: auth, Log: log, Rotator: a.rotation})
	return a, nil
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
