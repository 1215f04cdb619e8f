package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"regexp"
	"strings"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/telemetry"
)

// record is what one request leaves for its log line.
type record struct {
	correlationID string
	traceID       string
	spanID        string
	parentID      string // the caller's span, from its traceparent
	route         string // the route template, never the path with a name in it
	err           error
	event         *audit.Event // the audit record of an authenticated route
}

type recordKey struct{}

func recordOf(r *http.Request) *record {
	if rec, ok := r.Context().Value(recordKey{}).(*record); ok {
		return rec
	}
	return &record{}
}

var (
	traceparentRE   = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$`)
	correlationIDRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
)

// withTrace accepts a W3C traceparent (or an x-correlation-id), generates
// them when absent or malformed, and echoes both on the response.
func withTrace(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &record{spanID: randomHex(8)}
		flags := "01"
		if m := traceparentRE.FindStringSubmatch(strings.TrimSpace(r.Header.Get("traceparent"))); m != nil &&
			m[1] != strings.Repeat("0", 32) && m[2] != strings.Repeat("0", 16) {
			rec.traceID, rec.parentID, flags = m[1], m[2], m[3]
		} else {
			rec.traceID = randomHex(16)
		}
		rec.correlationID = rec.traceID
		if c := r.Header.Get("x-correlation-id"); correlationIDRE.MatchString(c) {
			rec.correlationID = c
		}
		h := w.Header()
		h.Set("traceparent", "00-"+rec.traceID+"-"+rec.spanID+"-"+flags)
		h.Set("x-correlation-id", rec.correlationID)
		ctx := context.WithValue(r.Context(), recordKey{}, rec)
		ctx = telemetry.WithSpan(ctx, telemetry.Span{TraceID: rec.traceID, SpanID: rec.spanID, ParentID: rec.parentID})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
