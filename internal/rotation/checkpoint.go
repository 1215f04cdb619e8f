package rotation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/credvault/credvault/internal/store"
)

// Documents of the job, in the deployment partition.
const (
	CheckpointID = "rotation-checkpoint"
	ReportID     = "rotation-report"
	kindRotation = "rotation"
)

// checkpoint is where the job stopped: the body of the checkpoint document.
// Each part is a consistent snapshot of one step's progress on its own, so
// that two runs at once may each save theirs (the last one wins, part by
// part) without either being wrong: all work is idempotent, a checkpoint
// only saves repeating it.
type checkpoint struct {
	// Domains is step 2's pass over the owner keyrings, while one is under way.
	Domains *domainPass `json:"domains,omitempty"`
	// KEKScan continues step 3's listing of keyrings ("" from the start).
	KEKScan string `json:"kekScan,omitempty"`
	// Sweeps are the owners whose re-encrypt sweep stopped part way.
	Sweeps map[string]*ownerSweep `json:"sweeps,omitempty"`
	// Garbage continues step 4's blob listing ("" from the start).
	Garbage string    `json:"garbage,omitempty"`
	Updated time.Time `json:"updated"`
}

// domainPass is a pass over every owner keyring that re-wraps the KEKs under
// the active domain key versions and records which domain versions are still
// referenced: when it is complete, the others are retired.
type domainPass struct {
	Started      time.Time        `json:"started"`
	Continuation string           `json:"continuation,omitempty"`
	InUse        map[int][]uint32 `json:"inUse,omitempty"` // by domain
	// Blocked: some keyring could not be read, so no version may be retired.
	Blocked bool `json:"blocked,omitempty"`
}

func (p *domainPass) use(d int, versions []uint32) {
	if p.InUse == nil {
		p.InUse = map[int][]uint32{}
	}
	p.InUse[d] = union(p.InUse[d], versions)
}

// ownerSweep is an owner's re-encrypt sweep under way.
type ownerSweep struct {
	Started      time.Time `json:"started"`
	Continuation string    `json:"continuation,omitempty"`
	InUse        []uint32  `json:"inUse,omitempty"` // KEK versions referenced so far
	// Uncertain: some document's state is unknown, so no KEK may be retired.
	Uncertain bool `json:"uncertain,omitempty"`
}

func union(a, b []uint32) []uint32 {
	for _, n := range b {
		if !slices.Contains(a, n) {
			a = append(a, n)
		}
	}
	slices.Sort(a)
	return a
}

func set(vs []uint32) map[uint32]bool {
	m := make(map[uint32]bool, len(vs))
	for _, v := range vs {
		m[v] = true
	}
	return m
}

// checkpoints keeps a run's checkpoint and saves it with compare-and-swap.
// A lost race merges: the parts this run changed are its own, the others
// are the winner's.
type checkpoints struct {
	meta store.Metadata
	now  func() time.Time

	mu      sync.Mutex
	cp      checkpoint
	etag    string // "" until the document exists
	touched map[string]bool
	sweeps  map[string]bool // owners whose sweep this run changed
}

func loadCheckpoint(ctx context.Context, meta store.Metadata, now func() time.Time) (*checkpoints, error) {
	c := &checkpoints{meta: meta, now: now, touched: map[string]bool{}, sweeps: map[string]bool{}}
	it, err := meta.Get(ctx, store.Domains, CheckpointID)
	if errors.Is(err, store.ErrNotFound) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	if err := json.Unmarshal(it.Body, &c.cp); err != nil {
		// A damaged checkpoint only costs repeating work: start over.
		c.cp = checkpoint{}
	}
	c.etag = it.ETag
	return c, nil
}

func (c *checkpoints) domains() *domainPass {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cp.Domains == nil {
		return nil
	}
	p := *c.cp.Domains
	p.InUse = maps.Clone(p.InUse)
	return &p
}

func (c *checkpoints) setDomains(p *domainPass) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p != nil {
		cp := *p
		cp.InUse = maps.Clone(p.InUse)
		p = &cp
	}
	c.cp.Domains, c.touched["domains"] = p, true
}

func (c *checkpoints) kekScan() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cp.KEKScan
}

func (c *checkpoints) setKEKScan(cont string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cp.KEKScan, c.touched["kekScan"] = cont, true
}

// pendingSweeps returns the owners whose sweep stopped part way, in order.
func (c *checkpoints) pendingSweeps() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.cp.Sweeps))
}

func (c *checkpoints) sweep(owner string) *ownerSweep {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.cp.Sweeps[owner]
	if !ok {
		return nil
	}
	cp := *s
	cp.InUse = slices.Clone(s.InUse)
	return &cp
}

// setSweep records an owner's sweep under way; nil: done.
func (c *checkpoints) setSweep(owner string, s *ownerSweep) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweeps[owner] = true
	if s == nil {
		delete(c.cp.Sweeps, owner)
		return
	}
	if c.cp.Sweeps == nil {
		c.cp.Sweeps = map[string]*ownerSweep{}
	}
	cp := *s
	cp.InUse = slices.Clone(s.InUse)
	c.cp.Sweeps[owner] = &cp
}

func (c *checkpoints) garbage() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cp.Garbage
}

func (c *checkpoints) setGarbage(cont string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cp.Garbage, c.touched["garbage"] = cont, true
}

// save writes the checkpoint document.
func (c *checkpoints) save(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for range 20 {
		c.cp.Updated = c.now().UTC()
		body, err := json.Marshal(c.cp)
		if err != nil {
			return err
		}
		it := store.Item{Partition: store.Domains, ID: CheckpointID, Kind: kindRotation, Body: body}
		var etag string
		if c.etag == "" {
			etag, err = c.meta.Create(ctx, it)
		} else {
			etag, err = c.meta.Replace(ctx, it, c.etag)
		}
		if err == nil {
			c.etag = etag
			return nil
		}
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("save checkpoint: %w", err)
		}
		// Another run saved since: keep its parts where this run changed nothing.
		theirs := checkpoint{}
		cur, err := c.meta.Get(ctx, store.Domains, CheckpointID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			c.etag = ""
			continue
		case err != nil:
			return fmt.Errorf("save checkpoint: %w", err)
		}
		_ = json.Unmarshal(cur.Body, &theirs)
		c.etag = cur.ETag
		if !c.touched["domains"] {
			c.cp.Domains = theirs.Domains
		}
		if !c.touched["kekScan"] {
			c.cp.KEKScan = theirs.KEKScan
		}
		if !c.touched["garbage"] {
			c.cp.Garbage = theirs.Garbage
		}
		for owner, s := range theirs.Sweeps {
			if !c.sweeps[owner] {
				if c.cp.Sweeps == nil {
					c.cp.Sweeps = map[string]*ownerSweep{}
				}
				c.cp.Sweeps[owner] = s
			}
		}
		for owner := range c.cp.Sweeps {
			if _, ok := theirs.Sweeps[owner]; !ok && !c.sweeps[owner] {
				delete(c.cp.Sweeps, owner) // finished by the other run
			}
		}
	}
	return fmt.Errorf("save checkpoint: %w", store.ErrConflict)
}

// saveReport writes the last report (the last writer wins).
func saveReport(ctx context.Context, meta store.Metadata, rep Report) error {
	body, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	it := store.Item{Partition: store.Domains, ID: ReportID, Kind: kindRotation, Body: body}
	for range 20 {
		cur, err := meta.Get(ctx, store.Domains, ReportID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			_, err = meta.Create(ctx, it)
		case err == nil:
			_, err = meta.Replace(ctx, it, cur.ETag)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("save report: %w", err)
		}
	}
	return fmt.Errorf("save report: %w", store.ErrConflict)
}

func lastReport(ctx context.Context, meta store.Metadata) (Report, error) {
	it, err := meta.Get(ctx, store.Domains, ReportID)
	if errors.Is(err, store.ErrNotFound) {
		return Report{}, ErrNoReport
	}
	if err != nil {
		return Report{}, fmt.Errorf("rotation: read report: %w", err)
	}
	var rep Report
	if err := json.Unmarshal(it.Body, &rep); err != nil {
		return Report{}, fmt.Errorf("rotation: report document: %w", err)
	}
	return rep, nil
}
