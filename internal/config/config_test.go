package config

import (
	"strings"
	"testing"
	"time"
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
		MaxVersions: 25, KeyTTL: 10 * time.Minute, KeyGrace: 24 * time.Hour, LogLevel: "info"}
	if c != want {
		t.Fatalf("defaults = %+v, want %+v", c, want)
	}
}

func TestSettings(t *testing.T) {
	c, err := Load(env("CREDVAULT_DATA_DIR", "/var/cv", "FUNCTIONS_CUSTOMHANDLER_PORT", "9000", "CREDVAULT_LISTEN_HOST", "::1",
		"CREDVAULT_KEY_DOMAINS", "4", "CREDVAULT_MAX_VERSIONS", "3", "CREDVAULT_KEY_CACHE_TTL", "90s",
		"CREDVAULT_KEY_GRACE", "0s", "CREDVAULT_LOG_LEVEL", "debug"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/var/cv" || c.ListenAddr != "[::1]:9000" || c.KeyDomains != 4 || c.MaxVersions != 3 ||
		c.KeyTTL != 90*time.Second || c.KeyGrace != 0 || c.LogLevel != "debug" {
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
