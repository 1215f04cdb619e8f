package identity

import (
	"fmt"
	"log/slog"
	"slices"
)

// Principal kinds.
const (
	KindUser = "user" // a signed-in user (delegated token)
	KindApp  = "app"  // an application acting as itself (app-only token)
)

// Principal is an authenticated caller. Every field comes from a verified
// token; nothing is taken from the request body or path.
type Principal struct {
	// Tenant is the Entra tenant id (tid), a lower-case GUID.
	Tenant string
	// Object is the caller's object id (oid) in that tenant, a lower-case GUID.
	Object string
	// Kind is KindUser or KindApp.
	Kind string
	// Name is a display name for responses (createdBy). It is personal data:
	// never log it. String and LogValue leave it out.
	Name string
	// Roles holds the roles granted by the token, after the role map.
	Roles map[Role]bool
}

// Owner is the caller's owner id: Tenant + "/" + Object. It is a raw owner
// id and must not be logged; the audit trail hashes it.
func (p Principal) Owner() string { return p.Tenant + "/" + p.Object }

// Has reports whether the principal holds role r.
func (p Principal) Has(r Role) bool { return p.Roles[r] }

// RoleList returns the principal's roles, sorted.
func (p Principal) RoleList() []Role {
	rs := make([]Role, 0, len(p.Roles))
	for r, ok := range p.Roles {
		if ok {
			rs = append(rs, r)
		}
	}
	slices.Sort(rs)
	return rs
}

// String describes the principal without its owner id or name.
func (p Principal) String() string {
	return fmt.Sprintf("principal(kind=%s roles=%v)", p.Kind, p.RoleList())
}

// LogValue implements slog.LogValuer: kind and roles only, never the owner
// id or the name.
func (p Principal) LogValue() slog.Value {
	roles := make([]string, 0, len(p.Roles))
	for _, r := range p.RoleList() {
		roles = append(roles, string(r))
	}
	return slog.GroupValue(slog.String("kind", p.Kind), slog.Any("roles", roles))
}
