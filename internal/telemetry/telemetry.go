// Package telemetry is credvault's one telemetry port: the items the
// service reports (requests, dependencies, exceptions, events, metrics), the
// W3C trace context they carry, and a Sink that receives them. The
// Application Insights adapter (package appinsights) is one Sink; Discard is
// the other. No package but appinsights knows the SDK, so an OpenTelemetry
// exporter can replace it by implementing Sink.
//
// Nothing sent through a Sink may hold a secret value, a token, key
// material, a raw owner or caller id, or a URL with a secret name in it:
// requests are named by their route template, dependencies by operation.
package telemetry

import (
	"context"
	"time"
)

// Sink receives telemetry items. Track must be safe for concurrent use and
// must not block on the network: implementations buffer and send in the
// background, dropping what they cannot send.
type Sink interface {
	Track(Item)
}

// Item is one of *Request, *Dependency, *Exception, *Event, *Metric.
type Item interface{ item() }

// Discard is the Sink used when Application Insights is not configured.
var Discard Sink = discard{}

type discard struct{}

func (discard) Track(Item) {}

// Span is a W3C trace context position: the trace (Application Insights'
// operation_Id), this span's id, and the id of the span that called it
// (operation_ParentId; empty at a trace's root).
type Span struct {
	TraceID  string // 32 lower-case hex digits
	SpanID   string // 16 lower-case hex digits
	ParentID string // 16 lower-case hex digits, or empty
}

type spanKey struct{}

// WithSpan returns ctx carrying s: the span that telemetry items created
// under ctx (dependencies, exceptions, events) belong to.
func WithSpan(ctx context.Context, s Span) context.Context {
	return context.WithValue(ctx, spanKey{}, s)
}

// SpanFrom returns the span ctx carries.
func SpanFrom(ctx context.Context) (Span, bool) {
	s, ok := ctx.Value(spanKey{}).(Span)
	return s, ok
}

// Request is one served HTTP call or timer invocation.
type Request struct {
	Span     Span   // SpanID is the request's id; ParentID the caller's span from traceparent
	Name     string // method + route template: "GET /api/credentials/{name}", or the function name
	URL      string // the route template only, never the request's path
	Start    time.Time
	Duration time.Duration
	Code     string // HTTP status as text ("200"), or "0"/"1" for a timer run
	Success  bool
	// Properties are custom dimensions: correlation_id, invocation_id, ….
	Properties map[string]string
}

// Dependency is one call to Key Vault, Blob Storage or Cosmos DB.
type Dependency struct {
	Span       Span   // SpanID is the call's own id; ParentID the request's span
	Type       string // "Azure Key Vault", "Azure blob", "Azure DocumentDB", "HTTP"
	Target     string // host[:port]
	Name       string // operation: method and a path template, never ids or names
	Start      time.Time
	Duration   time.Duration
	Code       string // HTTP status as text, or "" when no response came
	Success    bool
	Properties map[string]string
}

// Exception is a failure that answered 5xx (or failed a timer run).
type Exception struct {
	Span       Span   // the span it happened in (SpanFrom(ctx)): its SpanID is the item's parent
	Type       string // the error's class, e.g. "unavailable" or a Go type name
	Message    string // the error's text: it never holds secrets by construction
	Properties map[string]string
}

// Event is a named custom event; audit events are sent as events named
// "audit" whose properties are the audit record's fields.
type Event struct {
	Span       Span // the span it happened in (SpanFrom(ctx)): its SpanID is the item's parent
	Name       string
	Properties map[string]string
}

// Metric is one measurement of a named metric; it belongs to no trace.
type Metric struct {
	Name       string
	Value      float64
	Properties map[string]string
}

func (*Request) item()    {}
func (*Dependency) item() {}
func (*Exception) item()  {}
func (*Event) item()      {}
func (*Metric) item()     {}
