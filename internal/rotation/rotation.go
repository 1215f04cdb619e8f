// Package rotation is credvault's key rotation job (DESIGN §6): one job,
// idempotent and resumable, safe to run twice at once, that never blocks
// puts and gets. In order:
//
//  1. CMK rotation: domain keys wrapped under a CMK version other than the
//     current one are re-wrapped under it (2 Key Vault calls per domain key
//     version, whatever the number of owners).
//  2. Domain key rotation: a domain whose active key is older than
//     DomainMaxAge gets a new version (1 Key Vault call); a pass over the
//     owner keyrings re-wraps their KEKs under it locally (one CAS per owner,
//     no Key Vault call), and the index key too; when the pass is complete,
//     domain versions nothing references are retired, and retired ones
//     destroyed once that is safe.
//  3. Owner KEK rotation: an owner whose active KEK is older than KEKMaxAge
//     (or the owner a Request names, at once) gets a new KEK version; a
//     re-encrypt sweep moves the owner's secret versions to it (blob first,
//     metadata CAS second), then the versions nothing references are retired,
//     and retired ones destroyed once that is safe.
//  4. Garbage: ciphertext blobs no document points to, older than
//     GarbageGrace, are deleted.
//
// It works in pages within a time budget, records a checkpoint document so
// the next run continues where this one stopped, and reports counts per
// step (and saves the report, for GET /api/admin/rotate).
//
// Safety margins. A reader may act, for a moment, on a document it read just
// before a rotation write; so a new KEK version is swept into secret
// documents, and a replaced or orphaned blob deleted, only Settle after (a
// get reads the keyring, then the secret document, then the blob). And an
// instance may keep wrapping under a domain version for a while after a
// newer one exists (it caches the domain document), and a put may hold an
// owner's keyring for the length of its retries; so a retired key version is
// destroyed only by a pass over its references that began DestroyAfter after
// its successor was created. Until then the older versions stay in their
// ring, retired, and no pass or sweep reads their references again.
package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/telemetry"
	"github.com/credvault/credvault/internal/vault"
)

// Options configure a Job; zero fields take the defaults.
type Options struct {
	DomainMaxAge time.Duration // a domain key older than this gets a new version; default 90 days
	KEKMaxAge    time.Duration // an owner KEK older than this gets a new version; default 365 days
	GarbageGrace time.Duration // an orphan blob younger than this is kept; default 24 h
	// Budget bounds a run: no new page is started after it (each step still
	// does its first page, so that every run makes progress). Keep it below
	// the host's function timeout; default 8 min.
	Budget time.Duration
	// KeyVaultConcurrency bounds the domain operations (the only ones that
	// call Key Vault) in flight at once; default 4. Throttling (429) is
	// retried with Retry-After by the Key Vault client.
	KeyVaultConcurrency int
	Now                 func() time.Time // clock for policy ages; default time.Now

	// Workers bounds the owners worked at once (store-bound work); default 8.
	Workers int
	// PageSize is the number of keyrings or secret documents per page
	// (blobs: ten times as many, at most 1000); default 100.
	PageSize int
	// Settle is how long readers may go on acting on a document read before
	// a rotation write (see the package comment); default 5 s.
	Settle time.Duration
	// DestroyAfter is how long after a key version's successor was created
	// a pass must begin before the retired version may be destroyed (see the
	// package comment); default 24 h.
	DestroyAfter time.Duration
	// Logger, if set, gets the report of every run as one structured line.
	Logger *slog.Logger
	// Audit, if set, gets one audit record per step of every run, with what
	// the step did; a record that cannot be written fails the run.
	Audit Auditor
}

// Auditor records audit events (the audit trail is one).
type Auditor interface {
	Record(ctx context.Context, e audit.Event) error
}

// Defaults of Options.
const (
	DefaultDomainMaxAge        = 90 * 24 * time.Hour
	DefaultKEKMaxAge           = 365 * 24 * time.Hour
	DefaultGarbageGrace        = 24 * time.Hour
	DefaultBudget              = 8 * time.Minute
	DefaultKeyVaultConcurrency = 4
	DefaultWorkers             = 8
	DefaultPageSize            = 100
	DefaultSettle              = 5 * time.Second
	DefaultDestroyAfter        = 24 * time.Hour
)

// Step names a step of the job.
type Step string

// The steps, in the order a run takes them.
const (
	StepCMK     Step = "cmk"
	StepDomain  Step = "domain"
	StepKEK     Step = "kek"
	StepGarbage Step = "garbage"
)

// Steps lists every step in order.
var Steps = []Step{StepCMK, StepDomain, StepKEK, StepGarbage}

// Request is what a run is asked to do beyond its policies.
type Request struct {
	// Owner, if set, is an owner hash whose KEK is rotated now, whatever its
	// age (an incident), and swept first in step 3. An owner id is turned
	// into its hash with keyring.Hierarchy.OwnerHash.
	Owner string `json:"owner,omitempty"`
	// Steps, if set, limits the run to these steps (still in the job's
	// order); empty: all.
	Steps []Step `json:"steps,omitempty"`
	// Budget, if set, replaces Options.Budget for this run (an HTTP request
	// has less time than the timer function: 230 s behind Azure's front end).
	Budget time.Duration `json:"-"`
}

// Report is what a run did, per step. It carries counts and owner hashes
// only: no key material, no owner ids, no secret names.
type Report struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Owner    string    `json:"owner,omitempty"` // the owner hash a Request named
	// Complete: every step reached the end of its work; nothing is left
	// for a later run (but retired keys waiting for DestroyAfter).
	Complete bool         `json:"complete"`
	Error    string       `json:"error,omitempty"`
	Steps    []StepReport `json:"steps"`
}

// StepReport counts what one step did.
type StepReport struct {
	Step Step `json:"step"`
	// Examined counts the step's units: domains (cmk), owner keyrings
	// (domain, kek), blobs (garbage).
	Examined         int   `json:"examined"`
	VersionsExamined int   `json:"versionsExamined,omitempty"` // secret versions the sweep looked at (kek)
	Added            int   `json:"added"`                      // key versions added (domain, kek)
	Rewrapped        int   `json:"rewrapped"`                  // key versions re-wrapped (cmk: domain keys; domain: KEKs and index key)
	Reencrypted      int   `json:"reencrypted"`                // secret versions moved to the active KEK
	Retired          int   `json:"retired"`                    // key versions retired
	Destroyed        int   `json:"destroyed"`                  // retired key versions removed
	Collected        int   `json:"collected"`                  // blobs deleted: replaced by the sweep (kek), orphans (garbage)
	Failed           int   `json:"failed"`                     // items that could not be done (left as they were)
	KeyVaultCalls    int   `json:"keyVaultCalls"`              // wrapKey and unwrapKey calls asked of the CMK
	DurationMS       int64 `json:"durationMs"`
	// Backlog counts the units known to be left for a later run (domains, or
	// owners whose sweep stopped part way); More says the step's listing
	// stopped before its end.
	Backlog int  `json:"backlog"`
	More    bool `json:"more,omitempty"`
	// Stopped says why the step stopped early: "budget", "canceled",
	// "unavailable" (Key Vault or a store; the checkpoint is kept),
	// "revoked" (the CMK refuses), "integrity" or "error".
	Stopped string `json:"stopped,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Errors of Run and LastReport.
var (
	// ErrInvalidOwner: Request.Owner is not an owner hash.
	ErrInvalidOwner = errors.New("rotation: owner is not an owner hash")
	// ErrUnknownOwner: Request.Owner has no keyring (never wrote, or erased).
	ErrUnknownOwner = errors.New("rotation: owner has no keyring")
	// ErrInvalidStep: Request.Steps names no step of the job.
	ErrInvalidStep = errors.New("rotation: unknown step")
	// ErrFailed: the run went through, but some items could not be done.
	ErrFailed = errors.New("rotation: some keys or secrets could not be rotated")
	// ErrNoReport: no run has saved a report yet.
	ErrNoReport = errors.New("rotation: no report yet")
)

// Job is the rotation job over one deployment.
type Job struct {
	keys  *keyring.Hierarchy
	vault *vault.Vault
	meta  store.Metadata
	opt   Options
}

// New returns the job over the key hierarchy, the vault and the metadata
// store they use (which also holds the checkpoint and the last report).
func New(keys *keyring.Hierarchy, v *vault.Vault, meta store.Metadata, opt Options) *Job {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opt.DomainMaxAge, DefaultDomainMaxAge)
	def(&opt.KEKMaxAge, DefaultKEKMaxAge)
	def(&opt.GarbageGrace, DefaultGarbageGrace)
	def(&opt.Budget, DefaultBudget)
	def(&opt.Settle, DefaultSettle)
	def(&opt.DestroyAfter, DefaultDestroyAfter)
	if opt.KeyVaultConcurrency <= 0 {
		opt.KeyVaultConcurrency = DefaultKeyVaultConcurrency
	}
	if opt.Workers <= 0 {
		opt.Workers = DefaultWorkers
	}
	if opt.PageSize <= 0 {
		opt.PageSize = DefaultPageSize
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Job{keys: keys, vault: v, meta: meta, opt: opt}
}

var ownerHashPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// Run runs the job once: the steps in order, each within what is left of
// the budget, then saves the checkpoint and the report (also when ctx is
// canceled, on a detached context for a few seconds). It returns the report
// and: nil when every step went through (a step that ran out of budget did
// go through: Report.Complete says whether work is left); an error wrapping
// the cause when a step stopped on one (keyring.ErrUnavailable or
// store.ErrUnavailable when a backend is out of reach, keyring.ErrRevoked
// when the CMK refuses, the context's error when canceled); ErrFailed when
// some items could not be done; ErrInvalidOwner, ErrUnknownOwner or
// ErrInvalidStep, before anything ran, for a bad Request.
func (j *Job) Run(ctx context.Context, req Request) (Report, error) {
	rep := Report{Started: j.opt.Now().UTC(), Owner: req.Owner, Steps: []StepReport{}}
	steps := Steps
	if len(req.Steps) > 0 {
		for _, s := range req.Steps {
			if !slices.Contains(Steps, s) {
				return rep, fmt.Errorf("%w: %q", ErrInvalidStep, s)
			}
		}
		steps = slices.DeleteFunc(slices.Clone(Steps), func(s Step) bool { return !slices.Contains(req.Steps, s) })
	}
	if req.Owner != "" {
		if !ownerHashPattern.MatchString(req.Owner) {
			return rep, ErrInvalidOwner
		}
		if _, err := j.keys.Owner(ctx, req.Owner); errors.Is(err, keyring.ErrNoKeyring) {
			return rep, ErrUnknownOwner
		} else if err != nil {
			return rep, fmt.Errorf("rotation: owner keyring: %w", err)
		}
	}
	cp, err := loadCheckpoint(ctx, j.meta, j.opt.Now)
	if err != nil {
		return rep, fmt.Errorf("rotation: %w", err)
	}
	budget := j.opt.Budget
	if req.Budget > 0 {
		budget = req.Budget
	}
	r := &run{j: j, ctx: ctx, req: req, now: j.opt.Now(), deadline: time.Now().Add(budget),
		cp: cp, addedAt: map[string]time.Time{}}

	var errs []error
	for _, s := range steps {
		st := &stepState{rep: StepReport{Step: s}}
		began := time.Now()
		switch s {
		case StepCMK:
			r.cmk(st)
		case StepDomain:
			r.domain(st)
		case StepKEK:
			r.kek(st)
		case StepGarbage:
			r.garbage(st)
		}
		sr := st.report()
		sr.DurationMS = time.Since(began).Milliseconds()
		rep.Steps = append(rep.Steps, sr)
		if st.err != nil {
			errs = append(errs, fmt.Errorf("rotation step %s: %w", s, st.err))
		}
		if err := j.audit(ctx, req, sr); err != nil {
			errs = append(errs, fmt.Errorf("rotation step %s: %w", s, err))
		}
	}

	// Save where this run stopped and what it did, even when canceled.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := cp.save(sctx); err != nil {
		errs = append(errs, fmt.Errorf("rotation: %w", err))
	}
	rep.Finished = j.opt.Now().UTC()
	rep.Complete = true
	failed := 0
	for _, s := range rep.Steps {
		failed += s.Failed
		if s.Backlog > 0 || s.More || s.Stopped != "" || s.Failed > 0 {
			rep.Complete = false
		}
	}
	if len(errs) == 0 && failed > 0 {
		errs = append(errs, ErrFailed)
	}
	err = errors.Join(errs...)
	if err != nil {
		rep.Error = describe(err)
	}
	if serr := saveReport(sctx, j.meta, rep); serr != nil && err == nil {
		err = fmt.Errorf("rotation: %w", serr)
	}
	j.log(ctx, rep)
	return rep, err
}

// audit records what a step did: one record per step, and for the KEK step
// a second one for the re-encrypt sweep.
func (j *Job) audit(ctx context.Context, req Request, sr StepReport) error {
	if j.opt.Audit == nil {
		return nil
	}
	ev := audit.Event{Principal: audit.PrincipalSystem, Outcome: audit.Success, Subject: req.Owner}
	if span, ok := telemetry.SpanFrom(ctx); ok {
		ev.Correlation = span.TraceID
	}
	if sr.Error != "" || sr.Failed > 0 {
		ev.Outcome, ev.Reason = audit.Error, sr.Stopped
	}
	// A canceled run still records what it did.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var evs []audit.Event
	switch sr.Step {
	case StepCMK:
		ev.Op, ev.Count = audit.OpRotateCMK, sr.Rewrapped
		evs = append(evs, ev)
	case StepDomain:
		ev.Op, ev.Count = audit.OpRotateDomain, sr.Added+sr.Rewrapped+sr.Retired+sr.Destroyed
		evs = append(evs, ev)
	case StepKEK:
		ev.Op, ev.Count = audit.OpRotateKEK, sr.Added+sr.Retired+sr.Destroyed
		sweep := ev
		sweep.Op, sweep.Count = audit.OpReencrypt, sr.Reencrypted
		evs = append(evs, ev, sweep)
	case StepGarbage:
		ev.Op, ev.Count = audit.OpGarbage, sr.Collected
		evs = append(evs, ev)
	}
	for _, e := range evs {
		if err := j.opt.Audit.Record(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// LastReport returns the report of the last run; ErrNoReport before any.
func (j *Job) LastReport(ctx context.Context) (Report, error) {
	return lastReport(ctx, j.meta)
}

func (j *Job) log(ctx context.Context, rep Report) {
	if j.opt.Logger == nil {
		return
	}
	attrs := []slog.Attr{
		slog.Time("started", rep.Started), slog.Bool("complete", rep.Complete),
		slog.Int64("durationMs", rep.Finished.Sub(rep.Started).Milliseconds()),
	}
	if rep.Owner != "" {
		attrs = append(attrs, slog.String("owner", rep.Owner))
	}
	if rep.Error != "" {
		attrs = append(attrs, slog.String("error", rep.Error))
	}
	for _, s := range rep.Steps {
		g := []any{
			slog.Int("examined", s.Examined), slog.Int("added", s.Added), slog.Int("rewrapped", s.Rewrapped),
			slog.Int("reencrypted", s.Reencrypted), slog.Int("retired", s.Retired), slog.Int("destroyed", s.Destroyed),
			slog.Int("collected", s.Collected), slog.Int("failed", s.Failed), slog.Int("keyVaultCalls", s.KeyVaultCalls),
			slog.Int64("durationMs", s.DurationMS), slog.Int("backlog", s.Backlog), slog.Bool("more", s.More),
		}
		if s.Stopped != "" {
			g = append(g, slog.String("stopped", s.Stopped))
		}
		attrs = append(attrs, slog.Group(string(s.Step), g...))
	}
	level := slog.LevelInfo
	if rep.Error != "" {
		level = slog.LevelWarn
	}
	j.opt.Logger.LogAttrs(ctx, level, "rotation", attrs...)
}

// describe names the class of an error for the report: no detail (ids or
// names) from deeper layers.
func describe(err error) string {
	switch stopReason(err) {
	case "canceled":
		return "canceled"
	case "unavailable":
		return "a backend (Key Vault or a store) is unavailable; the next run resumes"
	case "revoked":
		return "the CMK refused: key disabled, deleted or forbidden"
	case "integrity":
		return "stored keys or data failed verification"
	}
	if errors.Is(err, ErrFailed) {
		return "some items could not be rotated"
	}
	return "rotation failed"
}

// stopReason classifies an error that stops a step.
func stopReason(err error) string {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	case errors.Is(err, keyring.ErrRevoked), errors.Is(err, vault.ErrKeyRevoked):
		return "revoked"
	case errors.Is(err, keyring.ErrUnavailable), errors.Is(err, store.ErrUnavailable), errors.Is(err, vault.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, keyring.ErrCorrupt), errors.Is(err, vault.ErrIntegrity):
		return "integrity"
	}
	return "error"
}

// fatal reports whether an error of one item stops the whole step: the
// backend or the CMK cannot be used, or the run is canceled. Others are
// counted as failed items.
func fatal(err error) bool {
	switch stopReason(err) {
	case "canceled", "revoked", "unavailable":
		return true
	}
	return false
}

// stepState collects a step's report from concurrent workers.
type stepState struct {
	mu  sync.Mutex
	rep StepReport
	err error // what stopped the step
}

func (s *stepState) report() StepReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rep
}

func (s *stepState) do(f func(r *StepReport)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.rep)
}

func (s *stepState) addKeys(res keyring.Result) {
	s.do(func(r *StepReport) {
		r.Added += res.Added
		r.Rewrapped += res.Rewrapped
		r.Retired += res.Retired
		r.Destroyed += res.Destroyed
		r.KeyVaultCalls += res.CMKCalls
	})
}

// fail records an item's error: a fatal one stops the step.
func (s *stepState) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !fatal(err) {
		s.rep.Failed++
		return
	}
	if s.err == nil {
		s.err = err
		s.rep.Stopped = stopReason(err)
		s.rep.Error = describe(err)
	}
}

// stopped reports whether an error stopped the step (the budget does not:
// work started goes on to the end of its page).
func (s *stepState) stopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err != nil
}

// outOfBudget marks the step as stopped by the budget.
func (s *stepState) outOfBudget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rep.More = true
	if s.rep.Stopped == "" {
		s.rep.Stopped = "budget"
	}
}

// run is one run of the job.
type run struct {
	j        *Job
	ctx      context.Context
	req      Request
	now      time.Time // policy clock at the start
	deadline time.Time // wall clock
	cp       *checkpoints

	mu      sync.Mutex
	addedAt map[string]time.Time // owner hash → when this run gave it a KEK (wall clock)
	held    []heldBlob           // replaced blobs waiting for Settle
}

type heldBlob struct {
	name  string
	after time.Time // wall clock
}

func (r *run) out() bool { return !time.Now().Before(r.deadline) }

// saveCheckpoint saves progress after a page; a failure is retried at the
// next page and at the end of the run.
func (r *run) saveCheckpoint() { _ = r.cp.save(r.ctx) }

// eachDomain runs f for each domain with at most KeyVaultConcurrency at
// once, until the step stops or (after the first) the budget is spent. It
// returns the domains not done.
func (r *run) eachDomain(st *stepState, domains []int, f func(d int) error) int {
	return r.each(st, len(domains), r.j.opt.KeyVaultConcurrency, true, func(i int) error { return f(domains[i]) })
}

// each runs f(0..n-1) on workers. With budgeted, no item is started once
// the budget is spent (the first always is). It returns how many were not
// done (not started, or failed).
func (r *run) each(st *stepState, n, workers int, budgeted bool, f func(i int) error) int {
	var mu sync.Mutex
	next, left := 0, 0
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next == n {
					mu.Unlock()
					return
				}
				if st.stopped() || r.ctx.Err() != nil || (budgeted && next > 0 && r.out()) {
					left += n - next
					next = n
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				if err := f(i); err != nil {
					st.fail(err)
					mu.Lock()
					left++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if err := r.ctx.Err(); err != nil && !st.stopped() {
		st.fail(err)
	}
	return left
}

// domainsOf reads every domain's ring (from the store), skipping domains no
// owner ever used.
func (r *run) domainsOf(st *stepState) (map[int]keyring.Ring, int, bool) {
	n, err := r.j.keys.RecordedDomains(r.ctx)
	if err != nil {
		st.fail(err)
		return nil, 0, false
	}
	rings := map[int]keyring.Ring{}
	for d := range n {
		ring, err := r.j.keys.Domain(r.ctx, d)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			st.fail(err)
			return nil, n, false
		}
		rings[d] = ring
	}
	return rings, n, true
}

// cmk is step 1: every domain key version under the current CMK version.
func (r *run) cmk(st *stepState) {
	rings, _, ok := r.domainsOf(st)
	if !ok || len(rings) == 0 {
		return
	}
	current, err := r.j.keys.CMKCurrent(r.ctx)
	if err != nil {
		st.fail(err)
		st.do(func(rep *StepReport) { rep.Backlog = len(rings) })
		return
	}
	var todo []int
	for _, d := range sortedKeys(rings) {
		for _, v := range rings[d].Versions {
			if v.Parent != current {
				todo = append(todo, d)
				break
			}
		}
	}
	st.do(func(rep *StepReport) { rep.Examined = len(rings) })
	left := r.eachDomain(st, todo, func(d int) error {
		res, err := r.j.keys.RewrapDomain(r.ctx, d, current)
		st.addKeys(res)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	st.do(func(rep *StepReport) { rep.Backlog = left })
	if left > 0 && !st.stopped() {
		st.outOfBudget()
	}
}

// domain is step 2: domain key rotation and the pass over owner keyrings.
func (r *run) domain(st *stepState) {
	rings, n, ok := r.domainsOf(st)
	if !ok || len(rings) == 0 {
		return
	}
	olderThan := r.now.Add(-r.j.opt.DomainMaxAge)
	var old []int
	for _, d := range sortedKeys(rings) {
		ring := rings[d]
		if cur, ok := ring.Current(); ok && cur.Created.Before(olderThan) {
			old = append(old, d)
		}
	}
	st.do(func(rep *StepReport) { rep.Backlog = len(old) })
	left := r.eachDomain(st, old, func(d int) error {
		res, err := r.j.keys.RotateDomain(r.ctx, d, olderThan)
		st.addKeys(res)
		return err
	})
	st.do(func(rep *StepReport) { rep.Backlog = left })
	if st.stopped() {
		return
	}
	if left > 0 {
		st.outOfBudget()
		return
	}
	if rings, _, ok = r.domainsOf(st); !ok {
		return
	}
	pass := r.cp.domains()
	due := false
	for _, d := range sortedKeys(rings) {
		due = due || r.unsettled(rings[d])
	}
	if pass == nil && !due {
		return // no older domain version to move keyrings off, retire or destroy
	}
	if pass == nil {
		pass = &domainPass{Started: r.now}
	}
	// Every key the pass unwraps, cached before the owners are worked, under
	// the Key Vault bound.
	r.eachDomain(st, sortedKeys(rings), func(d int) error {
		res, err := r.j.keys.WarmDomain(r.ctx, d, live(rings[d]))
		st.addKeys(res)
		return err
	})
	if st.stopped() {
		return
	}

	var mu sync.Mutex // guards pass
	done := false
	for page := 0; ; page++ {
		if page > 0 && r.out() {
			st.outOfBudget()
			break
		}
		p, err := r.j.keys.Keyrings(r.ctx, pass.Continuation, r.j.opt.PageSize)
		if err != nil {
			if errors.Is(err, store.ErrInvalid) {
				pass = &domainPass{Started: r.now} // start the pass over
			}
			st.fail(err)
			break
		}
		if len(p.Corrupt) > 0 {
			pass.Blocked = true
			st.do(func(rep *StepReport) { rep.Failed += len(p.Corrupt) })
		}
		st.do(func(rep *StepReport) { rep.Examined += len(p.Owners) + len(p.Corrupt) })
		// What the page's keyrings reference, added to the pass once the
		// page is done (a page stopped part way is done again).
		refs := &domainPass{}
		left := r.each(st, len(p.Owners), r.j.opt.Workers, false, func(i int) error {
			o := p.Owners[i]
			res, err := r.j.keys.RewrapOwner(r.ctx, o)
			st.addKeys(res)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, keyring.ErrNoKeyring):
				return nil // erased meanwhile
			case err != nil:
				refs.use(o.Domain, keyringParents(o)) // as it was: still in use
				return err
			}
			refs.use(o.Domain, res.Parents)
			return nil
		})
		if st.stopped() {
			st.do(func(rep *StepReport) { rep.Backlog += left })
			break
		}
		for d, vs := range refs.InUse {
			pass.use(d, vs)
		}
		pass.Continuation = p.Continuation
		if p.Continuation == "" {
			done = true
			break
		}
		r.cp.setDomains(pass)
		r.saveCheckpoint()
	}
	if !done {
		r.cp.setDomains(pass)
		st.do(func(rep *StepReport) { rep.More = true })
		return
	}

	// The index key, then the verdict of the pass.
	res, err := r.j.keys.RewrapIndex(r.ctx)
	st.addKeys(res)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		st.fail(err)
		if st.stopped() {
			r.cp.setDomains(pass)
			return
		}
		pass.Blocked = true
	default:
		pass.use(0, res.Parents)
	}
	if !pass.Blocked {
		destroyBefore := pass.Started.Add(-r.j.opt.DestroyAfter)
		for d := range n {
			if ring, ok := rings[d]; !ok || len(ring.Versions) < 2 {
				continue
			}
			res, err := r.j.keys.RetireDomain(r.ctx, d, set(pass.InUse[d]), destroyBefore)
			st.addKeys(res)
			if err != nil {
				st.fail(err)
				if st.stopped() {
					break
				}
			}
		}
	}
	r.cp.setDomains(nil)
}

// unsettled reports whether a ring has an older version the job still has
// work with: not retired yet, or retired and old enough to destroy. (A ring
// whose older versions are retired and not yet destroyable is left alone
// until they are: no pass or sweep reads its references every day.)
func (r *run) unsettled(ring keyring.Ring) bool {
	cur, ok := ring.Current()
	destroyable := ok && cur.Created.Before(r.now.Add(-r.j.opt.DestroyAfter))
	for _, v := range ring.Versions {
		if v.N != ring.Active && (!v.Retired || destroyable) {
			return true
		}
	}
	return false
}

// live returns a ring without its retired versions: nothing but a stale
// writer references them, and that is served by an unwrap on demand.
func live(ring keyring.Ring) keyring.Ring {
	out := keyring.Ring{Active: ring.Active}
	for _, v := range ring.Versions {
		if !v.Retired {
			out.Versions = append(out.Versions, v)
		}
	}
	return out
}

// keyringParents returns the domain versions a listed keyring references.
func keyringParents(o *keyring.Owner) []uint32 {
	var out []uint32
	for _, v := range o.Ring.Versions {
		var d int
		var n uint32
		if _, err := fmt.Sscanf(v.Parent, "domain/%d/%d", &d, &n); err == nil && d == o.Domain {
			out = union(out, []uint32{n})
		}
	}
	return out
}

// kek is step 3: owner KEK rotation and the re-encrypt sweeps.
func (r *run) kek(st *stepState) {
	if rings, _, ok := r.domainsOf(st); !ok {
		return
	} else if len(rings) > 0 {
		// The keys the sweeps unwrap KEKs with, under the Key Vault bound.
		r.eachDomain(st, sortedKeys(rings), func(d int) error {
			res, err := r.j.keys.WarmDomain(r.ctx, d, live(rings[d]))
			st.addKeys(res)
			return err
		})
		if st.stopped() {
			return
		}
	}
	defer r.flushHeld(st, true)

	// The sweeps a run before stopped part way, then the owner asked for.
	pending := r.cp.pendingSweeps()
	if owner := r.req.Owner; owner != "" {
		res, err := r.j.keys.RotateKEK(r.ctx, owner, r.now)
		st.addKeys(res)
		if err != nil && !errors.Is(err, keyring.ErrNoKeyring) {
			st.fail(err)
			if st.stopped() {
				return
			}
		}
		if res.Added > 0 {
			r.added(owner)
			r.cp.setSweep(owner, nil) // a sweep under way was for the KEK before: start over
		}
		pending = append([]string{owner}, slices.DeleteFunc(pending, func(o string) bool { return o == owner })...)
	}
	left := r.each(st, len(pending), r.j.opt.Workers, true, func(i int) error {
		return r.sweepOwner(st, pending[i])
	})
	if st.stopped() {
		return
	}
	if left > 0 || (len(pending) > 0 && r.out()) {
		st.outOfBudget()
		return
	}

	olderThan := r.now.Add(-r.j.opt.KEKMaxAge)
	cont := r.cp.kekScan()
	for page := 0; ; page++ {
		if page > 0 && r.out() {
			st.outOfBudget()
			break
		}
		p, err := r.j.keys.Keyrings(r.ctx, cont, r.j.opt.PageSize)
		if err != nil {
			if errors.Is(err, store.ErrInvalid) {
				r.cp.setKEKScan("") // start over next time
			}
			st.fail(err)
			break
		}
		st.do(func(rep *StepReport) {
			rep.Examined += len(p.Owners) + len(p.Corrupt)
			rep.Failed += len(p.Corrupt)
		})
		// Rotate the page's old KEKs, then sweep every owner that has more
		// than one version (the old ones stay until nothing references them).
		var mu sync.Mutex
		var sweep []string
		r.each(st, len(p.Owners), r.j.opt.Workers, false, func(i int) error {
			o := p.Owners[i]
			due := r.unsettled(o.Ring)
			if cur, ok := o.Ring.Current(); ok && cur.Created.Before(olderThan) {
				res, err := r.j.keys.RotateKEK(r.ctx, o.Hash, olderThan)
				st.addKeys(res)
				if errors.Is(err, keyring.ErrNoKeyring) {
					return nil
				}
				if err != nil {
					return err
				}
				if res.Added > 0 {
					r.added(o.Hash)
					due = true
				}
			}
			if due {
				mu.Lock()
				sweep = append(sweep, o.Hash)
				mu.Unlock()
			}
			return nil
		})
		if st.stopped() {
			break
		}
		// Every owner of the page is swept to its end or, when the budget
		// runs out, recorded as a pending sweep: the page is done either way.
		slices.Sort(sweep)
		r.each(st, len(sweep), r.j.opt.Workers, false, func(i int) error {
			return r.sweepOwner(st, sweep[i])
		})
		r.flushHeld(st, false)
		if st.stopped() {
			break
		}
		cont = p.Continuation
		r.cp.setKEKScan(cont)
		r.saveCheckpoint()
		if cont == "" {
			break
		}
	}
	if n := len(r.cp.pendingSweeps()); n > 0 {
		st.do(func(rep *StepReport) { rep.Backlog = n; rep.More = true })
	}
}

// added records that this run gave an owner a new KEK now.
func (r *run) added(owner string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addedAt[owner] = time.Now()
}

// sweepOwner runs (or resumes) an owner's re-encrypt sweep, page by page
// while the budget lasts, then retires the KEK versions nothing references.
func (r *run) sweepOwner(st *stepState, owner string) error {
	sw := r.cp.sweep(owner)
	if sw == nil {
		sw = &ownerSweep{Started: r.now}
	}
	if err := r.settle(owner); err != nil {
		return err
	}
	for page := 0; ; page++ {
		if page > 0 && r.out() {
			r.cp.setSweep(owner, sw)
			st.outOfBudget()
			return nil
		}
		res, err := r.j.vault.ReencryptPage(r.ctx, owner, sw.Continuation, r.j.opt.PageSize)
		st.do(func(rep *StepReport) {
			rep.VersionsExamined += res.Examined
			rep.Reencrypted += res.Reencrypted
			rep.Failed += res.Failed
		})
		r.hold(res.Replaced)
		sw.InUse = union(sw.InUse, res.InUse)
		sw.Uncertain = sw.Uncertain || res.Uncertain > 0
		if errors.Is(err, vault.ErrNotFound) {
			r.cp.setSweep(owner, nil) // erased meanwhile
			return nil
		}
		if err != nil {
			r.cp.setSweep(owner, sw) // this page again, next time
			return err
		}
		if sw.Continuation = res.Continuation; sw.Continuation == "" {
			break
		}
	}
	r.cp.setSweep(owner, nil)
	if sw.Uncertain {
		return nil // a later sweep retires what is left
	}
	res, err := r.j.keys.RetireKEK(r.ctx, owner, set(sw.InUse), sw.Started.Add(-r.j.opt.DestroyAfter))
	st.addKeys(res)
	if errors.Is(err, keyring.ErrNoKeyring) {
		return nil
	}
	return err
}

// settle waits until an owner's newest KEK is Settle old, so that no get
// that read the keyring before it finds a secret under it.
func (r *run) settle(owner string) error {
	var wait time.Duration
	r.mu.Lock()
	at, ok := r.addedAt[owner]
	r.mu.Unlock()
	if ok {
		wait = time.Until(at.Add(r.j.opt.Settle))
	} else if o, err := r.j.keys.Owner(r.ctx, owner); err == nil {
		if cur, ok := o.Ring.Current(); ok {
			wait = r.j.opt.Settle - r.j.opt.Now().Sub(cur.Created)
		}
	}
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(min(wait, r.j.opt.Settle))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
}

// hold queues replaced blobs for deletion Settle from now.
func (r *run) hold(names []string) {
	if len(names) == 0 {
		return
	}
	after := time.Now().Add(r.j.opt.Settle)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range names {
		r.held = append(r.held, heldBlob{name: n, after: after})
	}
}

// flushHeld deletes the held blobs whose Settle has passed; with all, it
// waits for the rest first (unless the run is canceled: they are left to
// garbage collection).
func (r *run) flushHeld(st *stepState, all bool) {
	r.mu.Lock()
	var due []string
	var last time.Time
	keep := r.held[:0]
	for _, h := range r.held {
		if all || !time.Now().Before(h.after) {
			due = append(due, h.name)
			last = h.after
			continue
		}
		keep = append(keep, h)
	}
	r.held = keep
	r.mu.Unlock()
	if len(due) == 0 {
		return
	}
	if wait := time.Until(last); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
			return
		}
	}
	n, _ := r.j.vault.DeleteBlobs(r.ctx, due)
	st.do(func(rep *StepReport) { rep.Collected += n })
}

// garbage is step 4: orphan blobs older than the grace period.
func (r *run) garbage(st *stepState) {
	defer r.flushHeld(st, true)
	olderThan := r.now.Add(-r.j.opt.GarbageGrace)
	cont := r.cp.garbage()
	limit := min(10*r.j.opt.PageSize, 1000)
	for page := 0; ; page++ {
		if page > 0 && r.out() {
			st.outOfBudget()
			return
		}
		res, err := r.j.vault.FindGarbage(r.ctx, cont, limit, olderThan)
		st.do(func(rep *StepReport) {
			rep.Examined += res.Examined
			rep.Failed += res.Failed
		})
		r.hold(res.Orphans)
		r.flushHeld(st, false)
		if err != nil {
			if errors.Is(err, store.ErrInvalid) {
				r.cp.setGarbage("") // a continuation the store no longer takes: start over next time
			}
			st.fail(err)
			return
		}
		cont = res.Continuation
		r.cp.setGarbage(cont)
		r.saveCheckpoint()
		if cont == "" {
			return
		}
	}
}

func sortedKeys[V any](m map[int]V) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
