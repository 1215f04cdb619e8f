package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"time"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/functions"
	"github.com/credvault/credvault/internal/rotation"
	"github.com/credvault/credvault/internal/telemetry"
)

// timerSchedule reads the rotate timer's schedule from its function.json
// (functions/rotate in the repository, rotate/ in the deployed app), the
// same file the Functions host reads, resolving %CREDVAULT_ROTATION_SCHEDULE%
// to the configured schedule.
func timerSchedule(cfg config.Config, getenv func(string) string) (functions.Schedule, error) {
	resolve := func(k string) string {
		if k == "CREDVAULT_ROTATION_SCHEDULE" {
			return cfg.Rotation.Schedule
		}
		return getenv(k)
	}
	fns, err := functions.Load(".")
	if err != nil {
		return functions.Schedule{}, err
	}
	for _, f := range fns {
		if t, ok := f.Trigger(); ok && f.Name == "rotate" && t.Type == "timerTrigger" {
			return functions.ParseSchedule(t.Schedule, resolve)
		}
	}
	return functions.ParseSchedule(cfg.Rotation.Schedule, resolve)
}

// runTimer runs the rotation job on its schedule until ctx ends, one run at
// a time, as the host would fire the timer function.
func runTimer(ctx context.Context, sched functions.Schedule, a *app, log *slog.Logger) {
	log.Info("rotation timer scheduled", "schedule", sched.String())
	for {
		next, err := sched.Next(time.Now())
		if err != nil {
			log.Error("rotation timer stopped", "error", err.Error())
			return
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		timerRun(ctx, a, log)
	}
}

// timerRun is one firing of the standalone timer: the job (which logs its
// own report line and audits its steps), an audit record of the run, and a
// request item, as the host's invocation of POST /rotate gets.
func timerRun(ctx context.Context, a *app, log *slog.Logger) {
	span := telemetry.Span{TraceID: randomHex(16), SpanID: randomHex(8)}
	ctx = telemetry.WithSpan(ctx, span)
	start := time.Now()
	_, err := a.rotation.Run(ctx, rotation.Request{})
	ev := audit.Event{Op: audit.OpRotation, Principal: audit.PrincipalSystem, Outcome: audit.Success, Correlation: span.TraceID}
	if err != nil {
		log.Error("rotation run failed", "error", err.Error(), "trace_id", span.TraceID)
		ev.Outcome = audit.Error
	}
	if rerr := a.trail.Record(context.WithoutCancel(ctx), ev); rerr != nil {
		log.Error("rotation run not audited", "error", rerr.Error(), "trace_id", span.TraceID)
	}
	code := "0"
	if err != nil {
		code = "1"
	}
	a.tel.Track(&telemetry.Request{Span: span, Name: "rotate", URL: "timer:rotate", Start: start,
		Duration: time.Since(start), Code: code, Success: err == nil})
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
