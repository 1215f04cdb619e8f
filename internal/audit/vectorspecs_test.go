package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The people and keys of the vectors: a tenant, its user Alice, an admin
// and a CMK key version. Made up.
const (
	vecTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	vecAlice  = vecTenant + "/0e2c4a6b-8d1f-4b3a-9c5e-7f2a1b3c4d5e"
	vecAdmin  = vecTenant + "/9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
	vecCMK    = "4f9c2b7e1d8a4c3b9e6f0a1b2c3d4e5f"
)

// vectorSpecs are the inputs of the frozen vectors. Changing one changes a
// frozen file: TestVectors then fails until the file is deleted on purpose.
func vectorSpecs() []vectorSpec {
	spec := func(name, comment string, fails map[int]failMode, events ...vectorEvent) vectorSpec {
		if fails == nil {
			fails = map[int]failMode{}
		}
		return vectorSpec{name: name, comment: comment, key: testKey(), keyVersion: 1, log: vectorLog, fails: fails, events: events}
	}
	corr := func(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }
	read := func(n int, at string) vectorEvent {
		return vectorEvent{Time: at, Op: OpSecretRead, Outcome: Success, Status: 200, Principal: PrincipalUser,
			Roles: []string{"Credentials.Read"}, Correlation: corr(n), Version: 1, KEK: 1,
			Owner: vecAlice, Caller: vecAlice, Name: "github-token"}
	}
	return []vectorSpec{
		spec(workedName, "one segment: a write, a read, a refused write, a failed authentication, an erasure, a CMK re-wrap", nil,
			vectorEvent{Time: "2026-03-01T09:15:00.000000001Z", Op: OpSecretWrite, Outcome: Success, Status: 201, Principal: PrincipalUser,
				Roles: []string{"Credentials.Write"}, Correlation: corr(1), Version: 1, KEK: 1,
				Owner: vecAlice, Caller: vecAlice, Name: "github-token"},
			read(2, "2026-03-01T09:15:00.25Z"),
			vectorEvent{Time: "2026-03-01T09:15:01Z", Op: OpSecretWrite, Outcome: Failure, Status: 412, Principal: PrincipalUser,
				Roles: []string{"Credentials.Write"}, Correlation: corr(3),
				Reason: `precondition failed: If-Match "1" <> 2 & más`, // pins JSON escaping: <, >, &, quotes, non-ASCII
				Owner:  vecAlice, Caller: vecAlice, Name: "github-token"},
			vectorEvent{Time: "2026-03-01T09:15:02.5Z", Op: OpAuthenticate, Outcome: Denied, Status: 401, Correlation: corr(4), Reason: "unauthenticated"},
			vectorEvent{Time: "2026-03-01T09:16:00Z", Op: OpOwnerErase, Outcome: Success, Status: 200, Principal: PrincipalUser,
				Roles: []string{"Credentials.Admin"}, Correlation: corr(5), Count: 3, Owner: vecAlice, Caller: vecAdmin},
			vectorEvent{Time: "2026-03-01T09:30:00Z", Op: OpRotateCMK, Outcome: Success, Principal: PrincipalSystem,
				Correlation: corr(6), CMK: vecCMK, Subject: "domain-0003", Count: 1},
		),
		spec("ok-hour-rotation.txt", "a new UTC hour starts a new segment, which continues the last one", nil,
			read(1, "2026-03-01T09:59:59.5Z"),
			read(2, "2026-03-01T10:00:00.1Z"),
			read(3, "2026-03-01T10:00:01Z"),
		),
		spec("ok-failed-append-lost.txt", "append 2 fails and writes nothing: its record is lost (Record returned an error), the next segment continues from record 1",
			map[int]failMode{2: failLost},
			read(1, "2026-03-01T09:15:00Z"),
			read(2, "2026-03-01T09:15:01Z"),
			read(3, "2026-03-01T09:15:02Z"),
		),
		spec("ok-failed-append-written.txt", "append 2 fails after its record was written (a lost response): that record is a tail, the next segment continues from record 1",
			map[int]failMode{2: failWritten},
			read(1, "2026-03-01T09:15:00Z"),
			read(2, "2026-03-01T09:15:01Z"),
			read(3, "2026-03-01T09:15:02Z"),
		),
		spec("ok-failed-first-append.txt", "the log's first append fails and writes nothing: segment 000000 never exists, segment 000001 starts the chain",
			map[int]failMode{1: failLost},
			read(1, "2026-03-01T09:15:00Z"),
			read(2, "2026-03-01T09:15:01Z"),
		),
	}
}

func sha256hex(line string) string {
	s := sha256.Sum256([]byte(line))
	return hex.EncodeToString(s[:])
}

// independentHMAC computes an identity hash as docs/audit.md writes it out.
func independentHMAC(key []byte, label, raw string) string {
	if raw == "" {
		return ""
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("credvault/v1 audit " + label + "\x00" + raw))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// TestAuditDocWorkedVector checks that docs/audit.md shows the worked
// vector's file verbatim.
func TestAuditDocWorkedVector(t *testing.T) {
	doc := readDoc(t)
	vec, err := os.ReadFile(filepath.Join(vectorsDir, workedName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte("```text\n"+string(vec)+"```\n")) {
		t.Fatalf("%s does not show %s verbatim in a ```text block", auditDoc, workedName)
	}
}

// TestAuditDocIntermediates checks the worked example's intermediate values
// that docs/audit.md shows: the HMAC inputs and outputs of its first record,
// and the hash that the second record's prev holds.
func TestAuditDocIntermediates(t *testing.T) {
	doc := readDoc(t)
	want := workedIntermediates(t)
	if !bytes.Contains(doc, want) {
		t.Fatalf("%s does not show the worked vector's intermediate values; want this block:\n%s", auditDoc, want)
	}
}

func readDoc(t *testing.T) []byte {
	t.Helper()
	doc, err := os.ReadFile(auditDoc)
	if err != nil {
		t.Fatalf("read the audit spec: %v", err)
	}
	return doc
}

func workedIntermediates(t *testing.T) []byte {
	t.Helper()
	v := readVector(t, filepath.Join(vectorsDir, workedName))
	s := v.spec(t)
	first := s.events[0]
	line1 := v.all("segment")[0].more[0]
	var b strings.Builder
	b.WriteString("```text\n")
	for _, id := range []struct{ label, raw string }{{"owner", first.Owner}, {"caller", first.Caller}, {"name", first.Name}} {
		in := hashContext + id.label + "\x00" + id.raw
		fmt.Fprintf(&b, "%-14s %q\n", id.label+" input:", in)
		fmt.Fprintf(&b, "%-14s %x\n", id.label+" hmac:", hmacFull(s.key, in))
		fmt.Fprintf(&b, "%-14s %s\n", id.label+":", independentHMAC(s.key, id.label, id.raw))
	}
	fmt.Fprintf(&b, "%-14s %s\n", "line 1 sha256:", sha256hex(line1))
	b.WriteString("```\n")
	return []byte(b.String())
}

func hmacFull(key []byte, in string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(in))
	return m.Sum(nil)
}
