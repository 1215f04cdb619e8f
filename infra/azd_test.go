package infra

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/credvault/credvault/internal/deploy"
	"github.com/credvault/credvault/internal/functions"
	"github.com/credvault/credvault/internal/identity"
)

// routeOf returns the path the host serves an HTTP function on.
func routeOf(t *testing.T, name string) string {
	t.Helper()
	fns, err := functions.Load("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fns {
		if f.Name == name {
			if _, path, ok := f.HTTPRoute(); ok {
				return path
			}
		}
	}
	t.Fatalf("no HTTP function %s", name)
	return ""
}

// The OpenAPI document, once its function exists, is open like health.
func TestEasyAuthExcludesTheOpenFunctions(t *testing.T) {
	fns, err := functions.Load("..")
	if err != nil {
		t.Fatal(err)
	}
	excluded, _ := get(resource(t, "modules/app.bicep", "auth").body, "properties.globalValidation.excludedPaths")
	open := renderList(excluded)
	for _, f := range fns {
		if f.Name != "health" && f.Name != "openapi" {
			continue
		}
		if _, path, ok := f.HTTPRoute(); ok && !slices.Contains(open, "'"+path+"'") {
			t.Errorf("function %s serves %s, which Easy Auth does not exclude", f.Name, path)
		}
	}
}

// readYAML reads the small subset of YAML azure.yaml is written in: nested
// "key: value" maps by indentation, comments, no lists. Keys come back as
// dotted paths.
func readYAML(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	type level struct {
		indent int
		key    string
	}
	var stack []level
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		key, val, ok := strings.Cut(trimmed, ":")
		if !ok || strings.HasPrefix(trimmed, "- ") {
			t.Fatalf("%s:%d: %q is not a key: value line", path, n, line)
		}
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		full := key
		if len(stack) > 0 {
			full = stack[len(stack)-1].key + "." + key
		}
		if val = strings.TrimSpace(val); val == "" {
			stack = append(stack, level{indent, full})
			continue
		}
		out[full] = strings.Trim(val, `"'`)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAzureYAML(t *testing.T) {
	y := readYAML(t, filepath.Join("..", "azure.yaml"))
	tests := []struct{ key, want string }{
		{"name", "credvault"},
		{"infra.provider", "bicep"},
		{"infra.path", "infra"},
		{"infra.module", "main"},
		{"services.api.project", "."},
		{"services.api.language", "custom"},
		{"services.api.host", "function"},
		{"services.api.dist", "dist/" + deploy.ZipName},
		{"services.api.hooks.prepackage.posix.shell", "sh"},
		{"services.api.hooks.prepackage.posix.run", "make package"},
		{"hooks.preprovision.posix.shell", "sh"},
		{"hooks.preprovision.posix.run", "sh infra/entra-app.sh --azd"},
	}
	for _, tt := range tests {
		if got := y[tt.key]; got != tt.want {
			t.Errorf("azure.yaml %s = %q, want %q", tt.key, got, tt.want)
		}
	}
	// make package builds what dist names.
	mk, err := os.ReadFile(filepath.Join("..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^package:.*\n\t\$\(GO\) run ./internal/deploy/cmd/package -out \$\(DIST\)`).Match(mk) {
		t.Error("the Makefile's package target does not run ./internal/deploy/cmd/package into $(DIST)")
	}
}

// main.parameters.json gives every required parameter of main.bicep, from
// azd's environment, and nothing main.bicep does not take.
func TestParametersFile(t *testing.T) {
	b, err := os.ReadFile("main.parameters.json")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Parameters map[string]struct {
			Value string `json:"value"`
		} `json:"parameters"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	main := file(t, "main.bicep")
	for name := range p.Parameters {
		if main.decl("param", name) == nil {
			t.Errorf("main.parameters.json sets %s, which main.bicep does not take", name)
		}
	}
	for _, d := range main.decls {
		if _, given := p.Parameters[d.name]; d.kind == "param" && d.body == nil && !given {
			t.Errorf("main.bicep requires %s, which main.parameters.json does not give", d.name)
		}
	}
	if got := p.Parameters["apiClientId"].Value; got != "${CREDVAULT_API_CLIENT_ID}" {
		t.Errorf("apiClientId = %q, want ${CREDVAULT_API_CLIENT_ID}, which entra-app.sh --azd sets", got)
	}
}

// The app registration: the six roles as app roles, user-consentable scopes
// only for a user's own credentials (a scope goes to every user who consents,
// so the three privileged roles are never scopes), v2 tokens.
func TestEntraAppRegistration(t *testing.T) {
	b, err := os.ReadFile("entra-app.json")
	if err != nil {
		t.Fatal(err)
	}
	var app struct {
		SignInAudience string
		IdentifierUris []string
		API            struct {
			RequestedAccessTokenVersion int
			OAuth2PermissionScopes      []struct {
				ID, Value, Type string
				IsEnabled       bool
			}
		}
		AppRoles []struct {
			ID, Value          string
			AllowedMemberTypes []string
			IsEnabled          bool
		}
	}
	if err := json.Unmarshal(b, &app); err != nil {
		t.Fatal(err)
	}
	guid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	ids := map[string]bool{}
	checkID := func(what, id string) {
		if !guid.MatchString(id) || ids[id] {
			t.Errorf("%s id %q is not a fresh random GUID", what, id)
		}
		ids[id] = true
	}
	var roles []string
	for _, r := range app.AppRoles {
		checkID("app role "+r.Value, r.ID)
		roles = append(roles, r.Value)
		if !r.IsEnabled || !slices.Contains(r.AllowedMemberTypes, "User") || !slices.Contains(r.AllowedMemberTypes, "Application") {
			t.Errorf("app role %s: enabled=%v members=%v, want enabled for users and applications", r.Value, r.IsEnabled, r.AllowedMemberTypes)
		}
	}
	var all []string
	for _, r := range identity.AllRoles() {
		all = append(all, string(r))
	}
	if !slices.Equal(roles, all) {
		t.Errorf("app roles = %v, want %v", roles, all)
	}
	var scopes []string
	for _, s := range app.API.OAuth2PermissionScopes {
		checkID("scope "+s.Value, s.ID)
		scopes = append(scopes, s.Value)
		if s.Type != "User" || !s.IsEnabled {
			t.Errorf("scope %s: type %s enabled=%v, want an enabled user-consentable scope", s.Value, s.Type, s.IsEnabled)
		}
	}
	if want := []string{string(identity.CredentialsRead), string(identity.CredentialsWrite), string(identity.CredentialsDelete)}; !slices.Equal(scopes, want) {
		t.Errorf("delegated scopes = %v, want %v only", scopes, want)
	}
	if app.API.RequestedAccessTokenVersion != 2 {
		t.Errorf("requestedAccessTokenVersion = %d, want 2", app.API.RequestedAccessTokenVersion)
	}
	if !slices.Equal(app.IdentifierUris, []string{"api://__CLIENT_ID__"}) {
		t.Errorf("identifierUris = %v, want api://<client id>, main.bicep's apiIdentifierUri", app.IdentifierUris)
	}
	if got := render(file(t, "main.bicep").decl("param", "apiIdentifierUri").body); got != "'api://${apiClientId}'" {
		t.Errorf("main.bicep apiIdentifierUri defaults to %s, want 'api://${apiClientId}'", got)
	}
	script, err := os.ReadFile("entra-app.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"__CLIENT_ID__", "entra-app.json", "azd env set CREDVAULT_API_CLIENT_ID"} {
		if !strings.Contains(string(script), s) {
			t.Errorf("entra-app.sh does not mention %s", s)
		}
	}
	if strings.Contains(string(script), "credential reset") || strings.Contains(string(script), "password") {
		t.Error("entra-app.sh creates a secret; the API needs none")
	}
}
