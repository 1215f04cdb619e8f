package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/credvault/credvault/internal/identity"
)

// canaries are the things no log line, telemetry item or audit record may
// hold: every secret value stored, every bearer token, every raw owner id
// and the keys the service unwrapped. Every testEnv collects them as its
// test runs and checks everything its service emitted when it closes, so
// the whole HTTP suite (rotation over HTTP included) is the canary test.
type canaries struct {
	mu   sync.Mutex
	what map[string]string // secret → what it is
}

// minCanary: shorter values ("v1", 42) occur by chance in hashes and ids.
const minCanary = 6

func (c *canaries) add(what, secret string) {
	if len(secret) < minCanary {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.what == nil {
		c.what = map[string]string{}
	}
	c.what[secret] = what
}

func (c *canaries) addBytes(what string, b []byte) {
	if len(b) >= minCanary {
		c.add(what, string(b))
	}
}

// addValue adds a stored secret value: its JSON and every string in it.
func (c *canaries) addValue(v any) {
	if b, err := json.Marshal(v); err == nil && string(b) != "null" {
		c.add("a secret value", string(b))
	}
	switch x := v.(type) {
	case string:
		c.add("a secret value", x)
	case map[string]any:
		for _, e := range x {
			c.addValue(e)
		}
	case []any:
		for _, e := range x {
			c.addValue(e)
		}
	}
}

// forms are the encodings a leak could take.
func forms(s string) []string {
	b := []byte(s)
	return []string{s, base64.StdEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b), hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b))}
}

// check returns a description of each canary found in text.
func (c *canaries) check(where, text string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var found []string
	for secret, what := range c.what {
		for _, f := range forms(secret) {
			if len(f) >= minCanary && strings.Contains(text, f) {
				found = append(found, fmt.Sprintf("%s holds %s", where, what))
				break
			}
		}
	}
	return found
}

// noteUser records the raw ids of a dev user.
func (c *canaries) noteUser(user string) {
	c.add("a raw owner id", ownerOf(user))
	c.add("a raw object id", identity.DevObjectID(user))
}

// noteRequest records what a request carries that must not leak.
func (c *canaries) noteRequest(tok string, body any) {
	if tok != "" {
		c.add("a bearer token", tok)
	}
	var v map[string]any
	switch b := body.(type) {
	case map[string]any:
		v = b
	case string:
		json.Unmarshal([]byte(b), &v)
	case []byte:
		json.Unmarshal(b, &v)
	}
	if val, ok := v["value"]; ok {
		c.addValue(val)
	}
	if owner, ok := v["owner"].(string); ok {
		c.add("a raw owner id", owner)
	}
}

// noteKeys adds the keys the running service holds.
func (e *testEnv) noteKeys() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if key, _, err := e.app.keys.AuditKey(ctx); err == nil {
		e.canaries.addBytes("the audit key", key)
		clear(key)
	}
}

// checkEmitted scans what the service emitted: its log lines, its audit
// trail and the telemetry it sent.
func (e *testEnv) checkEmitted() {
	var found []string
	found = append(found, e.canaries.check("a log line", e.logs.String())...)
	segs, err := e.readAuditSegments()
	if err != nil {
		e.t.Logf("the audit trail was not checked for leaks: %v", err) // a test that made the store unreachable
	}
	for name, b := range segs {
		found = append(found, e.canaries.check("audit segment "+name, string(b))...)
	}
	if e.ingest != nil {
		for _, it := range e.ingest.Items() {
			found = append(found, e.canaries.check("a telemetry item ("+it.Name+")", string(it.Raw))...)
		}
	}
	for _, f := range found {
		e.t.Errorf("leak: %s", f)
	}
}
