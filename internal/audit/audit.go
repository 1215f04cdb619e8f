// Package audit is credvault's tamper-evident audit trail: one record per
// secret access, key operation, authentication failure and authorization
// denial, hash-chained, written durably through a Store in group commits,
// with owner, caller and secret name as HMAC-SHA256 under the audit key.
// docs/audit.md specifies the record format and the chain.
package audit

import (
	"context"
	"errors"
	"io"
	"time"
)

// Operations recorded.
const (
	OpSecretRead     = "secret.read"
	OpSecretWrite    = "secret.write"
	OpSecretList     = "secret.list"
	OpSecretVersions = "secret.versions"
	OpSecretDelete   = "secret.delete"
	OpSecretRestore  = "secret.restore"
	OpSecretPurge    = "secret.purge"
	OpAdminList      = "admin.list"
	OpOwnerErase     = "owner.erase"
	OpAuditHash      = "audit.hash"
	OpAuthenticate   = "auth.authenticate" // recorded when authentication fails
	OpAuthorize      = "auth.authorize"    // recorded when a role is missing
	OpCMKWrap        = "cmk.wrap"
	OpCMKUnwrap      = "cmk.unwrap"
	OpRotation       = "rotation.run"    // a run of the rotation job
	OpRotationReport = "rotation.report" // the last run's report read
	OpRotateCMK      = "rotation.cmk"    // a domain re-wrapped under the current CMK version
	OpRotateDomain   = "rotation.domain" // a domain key version added, or retired
	OpRotateKEK      = "rotation.kek"    // an owner KEK version added
	OpReencrypt      = "rotation.sweep"  // secret versions re-encrypted under the active KEK
	OpGarbage        = "rotation.garbage"
)

// Outcomes.
const (
	Success = "success" // done
	Failure = "failure" // refused for the request's own reason: not found, conflict, invalid (4xx)
	Denied  = "denied"  // authentication failed or a role is missing (401, 403)
	Error   = "error"   // the service failed (5xx)
)

// Principal types.
const (
	PrincipalUser   = "user"
	PrincipalApp    = "app"
	PrincipalSystem = "system" // the rotation timer
)

// Event is what a caller reports; Record hashes the raw identifiers with the
// audit key, then writes a Record. Owner, Caller and Name are raw and are
// never written, logged or sent anywhere.
type Event struct {
	Time        time.Time // default: the trail's clock
	Op          string
	Outcome     string
	Status      int      // HTTP status; 0 where there is none
	Principal   string   // PrincipalUser, PrincipalApp, PrincipalSystem, or "" (unauthenticated)
	Roles       []string // the roles the operation used
	Correlation string   // the request's correlation id
	Version     uint64   // secret version, when one is involved
	KEK         uint32   // owner KEK version, when one is involved
	CMK         string   // CMK key version, when one is involved
	Subject     string   // a non-personal reference: "domain-0003", an owner's storage hash
	Count       int      // what a step touched (versions re-encrypted, blobs deleted…)
	Reason      string   // a failure's class ("not found", "unavailable"…), never request data

	Owner  string // raw owner id (tenant/object): hashed
	Caller string // raw caller id (tenant/object): hashed
	Name   string // secret name: hashed
}

// Errors.
var (
	// ErrUnavailable: the trail could not make a record durable. In closed
	// mode the request it belongs to must release nothing (HTTP 503).
	ErrUnavailable = errors.New("audit trail unavailable")
	// ErrCorrupt: verify found a broken chain.
	ErrCorrupt = errors.New("audit trail broken")
)

// Modes (CREDVAULT_AUDIT_MODE).
const (
	Closed = "closed" // Record returns only once the record is durable; failures fail the request
	Open   = "open"   // Record queues; failures are counted, logged and sent as telemetry
)

// Store keeps the trail's segments: append-only logs of JSON lines, named
// by the trail (DESIGN §7: files in the data dir, append blobs in Azure).
type Store interface {
	// Append appends data (whole lines) to segment, creating the segment when
	// it does not exist yet. When it returns nil the data is durable. After
	// an error the trail never appends to that segment again.
	Append(ctx context.Context, segment string, data []byte) error
}

// Reader lists and reads the segments of a trail, for Verify.
type Reader interface {
	Segments(ctx context.Context) ([]string, error) // every segment name, in any order
	Open(ctx context.Context, segment string) (io.ReadCloser, error)
}

// KeySource gives the audit key: 256 bits created on first start, wrapped
// under the CMK, stored in the metadata store like a keyring.
type KeySource interface {
	AuditKey(ctx context.Context) (key []byte, version uint32, err error)
}
