package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/credvault/credvault/internal/identity"
)

type stepReport struct {
	Step                                    string
	Examined, Added, Rewrapped, Reencrypted int
	KeyVaultCalls                           int
}

type report struct {
	Complete bool
	Steps    []stepReport
}

func (r report) step(name string) stepReport {
	for _, s := range r.Steps {
		if s.Step == name {
			return s
		}
	}
	return stepReport{}
}

// rotateCMK adds a CMK version, as Key Vault's rotation policy (or
// `handler rotate-cmk` locally) does, and returns the old key id.
func (e *testEnv) rotateCMK() string {
	e.t.Helper()
	if e.kv != nil {
		old := e.kid
		e.kid = e.kv.Rotate("credvault-cmk")
		return old
	}
	old := e.app.localCMK.Current()
	if _, err := e.app.localCMK.Rotate(); err != nil {
		e.t.Fatal(err)
	}
	return old
}

// TestTimerInvocationAsTheHostSendsIt posts the documented timer payload to
// POST /rotate as the Functions host does, and reads the report back.
func TestTimerInvocationAsTheHostSendsIt(t *testing.T) {
	e := start(t)
	e.do("PUT", "/api/credentials/a", e.token("alice"), `{"value":"v"}`)
	payload, err := os.ReadFile("testdata/timer-invocation.json")
	if err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/rotate", "", payload, "X-Azure-Functions-InvocationId", "2b6c0e1c-4f3e-4a5b-8c9d-0e1f2a3b4c5d")
	wantStatus(t, "timer invocation", r, 200)
	var out struct {
		Outputs     map[string]any
		Logs        []string
		ReturnValue report
	}
	decode(t, r.body, &out)
	if len(out.Logs) != 1 || !strings.Contains(out.Logs[0], "rotation complete=") || len(out.ReturnValue.Steps) != 4 {
		t.Fatalf("invocation answer %s, want one log line and the report", r.body)
	}
	last := e.do("GET", "/api/admin/rotate", e.token("ops", identity.KeysRotate), nil)
	wantStatus(t, "last report", last, 200)
	var rep report
	decode(t, last.body, &rep)
	if len(rep.Steps) != 4 {
		t.Fatalf("last report %s", last.body)
	}
	if !strings.Contains(e.logs.String(), `"invocation_id":"2b6c0e1c-4f3e-4a5b-8c9d-0e1f2a3b4c5d"`) {
		t.Error("the host's invocation id is not logged")
	}
	wantProblem(t, "timer invocation with a bad body", e.do("POST", "/rotate", "", "{"), 400)
}

// TestCMKRotationOverHTTP: after the CMK gets a new version, one run
// re-wraps the domain keys under it (two CMK calls per domain in use) and
// every secret still opens once the old version is disabled.
func TestCMKRotationOverHTTP(t *testing.T) {
	e := start(t)
	ops := e.token("ops", identity.KeysRotate)
	for i := range 20 {
		e.do("PUT", "/api/credentials/s", e.token(fmt.Sprint("user-", i)), fmt.Sprintf(`{"value":%d}`, i))
	}
	old := e.rotateCMK()
	r := e.do("POST", "/api/admin/rotate", ops, `{"steps":["cmk"]}`)
	wantStatus(t, "rotate now", r, 200)
	var rep report
	decode(t, r.body, &rep)
	cmk := rep.step("cmk")
	if cmk.Rewrapped == 0 || cmk.KeyVaultCalls > 2*cmk.Examined || cmk.KeyVaultCalls != 2*cmk.Rewrapped {
		t.Fatalf("cmk step %+v: want every domain version re-wrapped with two CMK calls each", cmk)
	}
	// The old CMK version is revoked; a new instance (cold cache) reads all.
	if e.kv != nil {
		if err := e.kv.SetEnabled(old, false); err != nil {
			t.Fatal(err)
		}
	} else if err := e.app.localCMK.SetEnabled(old, false); err != nil {
		t.Fatal(err)
	}
	e.restart()
	for i := range 20 {
		g := e.do("GET", "/api/credentials/s", e.token(fmt.Sprint("user-", i)), nil)
		if g.status != 200 || !strings.Contains(string(g.body), fmt.Sprintf(`"value":%d`, i)) {
			t.Fatalf("user-%d after CMK rotation: %d %s", i, g.status, g.body)
		}
	}
}

// TestOwnerKEKRotationOnDemand rotates one owner's KEK for an incident and
// re-encrypts that owner's versions; others are untouched.
func TestOwnerKEKRotationOnDemand(t *testing.T) {
	e := start(t)
	alice, bob := e.token("alice"), e.token("bob")
	for i := range 3 {
		e.do("PUT", "/api/credentials/a", alice, fmt.Sprintf(`{"value":"alice-%d"}`, i))
	}
	e.do("PUT", "/api/credentials/b", bob, `{"value":"bob"}`)
	body, _ := json.Marshal(map[string]any{"owner": ownerOf("alice"), "steps": []string{"kek"}})
	r := e.do("POST", "/api/admin/rotate", e.token("ops", identity.KeysRotate), body)
	wantStatus(t, "rotate alice's KEK", r, 200)
	var rep report
	decode(t, r.body, &rep)
	if k := rep.step("kek"); k.Added != 1 || k.Reencrypted != 3 || k.KeyVaultCalls != 0 {
		t.Fatalf("kek step %+v: want one new KEK, alice's 3 versions re-encrypted, no Key Vault call", k)
	}
	for i := range 3 {
		g := e.do("GET", fmt.Sprintf("/api/credentials/a?version=%d", i+1), alice, nil)
		if !strings.Contains(string(g.body), fmt.Sprintf("alice-%d", i)) {
			t.Fatalf("alice version %d after re-encryption: %s", i+1, g.body)
		}
	}
	if g := e.do("GET", "/api/credentials/b", bob, nil); !strings.Contains(string(g.body), "bob") {
		t.Fatalf("bob after alice's rotation: %s", g.body)
	}
	for _, c := range []struct {
		body string
		want int
	}{
		{`{"steps":["everything"]}`, 400},
		{`{"owner":"nobody/at-all"}`, 404},
		{`{"owner":1}`, 400},
	} {
		wantProblem(t, "rotate "+c.body, e.do("POST", "/api/admin/rotate", e.token("ops", identity.KeysRotate), c.body), c.want)
	}
	wantProblem(t, "rotate without Keys.Rotate", e.do("POST", "/api/admin/rotate", e.token("ops", identity.CredentialsAdmin), `{}`), 403)
}
