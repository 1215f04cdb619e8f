package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/functions"
	"github.com/credvault/credvault/internal/rotation"
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
func runTimer(ctx context.Context, sched functions.Schedule, job *rotation.Job, log *slog.Logger) {
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
		// The job logs its own report line.
		if _, err := job.Run(ctx, rotation.Request{}); err != nil {
			log.Error("rotation run failed", "error", err.Error())
		}
	}
}
