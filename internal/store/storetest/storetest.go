// Package storetest is the contract suite of the store ports. Every adapter's
// own test file runs it, so each adapter is held to the same claims:
//
//	func TestBlobsContract(t *testing.T) { storetest.TestBlobs(t, openBlobs) }
//
// The suite tests only what the ports in package store promise. Every subtest
// uses names (blob names, partitions, kinds) no other subtest or run uses, so
// it can run against a shared backend such as an emulator that keeps data
// between runs; it does not clean up after itself beyond what it deletes as
// part of a claim.
package storetest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// runID returns a short random token that makes a test run's names unique.
func runID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// unique returns a name prefix for the running subtest: the suite, a random
// run token and the subtest's own name, safe for blob names, partitions,
// document ids and kinds.
func unique(t *testing.T, suite string) string {
	t.Helper()
	name := t.Name()
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	return "storetest-" + suite + "-" + runID() + "-" + strings.ToLower(name)
}

// jsonEqual reports whether a and b hold the same JSON value.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("body %q is not JSON: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("body %q is not JSON: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}
