package main

import (
	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/identity"
)

// authn is the wired authenticator of the configured auth mode.
type authn struct {
	identity.Authenticator
	dev   *identity.DevKey // dev mode only: the local signing key
	close func() error     // stops what the authenticator started
}

// authenticator builds the Authenticator that cfg.AuthMode selects. Entra
// mode contacts nothing here: the first token fetches its tenant's keys
// (through d.authorityClient when a test injects one, else over the system
// CA store). Dev mode loads or creates the dev signing key; the other modes
// leave no key on disk.
func authenticator(cfg config.Config, d deps) (authn, error) {
	nop := func() error { return nil }
	switch cfg.AuthMode {
	case config.AuthEntra:
		e, err := identity.NewEntra(identity.EntraOptions{
			Authority:  cfg.Entra.Authority,
			Tenants:    cfg.Entra.Tenants,
			Audiences:  cfg.Entra.Audiences,
			RoleMap:    cfg.Entra.RoleMap,
			HTTPClient: d.authorityClient,
			Now:        d.authClock,
		})
		if err != nil {
			return authn{}, err
		}
		return authn{Authenticator: e, close: e.Close}, nil
	case config.AuthEasyAuth:
		a, err := identity.NewEasyAuth(identity.EasyAuthOptions{
			PlatformEnabled: cfg.EasyAuthEnabled,
			Tenants:         cfg.Entra.Tenants,
			RoleMap:         cfg.Entra.RoleMap,
		})
		if err != nil {
			return authn{}, err
		}
		return authn{Authenticator: a, close: nop}, nil
	default: // config.AuthDev; config.Load refuses anything else
		dev, err := identity.LoadOrCreateDevKey(cfg.DataDir)
		if err != nil {
			return authn{}, err
		}
		return authn{Authenticator: dev.Verifier(), dev: dev, close: nop}, nil
	}
}
