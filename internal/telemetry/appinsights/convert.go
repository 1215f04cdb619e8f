package appinsights

import (
	"maps"
	"time"

	ai "github.com/microsoft/ApplicationInsights-Go/appinsights"
	"github.com/microsoft/ApplicationInsights-Go/appinsights/contracts"

	"github.com/credvault/credvault/internal/telemetry"
)

// convert maps a telemetry item to the SDK's: ids and trace context in
// the operation tags (ai.operation.id is the trace id, ai.operation.parentId
// the calling span), properties copied so the caller may reuse its map.
// It returns nil for an unknown or nil item.
func convert(it telemetry.Item) ai.Telemetry {
	switch v := it.(type) {
	case *telemetry.Request:
		if v == nil {
			return nil
		}
		r := ai.NewRequestTelemetry("", v.URL, v.Duration, v.Code)
		r.Name, r.Url, r.Success = v.Name, v.URL, v.Success
		if v.Span.SpanID != "" {
			r.Id = v.Span.SpanID
		}
		at(&r.BaseTelemetry, v.Start)
		operation(r.Tags, v.Span.TraceID, v.Span.ParentID)
		r.Tags.Operation().SetName(v.Name)
		maps.Copy(r.Properties, v.Properties)
		return r

	case *telemetry.Dependency:
		if v == nil {
			return nil
		}
		d := ai.NewRemoteDependencyTelemetry(v.Name, v.Type, v.Target, v.Success)
		d.Id, d.ResultCode, d.Duration = v.Span.SpanID, v.Code, v.Duration
		at(&d.BaseTelemetry, v.Start)
		operation(d.Tags, v.Span.TraceID, v.Span.ParentID)
		maps.Copy(d.Properties, v.Properties)
		return d

	case *telemetry.Exception:
		if v == nil {
			return nil
		}
		e := ai.NewExceptionTelemetry(v.Message) // a string: its text is the message
		e.Frames = nil                           // the stack would be Track's caller's, not the failure's
		operation(e.Tags, v.Span.TraceID, v.Span.SpanID)
		maps.Copy(e.Properties, v.Properties)
		typ := v.Type
		if typ == "" {
			typ = "error"
		}
		return exception{e, typ}

	case *telemetry.Event:
		if v == nil {
			return nil
		}
		e := ai.NewEventTelemetry(v.Name)
		operation(e.Tags, v.Span.TraceID, v.Span.SpanID)
		maps.Copy(e.Properties, v.Properties)
		return e

	case *telemetry.Metric:
		if v == nil {
			return nil
		}
		m := ai.NewMetricTelemetry(v.Name, v.Value)
		maps.Copy(m.Properties, v.Properties)
		return m
	}
	return nil
}

// operation sets the trace tags; an empty trace id is left to the SDK,
// which draws one.
func operation(tags contracts.ContextTags, traceID, parentID string) {
	if traceID != "" {
		tags.Operation().SetId(traceID)
	}
	if parentID != "" {
		tags.Operation().SetParentId(parentID)
	}
}

func at(b *ai.BaseTelemetry, start time.Time) {
	if !start.IsZero() {
		b.Timestamp = start
	}
}

// exception is an exception item whose type name is the item's Type,
// where the SDK would write the Go type of the error value.
type exception struct {
	*ai.ExceptionTelemetry
	typeName string
}

func (e exception) TelemetryData() ai.TelemetryData {
	d := e.ExceptionTelemetry.TelemetryData()
	if data, ok := d.(*contracts.ExceptionData); ok {
		for _, x := range data.Exceptions {
			x.TypeName = e.typeName
		}
	}
	return d
}
