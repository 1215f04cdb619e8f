package identity

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// principalVector is one file of testdata/easyauth: a header value and the
// outcome its name promises.
type principalVector struct {
	file  string
	class string // ok, malformed, claims, tenant, issuer
	value string
}

var principalClasses = map[string]error{
	"malformed": ErrMalformed,
	"claims":    ErrClaims,
	"tenant":    ErrTenant,
	"issuer":    ErrIssuer,
}

// readPrincipalVectors reads testdata/easyauth: a .json file is a decoded
// principal, base64-encoded here as the platform does; a .txt file is a
// header value as it is.
func readPrincipalVectors(t testing.TB) []principalVector {
	t.Helper()
	paths, err := filepath.Glob("testdata/easyauth/*.*")
	if err != nil {
		t.Fatal(err)
	}
	var vs []principalVector
	for _, p := range paths {
		name := filepath.Base(p)
		ext := filepath.Ext(name)
		if ext != ".json" && ext != ".txt" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		class, _, _ := strings.Cut(name, "-")
		if _, known := principalClasses[class]; !known && class != "ok" {
			t.Fatalf("%s: unknown class %q", p, class)
		}
		v := strings.TrimSuffix(string(b), "\n")
		if ext == ".json" {
			v = base64.StdEncoding.EncodeToString([]byte(v))
		}
		vs = append(vs, principalVector{file: name, class: class, value: v})
	}
	if len(vs) < 20 {
		t.Fatalf("testdata/easyauth holds %d vectors, want at least 20", len(vs))
	}
	return vs
}

func newEasyAuth(t testing.TB) *EasyAuth {
	t.Helper()
	a, err := NewEasyAuth(EasyAuthOptions{PlatformEnabled: true, Tenants: []string{strings.ToUpper(testTenant)}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func principalHeader(v string) http.Header {
	h := http.Header{}
	h.Set(PrincipalHeader, v)
	return h
}

func TestEasyAuthVectors(t *testing.T) {
	const appOID = "0d4b2f7e-9c1a-4e3b-8f5d-6a7b8c9d0e1f"
	want := map[string]struct {
		object string
		kind   string
		name   string
		roles  []Role
	}{
		"ok-user-roles.json":    {testOID, KindUser, "Ada Lovelace", []Role{CredentialsRead, CredentialsWrite}},
		"ok-user-scp.json":      {testOID, KindUser, "Ada Lovelace", []Role{CredentialsDelete, CredentialsRead}},
		"ok-user-no-roles.json": {testOID, KindUser, "Ada Lovelace", nil},
		"ok-app-role-typ.json":  {appOID, KindApp, "", []Role{AuditRead, KeysRotate}},
	}
	a := newEasyAuth(t)
	seen := 0
	for _, vec := range readPrincipalVectors(t) {
		t.Run(vec.file, func(t *testing.T) {
			p, err := a.Authenticate(context.Background(), principalHeader(vec.value))
			if vec.class != "ok" {
				if wantErr := principalClasses[vec.class]; !errors.Is(err, wantErr) || !errors.Is(err, ErrInvalidToken) {
					t.Fatalf("error = %v, want %v", err, wantErr)
				}
				for _, s := range []string{testTenant, testOID, "Ada", vec.value[:min(len(vec.value), 24)]} {
					if strings.Contains(err.Error(), s) {
						t.Fatalf("error %q repeats %q from the header", err, s)
					}
				}
				return
			}
			w, ok := want[vec.file]
			if !ok {
				t.Fatalf("no expectation for %s", vec.file)
			}
			seen++
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if got := p.Owner(); got != testTenant+"/"+w.object {
				t.Errorf("owner = %q, want %q", got, testTenant+"/"+w.object)
			}
			if p.Kind != w.kind || p.Name != w.name {
				t.Errorf("kind, name = %q, %q; want %q, %q", p.Kind, p.Name, w.kind, w.name)
			}
			if got := p.RoleList(); !slices.Equal(got, w.roles) && len(got)+len(w.roles) > 0 {
				t.Errorf("roles = %v, want %v", got, w.roles)
			}
		})
	}
	if seen != len(want) {
		t.Errorf("%d ok vectors found, want %d", seen, len(want))
	}
}

func TestEasyAuthHeaderShape(t *testing.T) {
	a := newEasyAuth(t)
	good, err := os.ReadFile("testdata/easyauth/ok-user-roles.json")
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.StdEncoding.EncodeToString(good)
	for _, tt := range []struct {
		name   string
		values []string // nil: no header
		bearer bool     // also send an Authorization header
		want   error    // nil: accepted
	}{
		{"one header", []string{enc}, false, nil},
		{"no header", nil, false, ErrNoCredentials},
		{"no header, a bearer token instead", nil, true, ErrNoCredentials},
		{"empty header", []string{""}, false, ErrMalformed},
		{"two headers", []string{enc, enc}, false, ErrMalformed},
		{"oversized", []string{base64.StdEncoding.EncodeToString([]byte(`{"auth_typ":"aad","pad":"` + strings.Repeat("x", MaxPrincipalSize) + `"}`))}, false, ErrMalformed},
		{"surrounding space", []string{" " + enc + " "}, false, ErrMalformed},
	} {
		h := http.Header{}
		for _, v := range tt.values {
			h.Add(PrincipalHeader, v)
		}
		if tt.bearer {
			h.Set("Authorization", "Bearer "+goodToken(t))
		}
		_, err := a.Authenticate(context.Background(), h)
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("%s: error = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestEasyAuthRoleMap(t *testing.T) {
	a, err := NewEasyAuth(EasyAuthOptions{PlatformEnabled: true, Tenants: []string{testTenant},
		RoleMap: map[string]Role{"Global.Admin": CredentialsAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("testdata/easyauth/ok-user-roles.json")
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate(context.Background(), principalHeader(base64.StdEncoding.EncodeToString(b)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.RoleList(), []Role{CredentialsAdmin}; !slices.Equal(got, want) {
		t.Errorf("roles through the role map = %v, want %v (the map replaces the default)", got, want)
	}
}

func TestNewEasyAuthRefusals(t *testing.T) {
	for _, tt := range []struct {
		name string
		o    EasyAuthOptions
	}{
		{"platform flag off", EasyAuthOptions{Tenants: []string{testTenant}}},
		{"no tenant", EasyAuthOptions{PlatformEnabled: true}},
		{"tenant not a GUID", EasyAuthOptions{PlatformEnabled: true, Tenants: []string{"common"}}},
		{"role map to an unknown role", EasyAuthOptions{PlatformEnabled: true, Tenants: []string{testTenant}, RoleMap: map[string]Role{"x": "Credentials.Own"}}},
	} {
		if _, err := NewEasyAuth(tt.o); err == nil {
			t.Errorf("NewEasyAuth with %s: error = nil, want a refusal", tt.name)
		}
	}
}

// FuzzEasyAuthPrincipal feeds arbitrary X-MS-CLIENT-PRINCIPAL values: as
// they are (asIs), or base64-encoded here so that the fuzzer mutates the
// JSON itself. It must never panic, never fail with anything but
// ErrInvalidToken (or ErrNoCredentials), and an accepted principal is always
// of the allowed tenant with a lower-case GUID object id and known roles.
func FuzzEasyAuthPrincipal(f *testing.F) {
	for _, vec := range readPrincipalVectors(f) {
		if raw, err := base64.StdEncoding.DecodeString(vec.value); err == nil && strings.HasSuffix(vec.file, ".json") {
			f.Add(string(raw), false)
		}
		f.Add(vec.value, true)
	}
	a := newEasyAuth(f)
	f.Fuzz(func(t *testing.T, value string, asIs bool) {
		if !asIs {
			value = base64.StdEncoding.EncodeToString([]byte(value))
		}
		p, err := a.Authenticate(context.Background(), principalHeader(value))
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) && !errors.Is(err, ErrNoCredentials) {
				t.Fatalf("error %v is neither ErrInvalidToken nor ErrNoCredentials", err)
			}
			return
		}
		if p.Tenant != testTenant || !isGUID(p.Object) || p.Object != strings.ToLower(p.Object) {
			t.Fatalf("accepted principal %q", p.Owner())
		}
		for r := range p.Roles {
			if !r.valid() {
				t.Fatalf("accepted principal holds role %q", r)
			}
		}
	})
}
