package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckRotationBudget(t *testing.T) {
	for _, tc := range []struct {
		name, hostJSON string // "" : no host.json
		budget         time.Duration
		wantErr        string
	}{
		{"the repository's host.json and the default budget", "../host.json", 8 * time.Minute, ""},
		{"no host.json", "", time.Hour, ""},
		{"no limit", `{"version":"2.0","functionTimeout":"-1"}`, time.Hour, ""},
		{"the plan's default", `{"version":"2.0"}`, time.Hour, ""},
		{"just inside", `{"version":"2.0","functionTimeout":"00:10:00"}`, 9 * time.Minute, ""},
		{"past the margin", `{"version":"2.0","functionTimeout":"00:10:00"}`, 9*time.Minute + time.Second, "lower it to 9m0s or less"},
		{"past the timeout", `{"version":"2.0","functionTimeout":"00:05:00"}`, 8 * time.Minute, "functionTimeout 5m0s"},
		{"malformed timeout", `{"version":"2.0","functionTimeout":"ten minutes"}`, time.Minute, "want [d.]hh:mm:ss"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "host.json")
			switch {
			case strings.HasPrefix(tc.hostJSON, "../"):
				path = tc.hostJSON
			case tc.hostJSON != "":
				if err := os.WriteFile(path, []byte(tc.hostJSON), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := checkRotationBudget(path, tc.budget)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("checkRotationBudget(%v) = %v, want error containing %q", tc.budget, err, tc.wantErr)
			}
		})
	}
}
