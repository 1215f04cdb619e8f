package functions

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseSchedule(t *testing.T) {
	env := func(k string) string {
		return map[string]string{"ROTATION_SCHEDULE": "0 30 2 * * *"}[k]
	}
	at := time.Date(2026, 11, 23, 18, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in, want, err string
	}{
		{in: "0 0 3 * * *", want: "2026-11-24T03:00:00Z"},
		{in: "0 */5 * * * *", want: "2026-11-23T18:05:00Z"},
		{in: "%ROTATION_SCHEDULE%", want: "2026-11-24T02:30:00Z"},
		{in: "%MISSING%", err: "MISSING is empty"},
		{in: "0 3 * * *", err: "six fields"},
		{in: "0 0 3 * * * 2030", err: "six fields"},
		{in: "00:05:00", err: "six fields"},
		{in: "0 0 25 * * *", err: "not a valid"},
	} {
		s, err := ParseSchedule(c.in, env)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseSchedule(%q) = %v, want an error with %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("ParseSchedule(%q): %v", c.in, err)
		}
		next, err := s.Next(at)
		if err != nil || next.Format(time.RFC3339) != c.want {
			t.Errorf("%q after %s: %s, %v; want %s", c.in, at, next, err, c.want)
		}
	}
}

func TestTimerInvocationShape(t *testing.T) {
	now := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)
	req := TimerInvocation("rotate", "timer", now.Add(-24*time.Hour), now.Add(24*time.Hour), now, false)
	var info struct {
		ScheduleStatus struct{ Last, Next, LastUpdated time.Time }
		IsPastDue      bool
	}
	if err := json.Unmarshal(req.Data["timer"], &info); err != nil || !info.ScheduleStatus.Next.Equal(now.Add(24*time.Hour)) {
		t.Fatalf("Data.timer = %s (%v)", req.Data["timer"], err)
	}
	var sys struct{ MethodName, RandGuid string }
	if err := json.Unmarshal(req.Metadata["sys"], &sys); err != nil || sys.MethodName != "rotate" || len(sys.RandGuid) != 36 {
		t.Fatalf("Metadata.sys = %s (%v)", req.Metadata["sys"], err)
	}
}
