package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/credvault/credvault/internal/cmk"
	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/httpapi"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/store/embedded"
	"github.com/credvault/credvault/internal/vault"
)

// app is the wired service: the only place that picks concrete adapters.
type app struct {
	handler http.Handler
	vault   *vault.Vault
	keys    *keyring.Hierarchy
	cmk     *cmk.Local
	blobs   store.Blobs
	meta    store.Metadata
	dev     *identity.DevKey
	close   func() error
}

// openApp wires the adapters the configuration selects. It opens local
// files only: no backend is called until the first request.
func openApp(cfg config.Config, log *slog.Logger) (*app, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	log.Warn("using the LOCAL key file as the customer-managed key: for development only, never in production",
		"file", filepath.Join(cfg.DataDir, cmk.LocalFile))
	key, err := cmk.OpenLocal(cfg.DataDir, cmk.LocalOptions{})
	if err != nil {
		return nil, err
	}
	blobs, err := embedded.OpenBlobs(filepath.Join(cfg.DataDir, "blobs"))
	if err != nil {
		return nil, err
	}
	meta, err := embedded.OpenMetadata(filepath.Join(cfg.DataDir, "metadata.db"))
	if err != nil {
		return nil, err
	}
	dev, err := identity.LoadOrCreateDevKey(cfg.DataDir)
	if err != nil {
		meta.Close()
		return nil, err
	}
	keys := keyring.New(key, meta, keyring.Options{
		Domains: cfg.KeyDomains,
		Cache:   keyring.NewCache(keyring.CacheOptions{TTL: cfg.KeyTTL, Grace: cfg.KeyGrace}),
	})
	v := vault.New(keys, blobs, meta, vault.Options{MaxVersions: cfg.MaxVersions})
	return &app{
		handler: httpapi.New(httpapi.Options{Vault: v, Auth: dev.Verifier(), Log: log}),
		vault:   v,
		keys:    keys,
		cmk:     key,
		blobs:   blobs,
		meta:    meta,
		dev:     dev,
		close:   func() error { return errors.Join(meta.Close()) },
	}, nil
}
