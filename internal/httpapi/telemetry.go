package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/credvault/credvault/internal/telemetry"
)

// trackRequest sends the request item (named by its route template, never by
// its path) and, for a 5xx, an exception carrying the error's class.
func (s *server) trackRequest(r *http.Request, rec *record, code int, start time.Time, d time.Duration) {
	span := telemetry.Span{TraceID: rec.traceID, SpanID: rec.spanID, ParentID: rec.parentID}
	props := map[string]string{"correlation_id": rec.correlationID}
	if id := r.Header.Get("X-Azure-Functions-InvocationId"); invocationIDRE.MatchString(id) {
		props["invocation_id"] = id
	}
	_, template, _ := strings.Cut(rec.route, " ")
	s.tel.Track(&telemetry.Request{
		Span: span, Name: rec.route, URL: template, Start: start, Duration: d,
		Code: strconv.Itoa(code), Success: code < 500, Properties: props,
	})
	if code >= 500 && rec.err != nil {
		_, title, detail := status(rec.err)
		s.tel.Track(&telemetry.Exception{
			Span: telemetry.Span{TraceID: rec.traceID, SpanID: randomHex(8), ParentID: rec.spanID},
			Type: title, Message: detail, Properties: props,
		})
	}
}
