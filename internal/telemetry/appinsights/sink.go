// Package appinsights is the Application Insights adapter of the
// telemetry port, on github.com/microsoft/ApplicationInsights-Go: the only
// package that imports that SDK.
//
// The SDK knows only instrumentation keys and one endpoint URL. This
// package reads both from a connection string, and adds Entra (AAD)
// authenticated ingestion through the SDK's http.Client: with a
// credential, batches go to {IngestionEndpoint}v2.1/track with a bearer
// token for IngestionScope; without, to {IngestionEndpoint}v2/track.
package appinsights

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	ai "github.com/microsoft/ApplicationInsights-Go/appinsights"

	"github.com/credvault/credvault/internal/telemetry"
)

// DefaultMaxBatchInterval is how long an item may wait to be sent when
// Options.MaxBatchInterval is zero.
const DefaultMaxBatchInterval = 2 * time.Second

// postTimeout bounds one post to the ingestion endpoint.
const postTimeout = 30 * time.Second

// Options configure a Sink. All are optional.
type Options struct {
	// Credential, when set, turns on Entra authenticated ingestion.
	Credential azcore.TokenCredential
	// RoleName is cloud_RoleName (the app's name: WEBSITE_SITE_NAME);
	// RoleInstance is cloud_RoleInstance (default: the host name).
	RoleName, RoleInstance string
	// MaxBatchInterval is how long an item may wait before its batch is
	// sent; default DefaultMaxBatchInterval.
	MaxBatchInterval time.Duration
	// Transport carries the posts; default http.DefaultTransport.
	Transport http.RoundTripper
	// Log receives diagnostics (failed posts, refused batches), never a
	// token or the instrumentation key; default: discarded.
	Log *slog.Logger
}

// Sink sends telemetry items to Application Insights in batches, in the
// background.
type Sink struct {
	client ai.TelemetryClient
	abort  context.CancelFunc // cancels posts in flight

	mu     sync.RWMutex // Track holds it to read, Close to write
	closed bool
}

var _ telemetry.Sink = (*Sink)(nil)

// New returns a Sink that posts to cs's ingestion endpoint. Close it to
// flush what is buffered.
func New(cs ConnectionString, opt Options) (*Sink, error) {
	cs, err := cs.validate()
	if err != nil {
		return nil, err
	}
	endpoint, err := url.Parse(cs.IngestionEndpoint)
	if err != nil {
		return nil, errEndpointNotURL
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Transport == nil {
		opt.Transport = http.DefaultTransport
	}
	if opt.MaxBatchInterval <= 0 {
		opt.MaxBatchInterval = DefaultMaxBatchInterval
	}
	life, abort := context.WithCancel(context.Background())
	tr := &transport{base: opt.Transport, life: life, host: endpoint.Host, log: opt.Log}
	path := "v2/track"
	if opt.Credential != nil {
		tr.tokens = newTokenSource(opt.Credential)
		path = "v2.1/track"
	}

	cfg := ai.NewTelemetryConfiguration(cs.InstrumentationKey)
	cfg.EndpointUrl = cs.IngestionEndpoint + path
	cfg.MaxBatchInterval = opt.MaxBatchInterval
	cfg.Client = &http.Client{Transport: tr, Timeout: postTimeout}
	client := ai.NewTelemetryClientFromConfig(cfg)
	if opt.RoleName != "" {
		client.Context().Tags.Cloud().SetRole(opt.RoleName)
	}
	if opt.RoleInstance != "" {
		client.Context().Tags.Cloud().SetRoleInstance(opt.RoleInstance)
	}
	return &Sink{client: client, abort: abort}, nil
}

// Track queues it for the next batch. It never waits on the network; after
// Close it drops the item.
func (s *Sink) Track(it telemetry.Item) {
	t := convert(it)
	if t == nil {
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.closed {
		s.client.Track(t)
	}
}

// Close sends what is buffered and stops the sink. If ctx ends first it
// aborts the posts in flight and returns an error wrapping ctx.Err():
// telemetry was lost. A failed post is not retried. Close is idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		defer close(done)
		if flushed := s.client.Channel().Close(); flushed != nil {
			<-flushed
		}
	}()
	defer s.abort()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("appinsights: flush abandoned, telemetry lost: %w", ctx.Err())
	}
}
