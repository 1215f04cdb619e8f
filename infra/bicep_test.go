package infra

import (
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

var (
	loadOnce  sync.Once
	loaded    map[string]*bicepFile
	loadError error
)

// files reads main.bicep and the modules once for all tests.
func files(t *testing.T) map[string]*bicepFile {
	t.Helper()
	loadOnce.Do(func() { loaded, loadError = readAll() })
	if loadError != nil {
		t.Fatal(loadError)
	}
	return loaded
}

// file returns one parsed file by its path in infra/.
func file(t *testing.T, path string) *bicepFile {
	t.Helper()
	f, ok := files(t)[path]
	if !ok {
		t.Fatalf("no %s", path)
	}
	return f
}

// resource returns a resource declaration by file and symbolic name.
func resource(t *testing.T, path, name string) *decl {
	t.Helper()
	d := file(t, path).decl("resource", name)
	if d == nil {
		t.Fatalf("%s declares no resource %s", path, name)
	}
	return d
}

// The API version of every resource type: released versions found in
// Microsoft's documentation or its published templates (diagnosticSettings
// has no other). A resource of another type or version fails the test until
// someone checks it and adds it here.
var apiVersions = map[string]string{
	"Microsoft.Resources/resourceGroups":                                             "2024-11-01",
	"Microsoft.ManagedIdentity/userAssignedIdentities":                               "2024-11-30",
	"Microsoft.KeyVault/vaults":                                                      "2026-02-01", // RBAC by default for new vaults
	"Microsoft.KeyVault/vaults/keys":                                                 "2026-02-01",
	"Microsoft.Storage/storageAccounts":                                              "2025-01-01",
	"Microsoft.Storage/storageAccounts/blobServices":                                 "2025-01-01",
	"Microsoft.Storage/storageAccounts/blobServices/containers":                      "2025-01-01",
	"Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies": "2025-01-01",
	"Microsoft.DocumentDB/databaseAccounts":                                          "2025-04-15",
	"Microsoft.DocumentDB/databaseAccounts/sqlDatabases":                             "2025-04-15",
	"Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers":                  "2025-04-15",
	"Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments":                       "2025-04-15",
	"Microsoft.OperationalInsights/workspaces":                                       "2025-02-01",
	"Microsoft.Insights/components":                                                  "2020-02-02",
	"Microsoft.Insights/diagnosticSettings":                                          "2021-05-01-preview", // the only version there is
	"Microsoft.Web/serverfarms":                                                      "2024-11-01",
	"Microsoft.Web/sites":                                                            "2024-11-01",
	"Microsoft.Web/sites/config":                                                     "2024-11-01",
	"Microsoft.Web/sites/basicPublishingCredentialsPolicies":                         "2024-11-01",
	"Microsoft.Authorization/roleAssignments":                                        "2022-04-01",
}

func TestEveryResourceUsesACheckedAPIVersion(t *testing.T) {
	used := map[string]bool{}
	for path, f := range files(t) {
		for _, d := range f.decls {
			if d.kind != "resource" {
				continue
			}
			typ, version, ok := strings.Cut(d.typ, "@")
			want, known := apiVersions[typ]
			switch {
			case !ok:
				t.Errorf("%s:%d: resource %s names no API version", path, d.line, d.name)
			case !known:
				t.Errorf("%s:%d: resource %s has type %s, whose API version nobody has checked: add it to apiVersions", path, d.line, d.name, typ)
			case version != want:
				t.Errorf("%s:%d: resource %s uses %s@%s, want @%s", path, d.line, d.name, typ, version, want)
			}
			used[typ] = true
		}
	}
	for typ := range apiVersions {
		if !used[typ] {
			t.Errorf("apiVersions lists %s, which no resource uses: remove it", typ)
		}
	}
}

// Every module is deployed by main.bicep, once.
func TestMainDeploysEveryModule(t *testing.T) {
	main := file(t, "main.bicep")
	deployed := map[string]int{}
	for _, d := range main.decls {
		if d.kind == "module" {
			deployed[d.typ]++
		}
	}
	for path := range files(t) {
		if path == "main.bicep" {
			continue
		}
		if n := deployed[path]; n != 1 {
			t.Errorf("main.bicep deploys %s %d times, want once", path, n)
		}
		delete(deployed, path)
	}
	for path := range deployed {
		t.Errorf("main.bicep deploys %s, which does not exist", path)
	}
	if got := render(main.decl("targetScope", "").body); got != "'subscription'" {
		t.Errorf("main.bicep targetScope = %s, want 'subscription' (it creates the resource group)", got)
	}
}

// check is one property a resource must have, written as Bicep writes it.
type check struct {
	file, resource, path, want string
}

func runChecks(t *testing.T, checks []check) {
	t.Helper()
	for _, c := range checks {
		d := resource(t, c.file, c.resource)
		v, _ := get(d.body, c.path)
		if got := render(v); got != c.want {
			t.Errorf("%s: %s %s = %s, want %s", c.file, c.resource, c.path, got, c.want)
		}
	}
}

func TestKeyVaultAndCMK(t *testing.T) {
	const kv = "modules/keyvault.bicep"
	runChecks(t, []check{
		{kv, "vault", "properties.enableRbacAuthorization", "true"},
		{kv, "vault", "properties.enableSoftDelete", "true"},
		{kv, "vault", "properties.softDeleteRetentionInDays", "90"},
		{kv, "vault", "properties.enablePurgeProtection", "true"},
		{kv, "cmk", "parent", "vault"},
		{kv, "cmk", "properties.kty", "sku == 'premium' ? 'RSA-HSM' : 'RSA'"},
		{kv, "cmk", "properties.keySize", "3072"},
		{kv, "cmk", "properties.rotationPolicy.attributes.expiryTime", "expireAfter"},
		{kv, "vaultLogs", "scope", "vault"},
		{kv, "vaultLogs", "properties.workspaceId", "workspaceId"},
	})
	cmk := resource(t, kv, "cmk")
	ops, _ := get(cmk.body, "properties.keyOps")
	if got := renderList(ops); !slices.Equal(got, []string{"'wrapKey'", "'unwrapKey'"}) {
		t.Errorf("cmk keyOps = %v, want wrapKey and unwrapKey only", got)
	}
	// ARM creates only a key's first version: its creation parameters must
	// not change from one deployment to the next.
	attrs, _ := get(cmk.body, "properties.attributes")
	if o, ok := attrs.(*object); !ok || !slices.Equal(o.keys, []string{"enabled"}) {
		t.Errorf("cmk attributes = %s, want enabled only (no exp or nbf computed at deployment)", render(attrs))
	}
	actions, _ := get(cmk.body, "properties.rotationPolicy.lifetimeActions")
	var got []string
	for _, a := range asList(actions) {
		typ, _ := get(a, "action.type")
		trigger, _ := get(a, "trigger")
		if o, ok := trigger.(*object); ok && len(o.keys) == 1 {
			got = append(got, render(typ)+" "+o.keys[0]+"="+render(o.fields[o.keys[0]]))
		}
	}
	if want := []string{"'rotate' timeAfterCreate=rotateAfter", "'notify' timeBeforeExpiry=notifyBeforeExpiry"}; !slices.Equal(got, want) {
		t.Errorf("cmk rotation policy actions = %q, want %q", got, want)
	}
	logs, _ := get(resource(t, kv, "vaultLogs").body, "properties.logs")
	if got := logCategories(logs); !slices.Equal(got, []string{"AuditEvent"}) {
		t.Errorf("Key Vault diagnostic logs = %v, want AuditEvent", got)
	}
}

func TestCiphertextStorage(t *testing.T) {
	const st = "modules/storage.bicep"
	runChecks(t, []check{
		{st, "account", "properties.allowSharedKeyAccess", "false"},
		{st, "account", "properties.allowBlobPublicAccess", "false"},
		{st, "account", "properties.minimumTlsVersion", "'TLS1_2'"},
		{st, "account", "properties.supportsHttpsTrafficOnly", "true"},
		{st, "account", "identity.type", "'UserAssigned'"},
		{st, "account", "properties.encryption.requireInfrastructureEncryption", "true"},
		{st, "account", "properties.encryption.keySource", "'Microsoft.Keyvault'"},
		{st, "account", "properties.encryption.identity.userAssignedIdentity", "identityId"},
		{st, "account", "properties.encryption.keyvaultproperties.keyvaulturi", "keyVaultUri"},
		{st, "account", "properties.encryption.keyvaultproperties.keyname", "keyName"},
		{st, "account", "properties.encryption.services.blob.keyType", "'Account'"},
		{st, "blobService", "properties.isVersioningEnabled", "true"},
		{st, "blobService", "properties.deleteRetentionPolicy.enabled", "true"},
		{st, "blobService", "properties.containerDeleteRetentionPolicy.enabled", "true"},
		{st, "ciphertext", "properties.publicAccess", "'None'"},
		{st, "audit", "properties.publicAccess", "'None'"},
		{st, "auditImmutability", "parent", "audit"},
		{st, "auditImmutability", "properties.allowProtectedAppendWrites", "true"},
		{st, "auditImmutability", "properties.immutabilityPeriodSinceCreationInDays", "auditImmutabilityDays"},
		{st, "blobLogs", "scope", "blobService"},
	})
	// No key version: the account follows the versions Key Vault's rotation
	// policy creates.
	kvp, _ := get(resource(t, st, "account").body, "properties.encryption.keyvaultproperties")
	if o, ok := kvp.(*object); !ok || slices.Contains(o.keys, "keyversion") {
		t.Errorf("keyvaultproperties = %s, want the key's name and vault without a version", render(kvp))
	}
	if got := resource(t, st, "auditImmutability").cond; got != "auditImmutabilityDays > 0" {
		t.Errorf("the audit immutability policy's condition = %q, want auditImmutabilityDays > 0", got)
	}
	if got := render(file(t, "main.bicep").decl("param", "auditImmutabilityDays").body); got != "0" {
		t.Errorf("main.bicep auditImmutabilityDays defaults to %s, want 0 (off for test deployments)", got)
	}
	logs, _ := get(resource(t, st, "blobLogs").body, "properties.logs")
	if got := logCategories(logs); !slices.Equal(got, []string{"StorageDelete", "StorageRead", "StorageWrite"}) {
		t.Errorf("ciphertext blob logs = %v, want StorageRead, StorageWrite and StorageDelete", got)
	}
}

func TestHostStorage(t *testing.T) {
	const hs = "modules/hoststorage.bicep"
	runChecks(t, []check{
		{hs, "account", "properties.allowSharedKeyAccess", "false"},
		{hs, "account", "properties.allowBlobPublicAccess", "false"},
		{hs, "account", "properties.minimumTlsVersion", "'TLS1_2'"},
		{hs, "account", "properties.supportsHttpsTrafficOnly", "true"},
		{hs, "deployment", "properties.publicAccess", "'None'"},
		{hs, "blobLogs", "scope", "blobService"},
	})
}

func TestMonitoring(t *testing.T) {
	const mon = "modules/monitoring.bicep"
	runChecks(t, []check{
		{mon, "workspace", "properties.features.disableLocalAuth", "true"},
		{mon, "appInsights", "properties.DisableLocalAuth", "true"},
		{mon, "appInsights", "properties.WorkspaceResourceId", "workspace.id"},
	})
}

func TestFunctionAppOnFlexConsumption(t *testing.T) {
	const app = "modules/app.bicep"
	runChecks(t, []check{
		{app, "plan", "sku.name", "'FC1'"},
		{app, "plan", "sku.tier", "'FlexConsumption'"},
		{app, "plan", "properties.reserved", "true"},
		{app, "site", "kind", "'functionapp,linux'"},
		{app, "site", "identity.type", "'UserAssigned'"},
		{app, "site", "properties.httpsOnly", "true"},
		{app, "site", "properties.functionAppConfig.runtime.name", "'custom'"},
		{app, "site", "properties.functionAppConfig.runtime.version", "'1.0'"},
		{app, "site", "properties.functionAppConfig.deployment.storage.type", "'blobContainer'"},
		{app, "site", "properties.functionAppConfig.deployment.storage.authentication.type", "'UserAssignedIdentity'"},
		{app, "site", "properties.functionAppConfig.deployment.storage.authentication.userAssignedIdentityResourceId", "identityId"},
		{app, "site", "properties.functionAppConfig.scaleAndConcurrency.instanceMemoryMB", "instanceMemoryMB"},
		{app, "site", "properties.functionAppConfig.scaleAndConcurrency.maximumInstanceCount", "maximumInstanceCount"},
		{app, "site", "properties.siteConfig.minTlsVersion", "'1.2'"},
		{app, "site", "properties.siteConfig.cors.allowedOrigins", "corsAllowedOrigins"},
		{app, "ftpCredentials", "properties.allow", "false"},
		{app, "scmCredentials", "properties.allow", "false"},
	})
	// Flex Consumption rejects or ignores most of siteConfig (runtime,
	// scale and Always On live in functionAppConfig): keep to what it takes.
	sc, _ := get(resource(t, app, "site").body, "properties.siteConfig")
	o, _ := sc.(*object)
	if o == nil {
		t.Fatal("site has no siteConfig")
	}
	for _, k := range o.keys {
		if !slices.Contains([]string{"appSettings", "cors", "minTlsVersion"}, k) {
			t.Errorf("siteConfig.%s: Flex Consumption takes only appSettings, cors and minTlsVersion here", k)
		}
	}
	tags, _ := get(resource(t, app, "site").body, "tags")
	if !strings.Contains(render(tags), "'azd-service-name': 'api'") {
		t.Errorf("site tags = %s, want the azd-service-name tag of azure.yaml's service api", render(tags))
	}
	for _, name := range []string{"ftpCredentials", "scmCredentials"} {
		if d := resource(t, app, name); render(d.body.(*object).fields["parent"]) != "site" {
			t.Errorf("%s does not belong to the site", name)
		}
	}
}

func TestEasyAuth(t *testing.T) {
	const app = "modules/app.bicep"
	runChecks(t, []check{
		{app, "auth", "name", "'authsettingsV2'"},
		{app, "auth", "parent", "site"},
		{app, "auth", "properties.platform.enabled", "easyAuthEnabled"},
		{app, "auth", "properties.globalValidation.requireAuthentication", "true"},
		{app, "auth", "properties.globalValidation.unauthenticatedClientAction", "'Return401'"},
		{app, "auth", "properties.httpSettings.requireHttps", "true"},
		{app, "auth", "properties.identityProviders.azureActiveDirectory.enabled", "true"},
		{app, "auth", "properties.identityProviders.azureActiveDirectory.registration.clientId", "apiClientId"},
		{app, "auth", "properties.login.tokenStore.enabled", "false"},
	})
	auth := resource(t, app, "auth")
	aud, _ := get(auth.body, "properties.identityProviders.azureActiveDirectory.validation.allowedAudiences")
	if got := renderList(aud); !slices.Equal(got, []string{"apiClientId", "apiIdentifierUri"}) {
		t.Errorf("Easy Auth audiences = %v, want the client id and the application id URI", got)
	}
	excluded, _ := get(auth.body, "properties.globalValidation.excludedPaths")
	got := renderList(excluded)
	if want := []string{"'/api/health'", "'/api/openapi.json'"}; !slices.Equal(got, want) {
		t.Errorf("Easy Auth excluded paths = %v, want %v", got, want)
	}
	if health := "'" + routeOf(t, "health") + "'"; !slices.Contains(got, health) {
		t.Errorf("Easy Auth excludes %v, not the health function's route %s", got, health)
	}
}

func TestCosmosDB(t *testing.T) {
	const cos = "modules/cosmos.bicep"
	runChecks(t, []check{
		{cos, "account", "properties.disableLocalAuth", "true"},
		{cos, "account", "properties.disableKeyBasedMetadataWriteAccess", "true"},
		{cos, "account", "properties.minimalTlsVersion", "'Tls12'"},
		{cos, "account", "properties.consistencyPolicy.defaultConsistencyLevel", "'Strong'"},
		{cos, "container", "properties.resource.partitionKey.kind", "'Hash'"},
	})
	caps, _ := get(resource(t, cos, "account").body, "properties.capabilities")
	if c := render(caps); !strings.HasPrefix(c, "serverless ?") || !strings.Contains(c, "'EnableServerless'") {
		t.Errorf("Cosmos DB capabilities = %s, want EnableServerless when serverless", c)
	}
	if got := render(file(t, "main.bicep").decl("param", "cosmosServerless").body); got != "true" {
		t.Errorf("main.bicep cosmosServerless defaults to %s, want true", got)
	}
}

// renderList renders the items of an array.
func renderList(v value) []string {
	var out []string
	for _, it := range asList(v) {
		out = append(out, render(it))
	}
	return out
}

func asList(v value) []value {
	l, _ := v.([]value)
	return l
}

// logCategories lists the enabled categories of a diagnostic setting's logs.
func logCategories(v value) []string {
	var out []string
	for _, l := range asList(v) {
		cat, _ := get(l, "category")
		on, _ := get(l, "enabled")
		if render(on) == "true" {
			out = append(out, strings.Trim(render(cat), "'"))
		}
	}
	sort.Strings(out)
	return out
}

// Nothing secret is read, computed or put out: no list*() call (account
// keys, connection strings), no secure parameter, no output that names a
// secret, no value computed from the deployment's time.
func TestNoSecretsAndNothingTimeDependent(t *testing.T) {
	listCall := regexp.MustCompile(`\blist[A-Z][A-Za-z]*\(|\.list[A-Za-z]*\(`)
	forbidden := []string{"utcNow(", "newGuid(", "@secure", "AccountKey=", "SharedAccessSignature", "primaryMasterKey", "InstrumentationKey="}
	secretName := regexp.MustCompile(`(?i)secret|password|connectionstring|accountkey|masterkey|instrumentationkey|sas`)
	for path, f := range files(t) {
		code := f.code()
		if m := listCall.FindString(code); m != "" {
			t.Errorf("%s calls %s: no key or connection string is read", path, m)
		}
		for _, s := range forbidden {
			if strings.Contains(code, s) {
				t.Errorf("%s holds %q", path, s)
			}
		}
		for _, d := range f.decls {
			if d.kind != "output" {
				continue
			}
			if secretName.MatchString(d.name) || secretName.MatchString(render(d.body)) {
				t.Errorf("%s:%d: output %s = %s looks like a secret", path, d.line, d.name, render(d.body))
			}
		}
	}
}
