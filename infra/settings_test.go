package infra

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/store/cosmos"
)

// hostSettings are the app settings the Functions host reads, not the
// binary: its storage through the identity (blob for locks and keys, table
// for diagnostic events).
var hostSettings = []string{
	"AzureWebJobsStorage__credential",
	"AzureWebJobsStorage__clientId",
	"AzureWebJobsStorage__blobServiceUri",
	"AzureWebJobsStorage__tableServiceUri",
}

// localHostSettings are what `func start` needs in local.settings.json
// besides credvault's own settings.
var localHostSettings = []string{"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage"}

// flexDeprecated are app settings Flex Consumption deprecates or ignores.
var flexDeprecated = []string{
	"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
	"WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_MOUNT_ENABLED",
	"SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
	"WEBSITE_TIME_ZONE", "TZ", "WEBSITE_NODE_DEFAULT_VERSION", "AzureWebJobsStorage",
}

// appSettings returns the site's app settings: name to value, in Bicep.
func appSettings(t *testing.T) (map[string]value, []string) {
	t.Helper()
	v, _ := get(resource(t, "modules/app.bicep", "site").body, "properties.siteConfig.appSettings")
	list := asList(v)
	if len(list) == 0 {
		t.Fatal("the site has no siteConfig.appSettings array")
	}
	out := map[string]value{}
	var names []string
	for _, it := range list {
		name, _ := get(it, "name")
		n, ok := name.(str)
		if !ok {
			t.Fatalf("app setting name %s is not a string literal", render(name))
		}
		if _, dup := out[string(n)]; dup {
			t.Errorf("app setting %s is set twice", n)
		}
		val, ok := get(it, "value")
		if !ok {
			t.Errorf("app setting %s has no value", n)
		}
		out[string(n)] = val
		names = append(names, string(n))
	}
	return out, names
}

func TestAppSettingsAreWhatTheBinaryAndHostRead(t *testing.T) {
	set, _ := appSettings(t)
	want := map[string]bool{}
	for _, n := range hostSettings {
		want[n] = true
	}
	for _, s := range config.Settings() {
		switch s.Source {
		case config.App:
			want[s.Name] = true
			if _, ok := set[s.Name]; !ok {
				t.Errorf("the binary reads %s, which the Bicep does not set", s.Name)
			}
		case config.Platform:
			if _, ok := set[s.Name]; ok {
				t.Errorf("the Bicep sets %s, which the platform sets", s.Name)
			}
		case config.Local:
			if _, ok := set[s.Name]; ok {
				t.Errorf("the Bicep sets %s, which serves local runs only and is refused or useless in Azure", s.Name)
			}
		}
	}
	for _, n := range hostSettings {
		if _, ok := set[n]; !ok {
			t.Errorf("the Functions host needs %s, which the Bicep does not set", n)
		}
	}
	for n := range set {
		if !want[n] && !slices.Contains(flexDeprecated, n) {
			t.Errorf("the Bicep sets %s, which neither the binary nor the host reads: stale", n)
		}
	}
	for _, n := range flexDeprecated {
		if _, ok := set[n]; ok {
			t.Errorf("the Bicep sets %s, which Flex Consumption deprecates", n)
		}
	}
}

func TestAppSettingValues(t *testing.T) {
	set, _ := appSettings(t)
	tests := []struct{ name, want string }{
		{"AzureWebJobsStorage__credential", "'managedidentity'"},
		{"AzureWebJobsStorage__clientId", "identityClientId"},
		{"AZURE_CLIENT_ID", "identityClientId"},
		{"APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "'Authorization=AAD;ClientId=${identityClientId}'"},
		{"CREDVAULT_AUTH_MODE", "'entra'"},
		{"CREDVAULT_RUN_TIMER", "'false'"},
		{"CREDVAULT_CREATE_CONTAINERS", "'false'"},
		{"CREDVAULT_LISTEN_HOST", "'127.0.0.1'"},
		{"CREDVAULT_KEYVAULT_URL", "keyVaultUri"},
		{"CREDVAULT_BLOB_ACCOUNT_URL", "blobAccountUrl"},
		{"CREDVAULT_COSMOS_ENDPOINT", "cosmosEndpoint"},
	}
	for _, tt := range tests {
		if got := render(set[tt.name]); got != tt.want {
			t.Errorf("%s = %s, want %s", tt.name, got, tt.want)
		}
	}
	// The only connection string is Application Insights': an ingestion
	// endpoint and resource id, no credential once local auth is off.
	for n, v := range set {
		if strings.Contains(strings.ToLower(render(v)), "connectionstring") && n != "APPLICATIONINSIGHTS_CONNECTION_STRING" {
			t.Errorf("%s = %s: no connection string in settings", n, render(v))
		}
	}
}

// sampleAzureValues stand in for the values the deployment computes.
var sampleAzureValues = map[string]string{
	"AZURE_CLIENT_ID":                           "11111111-2222-3333-4444-555555555555",
	"APPLICATIONINSIGHTS_CONNECTION_STRING":     "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/",
	"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD;ClientId=11111111-2222-3333-4444-555555555555",
	"CREDVAULT_ENTRA_AUTHORITY":                 "https://login.microsoftonline.com/", // environment().authentication.loginEndpoint
	"CREDVAULT_ENTRA_TENANTS":                   "72f988bf-86f1-41af-91ab-2d7cd011db47",
	"CREDVAULT_ENTRA_AUDIENCES":                 "66666666-7777-8888-9999-000000000000,api://66666666-7777-8888-9999-000000000000",
	"CREDVAULT_ENTRA_ROLE_MAP":                  "",
	"CREDVAULT_KEYVAULT_URL":                    "https://kv-abc.vault.azure.net/",
	"CREDVAULT_KEY_NAME":                        "credvault-cmk",
	"CREDVAULT_BLOB_ACCOUNT_URL":                "https://stcvabc.blob.core.windows.net/",
	"CREDVAULT_BLOB_CONTAINER":                  "ciphertext",
	"CREDVAULT_AUDIT_CONTAINER":                 "audit",
	"CREDVAULT_AUDIT_MODE":                      "closed",
	"CREDVAULT_COSMOS_ENDPOINT":                 "https://cosmos-abc.documents.azure.com:443/",
	"CREDVAULT_COSMOS_DATABASE":                 "credvault",
	"CREDVAULT_COSMOS_CONTAINER":                "metadata",
	"CREDVAULT_ROTATION_SCHEDULE":               "0 0 3 * * *",
	"CREDVAULT_LOG_LEVEL":                       "info",
	// Set by the platform in Azure.
	"WEBSITE_INSTANCE_ID":          "0123456789abcdef",
	"WEBSITE_SITE_NAME":            "func-credvault-abc",
	"WEBSITE_AUTH_ENABLED":         "True",
	"FUNCTIONS_CUSTOMHANDLER_PORT": "39999",
}

// The settings as the Bicep writes them, computed values replaced by
// samples, make a configuration that loads in Azure.
func TestAppSettingsLoadInAzure(t *testing.T) {
	set, _ := appSettings(t)
	env := map[string]string{}
	for k, v := range sampleAzureValues {
		env[k] = v
	}
	for n, v := range set {
		if s, ok := v.(str); ok && !strings.Contains(string(s), "${") {
			env[n] = string(s)
			continue
		}
		if _, ok := sampleAzureValues[n]; !ok && !slices.Contains(hostSettings, n) {
			t.Errorf("%s = %s is computed: add a sample value to sampleAzureValues", n, render(v))
		}
	}
	c, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("the Bicep's settings do not load: %v", err)
	}
	switch {
	case !c.InAzure || c.AuthMode != config.AuthEntra:
		t.Errorf("loaded InAzure=%v AuthMode=%s, want true and entra", c.InAzure, c.AuthMode)
	case c.Rotation.RunTimer:
		t.Error("the handler would run its own rotate timer beside the host's")
	case c.CreateContainers:
		t.Error("the handler would try to create containers its roles cannot create")
	}
}

// The Bicep's names for the stores are the configuration's defaults and
// the Cosmos DB adapter's partition key.
func TestStoreNamesMatchTheCode(t *testing.T) {
	c, err := config.Load(func(k string) string {
		return map[string]string{
			"CREDVAULT_BLOB_ACCOUNT_URL": "https://a.blob.core.windows.net/",
			"CREDVAULT_COSMOS_ENDPOINT":  "https://a.documents.azure.com:443/",
		}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ file, param, want string }{
		{"modules/storage.bicep", "ciphertextContainerName", c.Blob.Container},
		{"modules/storage.bicep", "auditContainerName", c.Audit.Container},
		{"modules/cosmos.bicep", "databaseName", c.Cosmos.Database},
		{"modules/cosmos.bicep", "containerName", c.Cosmos.Container},
	}
	for _, tt := range tests {
		if got := render(file(t, tt.file).decl("param", tt.param).body); got != "'"+tt.want+"'" {
			t.Errorf("%s %s defaults to %s, want '%s'", tt.file, tt.param, got, tt.want)
		}
	}
	paths, _ := get(resource(t, "modules/cosmos.bicep", "container").body, "properties.resource.partitionKey.paths")
	if got := renderList(paths); !slices.Equal(got, []string{"'" + cosmos.PartitionKeyPath + "'"}) {
		t.Errorf("metadata container partition key paths = %v, want [%s]", got, cosmos.PartitionKeyPath)
	}
}

// localExample reads local.settings.json.example's Values.
func localExample(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "local.settings.json.example"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		IsEncrypted bool
		Values      map[string]string
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("local.settings.json.example: %v", err)
	}
	if f.IsEncrypted {
		t.Error("local.settings.json.example says IsEncrypted")
	}
	return f.Values
}

func TestLocalSettingsExampleListsEverySetting(t *testing.T) {
	values := localExample(t)
	want := map[string]bool{}
	for _, n := range localHostSettings {
		want[n] = true
	}
	for _, s := range config.Settings() {
		want[s.Name] = s.InExample()
	}
	var missing, stale []string
	for n, in := range want {
		if _, ok := values[n]; in && !ok {
			missing = append(missing, n)
		}
	}
	for n := range values {
		if !want[n] {
			stale = append(stale, n)
		}
	}
	sort.Strings(missing)
	sort.Strings(stale)
	if len(missing) > 0 {
		t.Errorf("local.settings.json.example lacks %s", strings.Join(missing, ", "))
	}
	if len(stale) > 0 {
		t.Errorf("local.settings.json.example lists %s, which nothing reads or the platform sets", strings.Join(stale, ", "))
	}
	if got := values["FUNCTIONS_WORKER_RUNTIME"]; got != "custom" {
		t.Errorf("FUNCTIONS_WORKER_RUNTIME = %q, want custom (func start still needs it)", got)
	}
}

// The example loads as it is: a local run under `func start`.
func TestLocalSettingsExampleLoads(t *testing.T) {
	values := localExample(t)
	c, err := config.Load(func(k string) string {
		if k == "AzureWebJobsScriptRoot" {
			return "/tmp/app" // set by func start
		}
		return values[k]
	})
	if err != nil {
		t.Fatalf("local.settings.json.example does not load: %v", err)
	}
	if c.InAzure || c.Rotation.RunTimer {
		t.Errorf("example: InAzure=%v RunTimer=%v, want a local run with the host firing the timer", c.InAzure, c.Rotation.RunTimer)
	}
}
