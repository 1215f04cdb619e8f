package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/functions"
	"github.com/credvault/credvault/internal/identity"
)

// writeFunctionJSON writes dir/function.json with one input binding.
func writeFunctionJSON(t *testing.T, dir, typ, schedule string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	body := `{"bindings":[{"type":"` + typ + `","direction":"in","name":"timer","schedule":"` + schedule + `"}]}`
	if err := os.WriteFile(filepath.Join(dir, "function.json"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTimerSchedule: timerSchedule reads the rotate function's schedule
// from the function.json the host reads (the repository layout, and the
// deployed one), resolving %CREDVAULT_ROTATION_SCHEDULE% to the configured
// schedule and other %NAME% from the environment; without a rotate timer it
// uses the configured schedule. Next of the result is checked.
func TestTimerSchedule(t *testing.T) {
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2030, 1, 1, 10, 2, 30, 0, time.UTC)
	// folder writes one function.json at path (under a new working
	// directory) with a trigger of type typ on schedule.
	folder := func(path, typ, schedule string) func(t *testing.T) string {
		return func(t *testing.T) string {
			d := t.TempDir()
			writeFunctionJSON(t, filepath.Join(d, path), typ, schedule)
			return d
		}
	}
	for _, c := range []struct {
		name    string
		setup   func(t *testing.T) string // returns the working directory
		env     map[string]string
		want    string    // the expression
		next    time.Time // Next(from)
		wantErr string
	}{
		{
			name:  "repository, the configured schedule",
			setup: func(*testing.T) string { return repo },
			env:   map[string]string{"CREDVAULT_ROTATION_SCHEDULE": "0 15 4 * * *"},
			want:  "0 15 4 * * *", next: time.Date(2030, 1, 2, 4, 15, 0, 0, time.UTC),
		},
		{
			name:  "repository, the default schedule",
			setup: func(*testing.T) string { return repo },
			want:  "0 0 3 * * *", next: time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC),
		},
		{
			name: "repository layout, a literal schedule in function.json",
			setup: func(t *testing.T) string {
				d := t.TempDir()
				writeFunctionJSON(t, filepath.Join(d, "functions", "rotate"), "timerTrigger", "0 */5 * * * *")
				writeFunctionJSON(t, filepath.Join(d, "functions", "other"), "timerTrigger", "0 0 0 1 1 *")
				return d
			},
			env:  map[string]string{"CREDVAULT_ROTATION_SCHEDULE": "0 0 3 * * *"},
			want: "0 */5 * * * *", next: time.Date(2030, 1, 1, 10, 5, 0, 0, time.UTC),
		},
		{
			name:  "deployed layout, the setting from the configuration",
			setup: folder("rotate", "timerTrigger", "%CREDVAULT_ROTATION_SCHEDULE%"),
			env:   map[string]string{"CREDVAULT_ROTATION_SCHEDULE": "30 45 * * * 1"}, // Mondays, hourly at :45:30
			want:  "30 45 * * * 1", next: time.Date(2030, 1, 7, 0, 45, 30, 0, time.UTC),
		},
		{
			name:  "another app setting, from the environment",
			setup: folder("functions/rotate", "timerTrigger", "%MY_ROTATE_SCHEDULE%"),
			env:   map[string]string{"MY_ROTATE_SCHEDULE": "0 0 */6 * * *"},
			want:  "0 0 */6 * * *", next: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC),
		},
		{
			name:  "rotate is not a timer: the configured schedule",
			setup: folder("functions/rotate", "httpTrigger", "0 */5 * * * *"),
			env:   map[string]string{"CREDVAULT_ROTATION_SCHEDULE": "0 0 22 * * *"},
			want:  "0 0 22 * * *", next: time.Date(2030, 1, 1, 22, 0, 0, 0, time.UTC),
		},
		{
			name:  "no function folders: the configured schedule",
			setup: func(t *testing.T) string { return t.TempDir() },
			env:   map[string]string{"CREDVAULT_ROTATION_SCHEDULE": "0 0 11 * * *"},
			want:  "0 0 11 * * *", next: time.Date(2030, 1, 1, 11, 0, 0, 0, time.UTC),
		},
		{
			name:    "an unset app setting",
			setup:   folder("functions/rotate", "timerTrigger", "%UNSET_SCHEDULE%"),
			wantErr: "UNSET_SCHEDULE is empty",
		},
		{
			name:    "five fields",
			setup:   folder("functions/rotate", "timerTrigger", "0 3 * * *"),
			wantErr: "six fields",
		},
		{
			name:    "a bad configured schedule",
			setup:   folder("functions/rotate", "timerTrigger", "%CREDVAULT_ROTATION_SCHEDULE%"),
			env:     map[string]string{"CREDVAULT_ROTATION_SCHEDULE": "0 0 25 * * *"},
			wantErr: "not a valid NCRONTAB",
		},
		{
			name: "a broken function.json",
			setup: func(t *testing.T) string {
				d := t.TempDir()
				writeFunctionJSON(t, filepath.Join(d, "functions", "rotate"), "timerTrigger", "0 0 3 * * *")
				os.WriteFile(filepath.Join(d, "functions", "rotate", "function.json"), []byte("{"), 0o644)
				return d
			},
			wantErr: "function.json",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Chdir(c.setup(t))
			getenv := envFrom(c.env)
			cfg, err := config.Load(getenv)
			if err != nil {
				t.Fatal(err)
			}
			s, err := timerSchedule(cfg, getenv)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("timerSchedule = %q, %v; want an error with %q", s.String(), err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.String() != c.want {
				t.Fatalf("schedule %q, want %q", s.String(), c.want)
			}
			next, err := s.Next(from)
			if err != nil || !next.Equal(c.next) {
				t.Fatalf("Next(%s) = %s, %v; want %s", from, next, err, c.next)
			}
		})
	}
}

// rotationRuns returns the trail's records of timer runs.
func (e *testEnv) rotationRuns() []auditLine {
	var out []auditLine
	for _, r := range e.auditRecords() {
		if r.Op == audit.OpRotation {
			out = append(out, r)
		}
	}
	return out
}

// TestTimerFiresRotation: runTimer on an every-second schedule runs the
// rotation job within a few seconds (the last report is complete, the trail
// has a system record of the run), and returns once ctx is canceled.
func TestTimerFiresRotation(t *testing.T) {
	e := start(t)
	wantStatus(t, "PUT", e.do("PUT", "/api/credentials/a", e.token("alice"), `{"value":"v"}`), 201)
	ops := e.token("ops", identity.KeysRotate)
	if r := e.do("GET", "/api/admin/rotate", ops, nil); r.status == 200 {
		t.Fatalf("a rotation report before the timer fired: %s", r.body)
	}
	if runs := e.rotationRuns(); len(runs) != 0 {
		t.Fatalf("rotation runs audited before the timer fired: %+v", runs)
	}
	sched, err := functions.ParseSchedule("* * * * * *", nil)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(e.logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runTimer(ctx, sched, e.app, log)
	}()

	var rep report
	var runs []auditLine
	for deadline := time.Now().Add(10 * time.Second); ; {
		if r := e.do("GET", "/api/admin/rotate", ops, nil); r.status == 200 {
			decode(t, r.body, &rep)
			if runs = e.rotationRuns(); rep.Complete && len(runs) > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no completed timer run within 10 s: report %+v, runs %+v; logs %s", rep, runs, e.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(rep.Steps) != 4 {
		t.Errorf("the timer run's report has %d steps, want 4: %+v", len(rep.Steps), rep)
	}
	r := runs[0]
	if r.Principal != audit.PrincipalSystem || r.Outcome != audit.Success || len(r.Correlation) != 32 {
		t.Errorf("the timer run's record %+v, want a successful system run with a trace id", r)
	}
	if !strings.Contains(e.logs.String(), `"msg":"rotation timer scheduled","schedule":"* * * * * *"`) {
		t.Errorf("the timer did not log its schedule: %s", e.logs.String())
	}

	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("runTimer did not return within 10 s of ctx being canceled")
	}
	// Stopped: no run starts any more.
	n := len(e.rotationRuns())
	time.Sleep(1500 * time.Millisecond)
	if m := len(e.rotationRuns()); m != n {
		t.Fatalf("%d timer runs after runTimer returned", m-n)
	}
}

// TestTimerStopsOnBadSchedule: a schedule with no next time stops the timer
// at once, logged as an error, with no run.
func TestTimerStopsOnBadSchedule(t *testing.T) {
	e := start(t)
	log := slog.New(slog.NewJSONHandler(e.logs, nil))
	done := make(chan struct{})
	go func() {
		defer close(done)
		runTimer(context.Background(), functions.Schedule{}, e.app, log)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("runTimer did not return on a schedule without a next time")
	}
	if !strings.Contains(e.logs.String(), `"level":"ERROR","msg":"rotation timer stopped"`) {
		t.Errorf("the stop is not logged as an error: %s", e.logs.String())
	}
	if runs := e.rotationRuns(); len(runs) != 0 {
		t.Fatalf("a run with a bad schedule: %+v", runs)
	}
}
