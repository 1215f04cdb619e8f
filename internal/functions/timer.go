package functions

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/adhocore/gronx"
)

// Schedule is a timer trigger's schedule: a six-field NCRONTAB expression
// ({second} {minute} {hour} {day} {month} {day-of-week}), evaluated in UTC
// as on Flex Consumption, which has no time zone setting. The TimeSpan form
// (hh:mm:ss) of App Service plans is not supported.
type Schedule struct{ expr string }

var settingRef = regexp.MustCompile(`^%([A-Za-z0-9_]+)%$`)

// ParseSchedule reads a function.json schedule. A value written %NAME% is
// the app setting NAME, read from getenv, as the host resolves it.
func ParseSchedule(s string, getenv func(string) string) (Schedule, error) {
	expr := strings.TrimSpace(s)
	if m := settingRef.FindStringSubmatch(expr); m != nil {
		expr = strings.TrimSpace(getenv(m[1]))
		if expr == "" {
			return Schedule{}, fmt.Errorf("timer schedule %s: the app setting %s is empty", s, m[1])
		}
	}
	if n := len(strings.Fields(expr)); n != 6 {
		return Schedule{}, fmt.Errorf("timer schedule %q: NCRONTAB needs six fields (second minute hour day month day-of-week), got %d", expr, n)
	}
	if !gronx.IsValid(expr) {
		return Schedule{}, fmt.Errorf("timer schedule %q: not a valid NCRONTAB expression", expr)
	}
	return Schedule{expr: expr}, nil
}

// String returns the expression.
func (s Schedule) String() string { return s.expr }

// Next returns the first time strictly after t at which the schedule fires.
func (s Schedule) Next(t time.Time) (time.Time, error) {
	return gronx.NextTickAfter(s.expr, t.UTC().Truncate(time.Second), false)
}

// TimerInvocation is the request the host sends to the handler for a timer
// trigger named binding (the payload documented for custom handlers: the
// binding's TimerInfo in Data, the trigger metadata with "sys" in Metadata).
func TimerInvocation(function, binding string, last, next, now time.Time, pastDue bool) InvokeRequest {
	info, _ := json.Marshal(map[string]any{
		"Schedule": map[string]any{"AdjustForDST": false},
		"ScheduleStatus": map[string]any{
			"Last": last.UTC(), "Next": next.UTC(), "LastUpdated": now.UTC(),
		},
		"IsPastDue": pastDue,
	})
	guid := make([]byte, 16)
	rand.Read(guid)
	g := hex.EncodeToString(guid)
	sys, _ := json.Marshal(map[string]any{
		"MethodName": function, "UtcNow": now.UTC(),
		"RandGuid": g[:8] + "-" + g[8:12] + "-" + g[12:16] + "-" + g[16:20] + "-" + g[20:],
	})
	return InvokeRequest{
		Data:     map[string]json.RawMessage{binding: info},
		Metadata: map[string]json.RawMessage{binding: info, "sys": sys},
	}
}
