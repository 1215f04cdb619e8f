package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/rotation"
	"github.com/credvault/credvault/internal/telemetry"
	"github.com/credvault/credvault/internal/telemetry/appinsights"
)

// flushBound bounds the telemetry flush at shutdown (SIGTERM).
const flushBound = 5 * time.Second

// openTelemetry returns Application Insights when its connection string is
// set, else telemetry.Discard, and the function that flushes it. A malformed
// setting is reported with one line (never its content) and telemetry stays
// off: the audit trail, not telemetry, is the record.
func openTelemetry(cfg config.Config, log *slog.Logger, d deps) (telemetry.Sink, func() error) {
	t := cfg.Telemetry
	if t.ConnectionString == "" {
		return telemetry.Discard, func() error { return nil }
	}
	cs, err := appinsights.ParseConnectionString(t.ConnectionString)
	if err != nil {
		log.Error("APPLICATIONINSIGHTS_CONNECTION_STRING is malformed: Application Insights is off", "error", err.Error())
		return telemetry.Discard, func() error { return nil }
	}
	auth, err := appinsights.ParseAuthenticationString(t.AuthenticationString)
	if err != nil {
		log.Error("APPLICATIONINSIGHTS_AUTHENTICATION_STRING is malformed: Application Insights is off", "error", err.Error())
		return telemetry.Discard, func() error { return nil }
	}
	opt := appinsights.Options{RoleName: t.RoleName, RoleInstance: t.RoleInstance, Log: log, Transport: d.telemetryTransport}
	if auth.AAD {
		if opt.Credential = d.telemetryCred; opt.Credential == nil {
			if opt.Credential, err = monitorCredential(cfg, auth.ClientID); err != nil {
				log.Error("no credential for Application Insights' Entra authentication: Application Insights is off", "error", err.Error())
				return telemetry.Discard, func() error { return nil }
			}
		}
	}
	sink, err := appinsights.New(cs, opt)
	if err != nil {
		log.Error("Application Insights is off", "error", err.Error())
		return telemetry.Discard, func() error { return nil }
	}
	log.Info("telemetry to Application Insights", "entra_auth", auth.AAD)
	return sink, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), flushBound)
		defer cancel()
		return sink.Close(ctx)
	}
}

// monitorCredential is the identity that posts telemetry: the managed
// identity the authentication string names (or the app's), else the
// process's credential.
func monitorCredential(cfg config.Config, clientID string) (azcore.TokenCredential, error) {
	if cfg.InAzure {
		opt := &azidentity.ManagedIdentityCredentialOptions{}
		if clientID == "" {
			clientID = cfg.ManagedIdentityClientID
		}
		if clientID != "" {
			opt.ID = azidentity.ClientID(clientID)
		}
		return azidentity.NewManagedIdentityCredential(opt)
	}
	return credential(cfg)
}

// meters are the counters behind the metrics sent every interval.
type meters struct {
	keyVault *telemetry.DependencyPolicy // nil when the CMK is local
	cache    *keyring.Cache
	rotation *rotation.Job
	trail    *audit.Trail
}

// reportMetrics sends, every interval until ctx ends: Key Vault calls by
// operation, the key cache's hit ratio, the rotation backlog and audit
// failures, each as the change since the last report (backlog: its level).
func reportMetrics(ctx context.Context, sink telemetry.Sink, every time.Duration, m meters) {
	t := time.NewTicker(every)
	defer t.Stop()
	lastKV := map[string]int64{}
	var lastCache keyring.CacheStats
	var lastFailures int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if m.keyVault != nil {
			for op, n := range m.keyVault.Counts() {
				if d := n - lastKV[op]; d > 0 {
					sink.Track(&telemetry.Metric{Name: "credvault.keyvault.calls", Value: float64(d), Properties: map[string]string{"operation": op}})
				}
				lastKV[op] = n
			}
		}
		st := m.cache.Stats()
		if looked := (st.Hits - lastCache.Hits) + (st.Misses - lastCache.Misses); looked > 0 {
			sink.Track(&telemetry.Metric{Name: "credvault.key_cache.hit_ratio", Value: float64(st.Hits-lastCache.Hits) / float64(looked)})
		}
		lastCache = st
		if f := m.trail.Failures(); f != lastFailures {
			sink.Track(&telemetry.Metric{Name: "credvault.audit.failures", Value: float64(f - lastFailures)})
			lastFailures = f
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if rep, err := m.rotation.LastReport(rctx); err == nil {
			backlog := 0
			for _, s := range rep.Steps {
				backlog += s.Backlog
			}
			sink.Track(&telemetry.Metric{Name: "credvault.rotation.backlog", Value: float64(backlog)})
		}
		cancel()
	}
}
