package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/identity"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Load(env())
	if err != nil {
		t.Fatal(err)
	}
	want := Config{DataDir: ".data", ListenAddr: "127.0.0.1:8080", AuthMode: AuthDev, KeyDomains: 16,
		MaxVersions: 25, KeyTTL: 10 * time.Minute, KeyGrace: 24 * time.Hour, LogLevel: "info",
		Rotation: Rotation{Schedule: "0 0 3 * * *", DomainMaxAge: 90 * 24 * time.Hour, KEKMaxAge: 365 * 24 * time.Hour,
			GarbageGrace: 24 * time.Hour, Budget: 8 * time.Minute, RunTimer: true},
		Audit:     Audit{Mode: "closed"},
		Telemetry: Telemetry{MetricsEvery: time.Minute}}
	want.Entra = c.Entra // checked in the Entra tests
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults = %+v, want %+v", c, want)
	}
}

func TestSettings(t *testing.T) {
	c, err := Load(env("CREDVAULT_DATA_DIR", "/var/cv", "FUNCTIONS_CUSTOMHANDLER_PORT", "9000", "CREDVAULT_LISTEN_HOST", "::1",
		"CREDVAULT_KEY_DOMAINS", "4", "CREDVAULT_MAX_VERSIONS", "3", "CREDVAULT_KEY_CACHE_TTL", "90s",
		"CREDVAULT_KEY_GRACE", "0s", "CREDVAULT_LOG_LEVEL", "debug", "CREDVAULT_AUDIT_MODE", "open"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/var/cv" || c.ListenAddr != "[::1]:9000" || c.KeyDomains != 4 || c.MaxVersions != 3 ||
		c.KeyTTL != 90*time.Second || c.KeyGrace != 0 || c.LogLevel != "debug" || c.Audit.Mode != "open" {
		t.Fatalf("settings not applied: %+v", c)
	}
}

// TestBadSettingsStopWithOneLine: every bad setting is refused with one line
// that names it.
func TestBadSettingsStopWithOneLine(t *testing.T) {
	for _, c := range []struct{ name, value, want string }{
		{"FUNCTIONS_CUSTOMHANDLER_PORT", "eighty", "FUNCTIONS_CUSTOMHANDLER_PORT"},
		{"FUNCTIONS_CUSTOMHANDLER_PORT", "70000", "FUNCTIONS_CUSTOMHANDLER_PORT"},
		{"CREDVAULT_KEY_DOMAINS", "0", "CREDVAULT_KEY_DOMAINS"},
		{"CREDVAULT_KEY_DOMAINS", "2000", "CREDVAULT_KEY_DOMAINS"},
		{"CREDVAULT_MAX_VERSIONS", "-1", "CREDVAULT_MAX_VERSIONS"},
		{"CREDVAULT_KEY_CACHE_TTL", "10", "CREDVAULT_KEY_CACHE_TTL"},
		{"CREDVAULT_KEY_CACHE_TTL", "48h", "CREDVAULT_KEY_CACHE_TTL"},
		{"CREDVAULT_KEY_GRACE", "-1h", "CREDVAULT_KEY_GRACE"},
		{"CREDVAULT_LOG_LEVEL", "loud", "CREDVAULT_LOG_LEVEL"},
		{"CREDVAULT_AUTH_MODE", "none", "CREDVAULT_AUTH_MODE"},
		{"WEBSITE_INSTANCE_ID", "abc123", "running in Azure"},
		{"CREDVAULT_KEYVAULT_URL", "https://v.vault.azure.net/", "CREDVAULT_KEY_NAME"},
		{"CREDVAULT_KEY_NAME", "cmk", "CREDVAULT_KEYVAULT_URL"},
		{"CREDVAULT_BLOB_ACCOUNT_URL", "http://acct.blob.core.windows.net/", "CREDVAULT_BLOB_ACCOUNT_URL"},
		{"CREDVAULT_COSMOS_KEY", "k", "CREDVAULT_COSMOS_ENDPOINT"},
		{"CREDVAULT_COSMOS_ENDPOINT", "http://cosmos.example/", "must be https"},
		{"CREDVAULT_CREATE_CONTAINERS", "sometimes", "CREDVAULT_CREATE_CONTAINERS"},
		{"CREDVAULT_DOMAIN_KEY_MAX_AGE", "1s", "CREDVAULT_DOMAIN_KEY_MAX_AGE"},
		{"CREDVAULT_ROTATION_BUDGET", "2h", "CREDVAULT_ROTATION_BUDGET"},
		{"CREDVAULT_RUN_TIMER", "maybe", "CREDVAULT_RUN_TIMER"},
		{"CREDVAULT_AUDIT_MODE", "off", "CREDVAULT_AUDIT_MODE"},
		{"CREDVAULT_METRICS_INTERVAL", "0s", "CREDVAULT_METRICS_INTERVAL"},
		{"CREDVAULT_CORS_ORIGINS", "*", "wildcard"},
		{"CREDVAULT_CORS_ORIGINS", "https://*.example.com", "wildcard"},
		{"CREDVAULT_CORS_ORIGINS", "http://localhost:5173/", "CREDVAULT_CORS_ORIGINS"},
		{"CREDVAULT_CORS_ORIGINS", "http://localhost:5173/app", "CREDVAULT_CORS_ORIGINS"},
		{"CREDVAULT_CORS_ORIGINS", "localhost:5173", "CREDVAULT_CORS_ORIGINS"},
		{"CREDVAULT_CORS_ORIGINS", "ftp://localhost", "CREDVAULT_CORS_ORIGINS"},
		{"CREDVAULT_CORS_ORIGINS", "https://App.example.com", "CREDVAULT_CORS_ORIGINS"},
		{"CREDVAULT_CORS_ORIGINS", "https://app.example.com:443", "CREDVAULT_CORS_ORIGINS"},
		{"CREDVAULT_CORS_ORIGINS", "https://user@app.example.com", "CREDVAULT_CORS_ORIGINS"},
		{"CREDVAULT_CORS_ORIGINS", "null", "CREDVAULT_CORS_ORIGINS"},
	} {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			_, err := Load(env(c.name, c.value))
			if err == nil {
				t.Fatalf("%s=%q accepted", c.name, c.value)
			}
			if msg := err.Error(); !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one line naming %s", msg, c.want)
			}
		})
	}
}

func TestAzureBackends(t *testing.T) {
	c, err := Load(env("CREDVAULT_KEYVAULT_URL", "https://v.vault.azure.net/", "CREDVAULT_KEY_NAME", "cmk",
		"CREDVAULT_BLOB_CONNECTION_STRING", "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1",
		"CREDVAULT_COSMOS_ENDPOINT", "http://127.0.0.1:8081/", "CREDVAULT_COSMOS_KEY", "k"))
	if err != nil {
		t.Fatal(err)
	}
	if c.KeyVault.KeyName != "cmk" || c.Blob.Container != "ciphertext" || c.Cosmos.Database != "credvault" || c.Cosmos.Container != "metadata" {
		t.Fatalf("backends: %+v %+v %+v", c.KeyVault, c.Blob, c.Cosmos)
	}
	// In Azure: managed identity only, every backend required, no local stand-in.
	for _, kv := range [][]string{
		{"CREDVAULT_BLOB_CONNECTION_STRING", "x", "Azurite only"},
		{"CREDVAULT_COSMOS_KEY", "k", "emulator only"},
	} {
		_, err := Load(env("WEBSITE_INSTANCE_ID", "i", kv[0], kv[1], "CREDVAULT_COSMOS_ENDPOINT", "https://c.documents.azure.com/"))
		if err == nil || !strings.Contains(err.Error(), kv[0]) {
			t.Errorf("in Azure %s accepted or not named: %v", kv[0], err)
		}
	}
	_, err = Load(env("WEBSITE_INSTANCE_ID", "i", "CREDVAULT_AUTH_MODE", "dev"))
	if err == nil {
		t.Fatal("Azure start without backends accepted")
	}
}

const (
	tenantA = "6d1f3b5a-7c9e-4a2b-8d4f-1e3a5c7b9d0f"
	tenantB = "3F1C2A9E-5B7D-4E21-9A0C-6D8E7F4B2C11"
)

// azureBackends are the settings an Azure start needs besides the auth mode.
var azureBackends = []string{"WEBSITE_INSTANCE_ID", "i", "CREDVAULT_KEYVAULT_URL", "https://v.vault.azure.net/", "CREDVAULT_KEY_NAME", "cmk",
	"CREDVAULT_BLOB_ACCOUNT_URL", "https://a.blob.core.windows.net/", "CREDVAULT_COSMOS_ENDPOINT", "https://c.documents.azure.com/"}

func TestAuthModeDefaults(t *testing.T) {
	c, err := Load(env())
	if err != nil || c.AuthMode != AuthDev {
		t.Fatalf("outside Azure: mode %q, %v; want dev", c.AuthMode, err)
	}
	c, err = Load(env(append(azureBackends, "CREDVAULT_ENTRA_TENANTS", tenantA, "CREDVAULT_ENTRA_AUDIENCES", "api://credvault")...))
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthMode != AuthEntra {
		t.Fatalf("in Azure: mode %q, want entra", c.AuthMode)
	}
	want := Entra{Authority: "https://login.microsoftonline.com", Tenants: []string{tenantA}, Audiences: []string{"api://credvault"}}
	if !reflect.DeepEqual(c.Entra, want) {
		t.Fatalf("entra settings = %+v, want %+v", c.Entra, want)
	}
}

func TestEntraSettings(t *testing.T) {
	c, err := Load(env("CREDVAULT_AUTH_MODE", "entra",
		"CREDVAULT_ENTRA_AUTHORITY", "https://login.microsoftonline.us/",
		"CREDVAULT_ENTRA_TENANTS", " "+tenantA+" , "+tenantB+",",
		"CREDVAULT_ENTRA_AUDIENCES", "api://credvault,5e6f7a8b-0c1d-4e2f-8a9b-0c1d2e3f4a5b",
		"CREDVAULT_ENTRA_ROLE_MAP", "Vault.Reader=Credentials.Read, Vault.Admin = Credentials.Admin"))
	if err != nil {
		t.Fatal(err)
	}
	want := Entra{
		Authority: "https://login.microsoftonline.us",
		Tenants:   []string{tenantA, strings.ToLower(tenantB)},
		Audiences: []string{"api://credvault", "5e6f7a8b-0c1d-4e2f-8a9b-0c1d2e3f4a5b"},
		RoleMap:   map[string]identity.Role{"Vault.Reader": identity.CredentialsRead, "Vault.Admin": identity.CredentialsAdmin},
	}
	if !reflect.DeepEqual(c.Entra, want) {
		t.Fatalf("entra settings = %+v, want %+v", c.Entra, want)
	}

	c, err = Load(env("CREDVAULT_AUTH_MODE", "easyauth", "WEBSITE_AUTH_ENABLED", "True", "CREDVAULT_ENTRA_TENANTS", tenantA))
	if err != nil {
		t.Fatal(err)
	}
	if !c.EasyAuthEnabled || c.AuthMode != AuthEasyAuth {
		t.Fatalf("easyauth: %+v", c)
	}
}

// TestAuthSettingsStopWithOneLine: a mode with a missing or bad setting stops
// the start with one line that names the setting.
func TestAuthSettingsStopWithOneLine(t *testing.T) {
	entra := []string{"CREDVAULT_AUTH_MODE", "entra", "CREDVAULT_ENTRA_TENANTS", tenantA, "CREDVAULT_ENTRA_AUDIENCES", "api://credvault"}
	with := func(base []string, kv ...string) []string { return append(append([]string(nil), base...), kv...) }
	for _, c := range []struct {
		name string
		env  []string
		want string
	}{
		{"entra without tenants", []string{"CREDVAULT_AUTH_MODE", "entra", "CREDVAULT_ENTRA_AUDIENCES", "api://credvault"}, "CREDVAULT_ENTRA_TENANTS is required"},
		{"entra without audiences", []string{"CREDVAULT_AUTH_MODE", "entra", "CREDVAULT_ENTRA_TENANTS", tenantA}, "CREDVAULT_ENTRA_AUDIENCES is required"},
		{"entra in Azure without tenants", with(azureBackends, "CREDVAULT_ENTRA_AUDIENCES", "a"), "CREDVAULT_ENTRA_TENANTS is required"},
		{"tenant by domain name", with(entra, "CREDVAULT_ENTRA_TENANTS", "contoso.onmicrosoft.com"), "CREDVAULT_ENTRA_TENANTS"},
		{"tenant common", with(entra, "CREDVAULT_ENTRA_TENANTS", "common"), "CREDVAULT_ENTRA_TENANTS"},
		{"http authority", with(entra, "CREDVAULT_ENTRA_AUTHORITY", "http://login.microsoftonline.com"), "CREDVAULT_ENTRA_AUTHORITY must be an https URL"},
		{"authority with a tenant path", with(entra, "CREDVAULT_ENTRA_AUTHORITY", "https://login.microsoftonline.com/"+tenantA), "CREDVAULT_ENTRA_AUTHORITY"},
		{"authority not a URL", with(entra, "CREDVAULT_ENTRA_AUTHORITY", "login.microsoftonline.com"), "CREDVAULT_ENTRA_AUTHORITY"},
		{"role map without =", with(entra, "CREDVAULT_ENTRA_ROLE_MAP", "Credentials.Read"), "CREDVAULT_ENTRA_ROLE_MAP"},
		{"role map to an unknown role", with(entra, "CREDVAULT_ENTRA_ROLE_MAP", "Reader=Credentials.Own"), "CREDVAULT_ENTRA_ROLE_MAP"},
		{"role map twice", with(entra, "CREDVAULT_ENTRA_ROLE_MAP", "R=Credentials.Read,R=Credentials.Write"), "CREDVAULT_ENTRA_ROLE_MAP"},
		{"easyauth without the platform flag", []string{"CREDVAULT_AUTH_MODE", "easyauth", "CREDVAULT_ENTRA_TENANTS", tenantA}, "WEBSITE_AUTH_ENABLED is not True"},
		{"easyauth with the flag False", []string{"CREDVAULT_AUTH_MODE", "easyauth", "WEBSITE_AUTH_ENABLED", "False", "CREDVAULT_ENTRA_TENANTS", tenantA}, "WEBSITE_AUTH_ENABLED is not True"},
		{"easyauth without tenants", []string{"CREDVAULT_AUTH_MODE", "easyauth", "WEBSITE_AUTH_ENABLED", "True"}, "CREDVAULT_ENTRA_TENANTS is required"},
		{"dev in Azure", with(azureBackends, "CREDVAULT_AUTH_MODE", "dev"), "dev tokens are refused when running in Azure"},
		{"unknown mode", []string{"CREDVAULT_AUTH_MODE", "Entra"}, "CREDVAULT_AUTH_MODE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load(env(c.env...))
			if err == nil {
				t.Fatalf("%s accepted", c.name)
			}
			if msg := err.Error(); !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one line containing %q", msg, c.want)
			}
		})
	}
}

func TestCORSOrigins(t *testing.T) {
	c, err := Load(env("CREDVAULT_CORS_ORIGINS", " http://localhost:5173, https://app.example.com ,http://127.0.0.1:8081"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"http://localhost:5173", "https://app.example.com", "http://127.0.0.1:8081"}; !reflect.DeepEqual(c.CORSOrigins, want) {
		t.Fatalf("CORSOrigins = %q, want %q", c.CORSOrigins, want)
	}
	// In Azure the platform's CORS applies: the handler's own is refused.
	_, err = Load(env(append(slices.Clone(azureBackends), "CREDVAULT_ENTRA_TENANTS", tenantA, "CREDVAULT_ENTRA_AUDIENCES", "api://credvault",
		"CREDVAULT_CORS_ORIGINS", "https://app.example.com")...))
	if err == nil || !strings.Contains(err.Error(), "CREDVAULT_CORS_ORIGINS") || !strings.Contains(err.Error(), "platform") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("CREDVAULT_CORS_ORIGINS in Azure: %v, want one line naming it and the platform's CORS", err)
	}
	c, err = Load(env(append(slices.Clone(azureBackends), "CREDVAULT_ENTRA_TENANTS", tenantA, "CREDVAULT_ENTRA_AUDIENCES", "api://credvault")...))
	if err != nil || c.CORSOrigins != nil {
		t.Fatalf("Azure start without CORS origins: %v, CORSOrigins %q", err, c.CORSOrigins)
	}
}
