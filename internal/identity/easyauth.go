package identity

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Easy Auth (App Service Authentication) constants.
const (
	// PrincipalHeader is the header App Service Authentication sets on each
	// authenticated request (and strips from incoming requests): base64 of
	// a JSON client principal.
	PrincipalHeader = "X-MS-CLIENT-PRINCIPAL"
	// MaxPrincipalSize bounds the header value, in bytes. A principal with
	// many group claims takes a few KiB; the handler's server refuses header
	// blocks above 64 KiB anyway.
	MaxPrincipalSize = 32 << 10
)

// Claim types of Microsoft Entra principals, long (WS-Federation) and short
// (JWT) forms.
const (
	claimTenantURI = "http://schemas.microsoft.com/identity/claims/tenantid"
	claimObjectURI = "http://schemas.microsoft.com/identity/claims/objectidentifier"
	claimScopeURI  = "http://schemas.microsoft.com/identity/claims/scope"
	claimRoleURI   = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
	claimNameIDURI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"
)

// EasyAuthOptions configures an Easy Auth authenticator.
type EasyAuthOptions struct {
	// PlatformEnabled must be true: the platform says App Service
	// Authentication is on (WEBSITE_AUTH_ENABLED=True), so it strips the
	// principal header from what callers send. Without it anyone could
	// send the header.
	PlatformEnabled bool
	// Tenants lists the tenant ids (GUIDs) whose principals are accepted;
	// at least one.
	Tenants []string
	// RoleMap maps role and scope claim values to roles; nil means the six
	// role names map to themselves.
	RoleMap map[string]Role
}

// EasyAuth takes the caller from the X-MS-CLIENT-PRINCIPAL header that App
// Service Authentication sets after validating the caller's token itself.
// Only Microsoft Entra principals ("aad") of an allowed tenant are accepted;
// owner = tid/oid from the principal's claims.
type EasyAuth struct {
	tenants map[string]bool
	roleMap map[string]Role
}

var _ Authenticator = (*EasyAuth)(nil)

// NewEasyAuth checks o and returns an Easy Auth authenticator.
func NewEasyAuth(o EasyAuthOptions) (*EasyAuth, error) {
	if !o.PlatformEnabled {
		return nil, errors.New("identity: easyauth: the platform does not say App Service Authentication is on")
	}
	if len(o.Tenants) == 0 {
		return nil, errors.New("identity: easyauth options: no allowed tenant")
	}
	a := &EasyAuth{tenants: make(map[string]bool, len(o.Tenants)), roleMap: defaultRoleMap()}
	for _, tid := range o.Tenants {
		if !isGUID(tid) {
			return nil, fmt.Errorf("identity: easyauth options: tenant %q is not a GUID", tid)
		}
		a.tenants[strings.ToLower(tid)] = true
	}
	if o.RoleMap != nil {
		a.roleMap = make(map[string]Role, len(o.RoleMap))
		for claim, r := range o.RoleMap {
			if !r.valid() {
				return nil, fmt.Errorf("identity: easyauth options: role map %q: %w", claim, ErrUnknownRole)
			}
			a.roleMap[claim] = r
		}
	}
	return a, nil
}

// clientPrincipal is the JSON of X-MS-CLIENT-PRINCIPAL.
type clientPrincipal struct {
	AuthType string `json:"auth_typ"`
	NameType string `json:"name_typ"`
	RoleType string `json:"role_typ"`
	Claims   []struct {
		Type  string `json:"typ"`
		Value string `json:"val"`
	} `json:"claims"`
}

// Authenticate reads the single X-MS-CLIENT-PRINCIPAL header. No header is
// ErrNoCredentials; anything else that is not an allowed Entra principal
// wraps ErrInvalidToken. The Authorization header is not read: the platform
// has validated it.
func (a *EasyAuth) Authenticate(_ context.Context, h http.Header) (Principal, error) {
	vals := h.Values(PrincipalHeader)
	switch {
	case len(vals) == 0:
		return Principal{}, ErrNoCredentials
	case len(vals) > 1:
		return Principal{}, fmt.Errorf("%w: more than one principal header", ErrMalformed)
	}
	cp, err := parsePrincipalHeader(vals[0])
	if err != nil {
		return Principal{}, err
	}
	return a.principal(cp)
}

// parsePrincipalHeader decodes the header value: standard base64 (padded)
// of one JSON object whose claim values are strings.
func parsePrincipalHeader(v string) (clientPrincipal, error) {
	var cp clientPrincipal
	if v == "" {
		return cp, fmt.Errorf("%w: empty principal header", ErrMalformed)
	}
	if len(v) > MaxPrincipalSize {
		return cp, fmt.Errorf("%w: principal header larger than %d bytes", ErrMalformed, MaxPrincipalSize)
	}
	raw, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return cp, fmt.Errorf("%w: principal header is not base64", ErrMalformed)
	}
	if !isJSONObject(raw) || json.Unmarshal(raw, &cp) != nil {
		return cp, fmt.Errorf("%w: principal header is not a client principal JSON object", ErrMalformed)
	}
	return cp, nil
}

// principal checks the client principal and builds the Principal.
func (a *EasyAuth) principal(cp clientPrincipal) (Principal, error) {
	if cp.AuthType != "aad" {
		return Principal{}, fmt.Errorf("%w: identity provider is not Microsoft Entra", ErrIssuer)
	}
	roleType := cp.RoleType
	if roleType == "" {
		roleType = claimRoleURI
	}
	var tid, oid, idtyp, sub, name, fallbackName string
	hasScp := false
	roles := make(map[Role]bool)
	// one sets *dst to v, refusing a second, different value.
	one := func(dst *string, v, what string) error {
		if *dst != "" && !strings.EqualFold(*dst, v) {
			return fmt.Errorf("%w: conflicting %s claims", ErrClaims, what)
		}
		*dst = v
		return nil
	}
	for _, c := range cp.Claims {
		var err error
		switch c.Type {
		case claimTenantURI, "tid":
			err = one(&tid, c.Value, "tid")
		case claimObjectURI, "oid":
			err = one(&oid, c.Value, "oid")
		case "idtyp":
			idtyp = c.Value
		case "sub", claimNameIDURI:
			sub = c.Value
		case roleType, "roles":
			if r, ok := a.roleMap[c.Value]; ok {
				roles[r] = true
			}
		case "scp", claimScopeURI:
			hasScp = true
			for _, f := range strings.Fields(c.Value) {
				if r, ok := a.roleMap[f]; ok {
					roles[r] = true
				}
			}
		}
		if err != nil {
			return Principal{}, err
		}
		switch {
		case c.Type == cp.NameType && cp.NameType != "" && name == "":
			name = c.Value
		case (c.Type == "name" || c.Type == "preferred_username") && fallbackName == "":
			fallbackName = c.Value
		}
	}
	if !isGUID(tid) {
		return Principal{}, fmt.Errorf("%w: tid", ErrClaims)
	}
	if !isGUID(oid) {
		return Principal{}, fmt.Errorf("%w: oid", ErrClaims)
	}
	tid, oid = strings.ToLower(tid), strings.ToLower(oid)
	if !a.tenants[tid] {
		return Principal{}, ErrTenant
	}
	p := Principal{Tenant: tid, Object: oid, Kind: KindUser, Name: cmp.Or(name, fallbackName), Roles: roles}
	if appOnly(idtyp, sub, oid, hasScp) {
		p.Kind = KindApp
	}
	return p, nil
}
