package identity

import (
	"errors"
	"fmt"
)

// Role is one of credvault's six Entra app roles (or delegated scopes of the
// same name). Routes check roles; nothing else grants access.
type Role string

// The six roles. Their string values are the app-role and scope values
// registered in Entra, so the default role map is the identity mapping.
const (
	// CredentialsRead reads the caller's own secrets and their metadata.
	CredentialsRead Role = "Credentials.Read"
	// CredentialsWrite writes new versions of the caller's own secrets.
	CredentialsWrite Role = "Credentials.Write"
	// CredentialsDelete deletes, restores and purges the caller's own secrets.
	CredentialsDelete Role = "Credentials.Delete"
	// CredentialsAdmin lists every owner's metadata, purges and crypto-shreds
	// an owner; it never reads values.
	CredentialsAdmin Role = "Credentials.Admin"
	// KeysRotate runs and inspects key rotation.
	KeysRotate Role = "Keys.Rotate"
	// AuditRead turns an owner or name into its audit hash.
	AuditRead Role = "Audit.Read"
)

// ErrUnknownRole: a configured role name is not one of the six roles.
var ErrUnknownRole = errors.New("identity: unknown role")

// AllRoles returns the six roles in a fixed order. The slice is the caller's.
func AllRoles() []Role {
	return []Role{CredentialsRead, CredentialsWrite, CredentialsDelete, CredentialsAdmin, KeysRotate, AuditRead}
}

// ParseRole returns the role named exactly s (case-sensitive, as Entra
// compares app-role values). It is meant for configuration and command-line
// input; token claims go through the verifier's role map instead.
func ParseRole(s string) (Role, error) {
	if r := Role(s); r.valid() {
		return r, nil
	}
	return "", fmt.Errorf("parse role %q: %w", s, ErrUnknownRole)
}

func (r Role) valid() bool {
	switch r {
	case CredentialsRead, CredentialsWrite, CredentialsDelete, CredentialsAdmin, KeysRotate, AuditRead:
		return true
	}
	return false
}

// String returns the role's Entra value.
func (r Role) String() string { return string(r) }

// defaultRoleMap maps each role's Entra value to itself.
func defaultRoleMap() map[string]Role {
	m := make(map[string]Role, 6)
	for _, r := range AllRoles() {
		m[string(r)] = r
	}
	return m
}
