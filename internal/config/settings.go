package config

// Source says who sets an environment setting where credvault runs.
type Source int

const (
	// App settings are set by the deployment: infra/ sets every one of them
	// in Azure, and local.settings.json.example lists them.
	App Source = iota + 1
	// Platform settings are set by App Service or the Functions host itself;
	// no deployment and no local settings file sets them.
	Platform
	// Local settings serve emulators and runs on a laptop. In Azure they are
	// refused or have no use, so the deployment never sets them; the example
	// file lists them.
	Local
)

func (s Source) String() string {
	switch s {
	case App:
		return "app"
	case Platform:
		return "platform"
	case Local:
		return "local"
	}
	return "unknown"
}

// Setting is one environment variable the binary reads.
type Setting struct {
	Name   string
	Source Source
}

// InExample says whether local.settings.json.example lists the setting:
// every one but those the platform sets.
func (s Setting) InExample() bool { return s.Source != Platform }

// Settings is every environment setting the binary reads, in the order of
// the README's configuration table, then the platform's settings read only
// for telemetry names and to notice the Functions host. A test keeps it equal
// to what Load reads; infra's tests check the Bicep and
// local.settings.json.example against it.
func Settings() []Setting {
	return []Setting{
		{"CREDVAULT_DATA_DIR", Local},
		{"CREDVAULT_AUTH_MODE", App},
		{"CREDVAULT_ENTRA_AUTHORITY", App},
		{"CREDVAULT_ENTRA_TENANTS", App},
		{"CREDVAULT_ENTRA_AUDIENCES", App},
		{"CREDVAULT_ENTRA_ROLE_MAP", App},
		{"WEBSITE_AUTH_ENABLED", Platform},
		{"CREDVAULT_LISTEN_HOST", App},
		{"FUNCTIONS_CUSTOMHANDLER_PORT", Platform},
		{"CREDVAULT_KEY_DOMAINS", App},
		{"CREDVAULT_MAX_VERSIONS", App},
		{"CREDVAULT_KEY_CACHE_TTL", App},
		{"CREDVAULT_KEY_GRACE", App},
		{"CREDVAULT_LOG_LEVEL", App},
		{"CREDVAULT_KEYVAULT_URL", App},
		{"CREDVAULT_KEY_NAME", App},
		{"CREDVAULT_BLOB_ACCOUNT_URL", App},
		{"CREDVAULT_BLOB_CONNECTION_STRING", Local}, // Azurite only; refused in Azure
		{"CREDVAULT_BLOB_CONTAINER", App},
		{"CREDVAULT_COSMOS_ENDPOINT", App},
		{"CREDVAULT_COSMOS_KEY", Local}, // the emulator's key only; refused in Azure
		{"CREDVAULT_COSMOS_DATABASE", App},
		{"CREDVAULT_COSMOS_CONTAINER", App},
		{"CREDVAULT_CREATE_CONTAINERS", App},
		{"AZURE_CLIENT_ID", App},
		{"CREDVAULT_ROTATION_SCHEDULE", App},
		{"CREDVAULT_DOMAIN_KEY_MAX_AGE", App},
		{"CREDVAULT_KEK_MAX_AGE", App},
		{"CREDVAULT_GARBAGE_GRACE", App},
		{"CREDVAULT_ROTATION_BUDGET", App},
		{"CREDVAULT_RUN_TIMER", App},
		{"CREDVAULT_AUDIT_MODE", App},
		{"CREDVAULT_AUDIT_CONTAINER", App},
		{"APPLICATIONINSIGHTS_CONNECTION_STRING", App},
		{"APPLICATIONINSIGHTS_AUTHENTICATION_STRING", App},
		{"CREDVAULT_METRICS_INTERVAL", App},
		{"CREDVAULT_CORS_ORIGINS", Local}, // the handler's own CORS; refused in Azure, where the platform's applies
		{"WEBSITE_SITE_NAME", Platform},
		{"WEBSITE_INSTANCE_ID", Platform},
		{"AzureWebJobsScriptRoot", Platform},
	}
}
