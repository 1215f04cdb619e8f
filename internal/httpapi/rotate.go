package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/functions"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/rotation"
	"github.com/credvault/credvault/internal/vault"
)

// Rotator runs the rotation job and keeps its last report.
type Rotator interface {
	Run(ctx context.Context, req rotation.Request) (rotation.Report, error)
	LastReport(ctx context.Context) (rotation.Report, error)
}

// adminRotateBudget bounds a run asked over HTTP: Azure's front end cuts an
// HTTP-triggered call at 230 s. A run that stops at its budget keeps a
// checkpoint; the next run (or the timer) continues.
const adminRotateBudget = 3 * time.Minute

// rotate runs the job now: POST /api/admin/rotate, optionally
// {"owner": "<tenant>/<object>"} to rotate one owner's KEK at once, and
// "steps" to limit the run.
func (s *server) rotate(w http.ResponseWriter, r *http.Request, _ identity.Principal) error {
	if s.rotator == nil {
		return errNoRotation
	}
	var b struct {
		Owner string          `json:"owner"`
		Steps []rotation.Step `json:"steps"`
	}
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, &b); err != nil {
			return err
		}
	}
	if len(b.Owner) > maxOwnerBytes {
		return &vault.InvalidError{Field: "owner", Reason: "must be the owner id (tenant/object), at most 256 bytes"}
	}
	req := rotation.Request{Steps: b.Steps, Budget: adminRotateBudget}
	if b.Owner != "" {
		eventOf(r).Owner = b.Owner // the owner whose KEK rotates; Caller stays the operator
		oh, err := s.vault.OwnerHash(r.Context(), b.Owner)
		if err != nil {
			return err
		}
		req.Owner = oh
	}
	rep, err := s.rotator.Run(r.Context(), req)
	if err != nil && !errors.Is(err, rotation.ErrFailed) {
		return err
	}
	return writeJSON(w, http.StatusOK, rep) // items that failed are in the report
}

// lastRotation answers GET /api/admin/rotate: the last run's report.
func (s *server) lastRotation(w http.ResponseWriter, r *http.Request, _ identity.Principal) error {
	if s.rotator == nil {
		return errNoRotation
	}
	rep, err := s.rotator.LastReport(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rep)
}

// TimerFunction is the name of the rotate timer function: the host invokes
// it with POST /<name> and the invocation payload.
const TimerFunction = "rotate"

// invokeTimer answers the Functions host's invocation of the rotate timer
// (POST /rotate, payload Data/Metadata). In this mode the host treats any
// non-2xx answer as a failed invocation, so only a run that went through
// answers 200. Only the host, on loopback, may call it.
func (s *server) invokeTimer(w http.ResponseWriter, r *http.Request) {
	rec := recordOf(r)
	rec.route = "POST /" + TimerFunction
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err != nil || !net.ParseIP(host).IsLoopback() {
		writeProblem(w, r, errForbidden)
		return
	}
	var in functions.InvokeRequest
	if err := decodeJSON(w, r, &in); err != nil {
		writeProblem(w, r, err)
		return
	}
	if s.rotator == nil {
		writeProblem(w, r, errNoRotation)
		return
	}
	rep, err := s.rotator.Run(r.Context(), rotation.Request{}) // the job's own budget
	out := functions.InvokeResponse{
		Outputs:     map[string]any{},
		Logs:        []string{timerSummary(rep, err)},
		ReturnValue: rep,
	}
	code := http.StatusOK
	if err != nil {
		rec.err = err
		code = http.StatusInternalServerError
	}
	if s.audit != nil {
		ev := audit.Event{Op: audit.OpRotation, Outcome: outcome(code), Status: code,
			Principal: audit.PrincipalSystem, Correlation: rec.correlationID}
		if err := s.audit.Record(r.Context(), ev); err != nil {
			writeProblem(w, r, err) // the host sees a failed invocation
			return
		}
	}
	writeJSON(w, code, out)
}

func timerSummary(rep rotation.Report, err error) string {
	if err != nil {
		return "credvault rotation failed: " + err.Error()
	}
	b, _ := json.Marshal(rep.Steps)
	return fmt.Sprintf("credvault rotation complete=%t steps=%s", rep.Complete, b)
}

var errNoRotation = errors.New("rotation is not configured")
