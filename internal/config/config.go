// Package config turns the environment into one typed, validated
// configuration. A bad setting stops the start with one clear line.
package config

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/credvault/credvault/internal/identity"
)

// Config is every setting credvault reads. The names are the environment
// variables of local.settings.json.example.
type Config struct {
	DataDir     string        // CREDVAULT_DATA_DIR: every embedded file
	ListenAddr  string        // CREDVAULT_LISTEN_HOST + FUNCTIONS_CUSTOMHANDLER_PORT
	AuthMode    string        // CREDVAULT_AUTH_MODE: entra (default in Azure), easyauth, dev (default elsewhere)
	KeyDomains  int           // CREDVAULT_KEY_DOMAINS: recorded at first start
	MaxVersions int           // CREDVAULT_MAX_VERSIONS
	KeyTTL      time.Duration // CREDVAULT_KEY_CACHE_TTL
	KeyGrace    time.Duration // CREDVAULT_KEY_GRACE
	LogLevel    string        // CREDVAULT_LOG_LEVEL: debug, info, warn, error
	InAzure     bool          // WEBSITE_INSTANCE_ID is set: running on App Service / Functions

	Entra Entra // the Entra authority, tenants, audiences and role map (entra and easyauth modes)
	// EasyAuthEnabled: the platform says App Service Authentication is on
	// (WEBSITE_AUTH_ENABLED=True); easyauth mode requires it.
	EasyAuthEnabled bool

	KeyVault KeyVault // the CMK in Key Vault; zero: the local key file
	Blob     Blob     // ciphertext in Blob Storage; zero: files in the data dir
	Cosmos   Cosmos   // metadata in Cosmos DB; zero: the embedded database

	// CreateContainers creates the blob container and the Cosmos database
	// and container at start when missing (CREDVAULT_CREATE_CONTAINERS), for
	// emulators and first runs; in Azure the infrastructure creates them.
	CreateContainers bool
	// ManagedIdentityClientID selects a user-assigned managed identity
	// (AZURE_CLIENT_ID); in Azure the managed identity is the credential.
	ManagedIdentityClientID string

	Rotation Rotation // the rotation job's policy and schedule

	Audit     Audit     // the audit trail
	Telemetry Telemetry // Application Insights

	// CORSOrigins is CREDVAULT_CORS_ORIGINS: the exact origins
	// (scheme://host[:port]) a browser frontend may call from, for local
	// runs; refused in Azure, where the platform's CORS (set by infra/)
	// applies. Empty: the handler answers no CORS.
	CORSOrigins []string
}

// Audit configures the audit trail (DESIGN §7). Its store follows the blob
// backend: append blobs in AuditContainer of the same account, or files in
// the data dir's audit folder.
type Audit struct {
	// Mode is CREDVAULT_AUDIT_MODE: closed (default: nothing is released or
	// acknowledged unless its record is durable) or open (failures are
	// counted, logged and sent as telemetry; requests proceed).
	Mode      string
	Container string // CREDVAULT_AUDIT_CONTAINER, default audit (Azure only)
}

// Telemetry configures Application Insights; empty: slog lines only. The
// two strings are kept raw: package appinsights parses them, and a bad one
// is reported at start with one line, without its content.
type Telemetry struct {
	ConnectionString     string // APPLICATIONINSIGHTS_CONNECTION_STRING
	AuthenticationString string // APPLICATIONINSIGHTS_AUTHENTICATION_STRING: Authorization=AAD[;ClientId=…]
	RoleName             string // WEBSITE_SITE_NAME: cloud_RoleName
	RoleInstance         string // WEBSITE_INSTANCE_ID: cloud_RoleInstance
	// MetricsEvery is how often metrics are sent (CREDVAULT_METRICS_INTERVAL).
	MetricsEvery time.Duration
}

// Rotation is the rotation job's policy (DESIGN §6).
type Rotation struct {
	// Schedule is the rotate timer's NCRONTAB schedule, UTC
	// (CREDVAULT_ROTATION_SCHEDULE, which functions/rotate/function.json
	// names as %CREDVAULT_ROTATION_SCHEDULE%).
	Schedule     string
	DomainMaxAge time.Duration // CREDVAULT_DOMAIN_KEY_MAX_AGE
	KEKMaxAge    time.Duration // CREDVAULT_KEK_MAX_AGE
	GarbageGrace time.Duration // CREDVAULT_GARBAGE_GRACE
	Budget       time.Duration // CREDVAULT_ROTATION_BUDGET: stop and checkpoint before it
	// RunTimer runs the schedule inside the process (CREDVAULT_RUN_TIMER);
	// default on standalone, off under the Functions host, which fires the
	// timer itself.
	RunTimer bool
}

// Entra says whose Microsoft Entra tokens are accepted.
type Entra struct {
	Authority string   // CREDVAULT_ENTRA_AUTHORITY, https, no path; default https://login.microsoftonline.com
	Tenants   []string // CREDVAULT_ENTRA_TENANTS, comma-separated tenant ids (GUIDs), lower case
	Audiences []string // CREDVAULT_ENTRA_AUDIENCES, comma-separated: client id and/or application id URI
	// RoleMap is CREDVAULT_ENTRA_ROLE_MAP, "claimValue=Role,…": app-role and
	// scope values to the six roles. Nil: each role's own name maps to it.
	RoleMap map[string]identity.Role
}

// KeyVault locates the customer-managed key.
type KeyVault struct {
	URL     string // CREDVAULT_KEYVAULT_URL, https://<vault>.vault.azure.net/ (or a Managed HSM)
	KeyName string // CREDVAULT_KEY_NAME
}

// Blob locates the ciphertext container: an account URL (managed identity)
// or a connection string (Azurite).
type Blob struct {
	AccountURL       string // CREDVAULT_BLOB_ACCOUNT_URL
	ConnectionString string // CREDVAULT_BLOB_CONNECTION_STRING, for Azurite only
	Container        string // CREDVAULT_BLOB_CONTAINER
}

// Cosmos locates the metadata container.
type Cosmos struct {
	Endpoint  string // CREDVAULT_COSMOS_ENDPOINT
	Key       string // CREDVAULT_COSMOS_KEY, for the emulator only
	Database  string // CREDVAULT_COSMOS_DATABASE
	Container string // CREDVAULT_COSMOS_CONTAINER
}

// Auth modes.
const (
	AuthEntra    = "entra"    // verify Entra access tokens (the production default)
	AuthEasyAuth = "easyauth" // trust X-MS-CLIENT-PRINCIPAL from App Service Authentication
	AuthDev      = "dev"      // locally minted tokens; refused in Azure
)

// Load reads the configuration from getenv (os.Getenv in main).
func Load(getenv func(string) string) (Config, error) {
	r := reader{getenv: getenv}
	inAzure := getenv("WEBSITE_INSTANCE_ID") != ""
	defaultMode := AuthDev
	if inAzure {
		defaultMode = AuthEntra
	}
	c := Config{
		DataDir:     r.str("CREDVAULT_DATA_DIR", ".data"),
		AuthMode:    r.str("CREDVAULT_AUTH_MODE", defaultMode),
		KeyDomains:  r.int("CREDVAULT_KEY_DOMAINS", 16, 1, 1024),
		MaxVersions: r.int("CREDVAULT_MAX_VERSIONS", 25, 1, 1000),
		KeyTTL:      r.duration("CREDVAULT_KEY_CACHE_TTL", 10*time.Minute, time.Second, 24*time.Hour),
		KeyGrace:    r.duration("CREDVAULT_KEY_GRACE", 24*time.Hour, 0, 7*24*time.Hour),
		LogLevel:    r.str("CREDVAULT_LOG_LEVEL", "info"),
		InAzure:     inAzure,
		KeyVault: KeyVault{
			URL:     r.str("CREDVAULT_KEYVAULT_URL", ""),
			KeyName: r.str("CREDVAULT_KEY_NAME", ""),
		},
		Blob: Blob{
			AccountURL:       r.str("CREDVAULT_BLOB_ACCOUNT_URL", ""),
			ConnectionString: r.str("CREDVAULT_BLOB_CONNECTION_STRING", ""),
		},
		Cosmos: Cosmos{
			Endpoint: r.str("CREDVAULT_COSMOS_ENDPOINT", ""),
			Key:      r.str("CREDVAULT_COSMOS_KEY", ""),
		},
		CreateContainers:        r.bool("CREDVAULT_CREATE_CONTAINERS", false),
		ManagedIdentityClientID: r.str("AZURE_CLIENT_ID", ""),
	}
	if c.Blob != (Blob{}) {
		c.Blob.Container = r.str("CREDVAULT_BLOB_CONTAINER", "ciphertext")
	}
	if c.Cosmos != (Cosmos{}) {
		c.Cosmos.Database = r.str("CREDVAULT_COSMOS_DATABASE", "credvault")
		c.Cosmos.Container = r.str("CREDVAULT_COSMOS_CONTAINER", "metadata")
	}
	hosted := inAzure || getenv("AzureWebJobsScriptRoot") != ""
	c.Rotation = Rotation{
		Schedule:     r.str("CREDVAULT_ROTATION_SCHEDULE", "0 0 3 * * *"),
		DomainMaxAge: r.duration("CREDVAULT_DOMAIN_KEY_MAX_AGE", 90*24*time.Hour, time.Hour, 10*365*24*time.Hour),
		KEKMaxAge:    r.duration("CREDVAULT_KEK_MAX_AGE", 365*24*time.Hour, time.Hour, 10*365*24*time.Hour),
		GarbageGrace: r.duration("CREDVAULT_GARBAGE_GRACE", 24*time.Hour, time.Minute, 30*24*time.Hour),
		Budget:       r.duration("CREDVAULT_ROTATION_BUDGET", 8*time.Minute, 10*time.Second, time.Hour),
		RunTimer:     r.bool("CREDVAULT_RUN_TIMER", !hosted),
	}
	r.backends(&c)
	c.Audit = Audit{Mode: r.str("CREDVAULT_AUDIT_MODE", "closed")}
	if c.Blob != (Blob{}) {
		c.Audit.Container = r.str("CREDVAULT_AUDIT_CONTAINER", "audit")
	}
	if c.Audit.Mode != "closed" && c.Audit.Mode != "open" {
		r.fail("CREDVAULT_AUDIT_MODE", "must be closed (the default: no value released, no write acknowledged, unless its audit record is durable) or open")
	}
	c.Telemetry = Telemetry{
		ConnectionString:     strings.TrimSpace(getenv("APPLICATIONINSIGHTS_CONNECTION_STRING")),
		AuthenticationString: strings.TrimSpace(getenv("APPLICATIONINSIGHTS_AUTHENTICATION_STRING")),
		RoleName:             getenv("WEBSITE_SITE_NAME"),
		RoleInstance:         getenv("WEBSITE_INSTANCE_ID"),
		MetricsEvery:         r.duration("CREDVAULT_METRICS_INTERVAL", time.Minute, time.Second, time.Hour),
	}
	host := r.str("CREDVAULT_LISTEN_HOST", "127.0.0.1")
	port := r.int("FUNCTIONS_CUSTOMHANDLER_PORT", 8080, 1, 65535)
	c.ListenAddr = net.JoinHostPort(host, strconv.Itoa(port))

	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		r.fail("CREDVAULT_LOG_LEVEL", "must be debug, info, warn or error")
	}
	r.auth(&c)
	c.CORSOrigins = r.origins("CREDVAULT_CORS_ORIGINS", inAzure)
	if r.err != nil {
		return Config{}, r.err
	}
	return c, nil
}

// auth reads and checks the settings of the auth mode: entra needs tenants
// and audiences, easyauth needs tenants and the platform's word that App
// Service Authentication is on, dev is refused in Azure.
func (r *reader) auth(c *Config) {
	mode := "CREDVAULT_AUTH_MODE=" + c.AuthMode
	switch c.AuthMode {
	case AuthDev:
		if c.InAzure {
			r.fail("CREDVAULT_AUTH_MODE", "dev tokens are refused when running in Azure (WEBSITE_INSTANCE_ID is set); use entra or easyauth")
		}
		return
	case AuthEntra, AuthEasyAuth:
	default:
		r.fail("CREDVAULT_AUTH_MODE", fmt.Sprintf("%q is not an auth mode (entra, easyauth, dev)", c.AuthMode))
		return
	}
	authority, err := identity.ParseAuthority(r.str("CREDVAULT_ENTRA_AUTHORITY", ""))
	if err != nil {
		r.fail("CREDVAULT_ENTRA_AUTHORITY", "must be an https URL without a path, like "+identity.DefaultAuthority)
	}
	c.Entra = Entra{
		Authority: authority,
		Tenants:   r.list("CREDVAULT_ENTRA_TENANTS"),
		Audiences: r.list("CREDVAULT_ENTRA_AUDIENCES"),
		RoleMap:   r.roleMap("CREDVAULT_ENTRA_ROLE_MAP"),
	}
	if len(c.Entra.Tenants) == 0 {
		r.fail("CREDVAULT_ENTRA_TENANTS", "is required with "+mode+": the comma-separated ids (GUIDs) of the tenants whose callers are accepted")
	}
	for i, tid := range c.Entra.Tenants {
		if !identity.IsTenantID(tid) {
			r.fail("CREDVAULT_ENTRA_TENANTS", fmt.Sprintf("entry %d is not a tenant id (a GUID, not a domain name or common)", i+1))
		}
		c.Entra.Tenants[i] = strings.ToLower(tid)
	}
	switch c.AuthMode {
	case AuthEntra:
		if len(c.Entra.Audiences) == 0 {
			r.fail("CREDVAULT_ENTRA_AUDIENCES", "is required with "+mode+": the API's client id and/or application id URI (api://…), comma-separated")
		}
	case AuthEasyAuth:
		c.EasyAuthEnabled = strings.EqualFold(strings.TrimSpace(r.getenv("WEBSITE_AUTH_ENABLED")), "true")
		if !c.EasyAuthEnabled {
			r.fail("CREDVAULT_AUTH_MODE", "easyauth is refused: WEBSITE_AUTH_ENABLED is not True, so App Service Authentication is off and anyone could send X-MS-CLIENT-PRINCIPAL")
		}
	}
}

// origins reads a comma-separated list of exact browser origins, each as a
// browser sends it in its Origin header: http or https, lower-case host, a
// port only when not the scheme's default, nothing after. A wildcard is
// refused: the API's callers send credentials (a bearer token).
func (r *reader) origins(name string, inAzure bool) []string {
	list := r.list(name)
	if len(list) > 0 && inAzure {
		r.fail(name, "is refused when running in Azure (WEBSITE_INSTANCE_ID is set): the platform's CORS applies there, set by infra/ (corsAllowedOrigins)")
		return nil
	}
	for i, o := range list {
		if strings.Contains(o, "*") {
			r.fail(name, fmt.Sprintf("entry %d is a wildcard: list exact origins (scheme://host[:port]); callers send credentials in the Authorization header", i+1))
			return nil
		}
		u, err := url.Parse(o)
		ok := err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.User == nil &&
			u.Opaque == "" && u.Path == "" && !u.ForceQuery && u.RawQuery == "" && u.Fragment == "" && o == strings.ToLower(o)
		if ok {
			port := u.Port()
			ok = !strings.HasSuffix(u.Host, ":") && !(u.Scheme == "http" && port == "80") && !(u.Scheme == "https" && port == "443")
		}
		if !ok {
			r.fail(name, fmt.Sprintf("entry %d is not an origin as browsers send it: scheme://host[:port] in lower case, no path or trailing slash, no default port", i+1))
			return nil
		}
	}
	return list
}

// list reads a comma-separated list; empty entries are dropped.
func (r *reader) list(name string) []string {
	var out []string
	for _, s := range strings.Split(r.getenv(name), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// roleMap reads "claimValue=Role,…"; nil when the setting is empty.
func (r *reader) roleMap(name string) map[string]identity.Role {
	entries := r.list(name)
	if len(entries) == 0 {
		return nil
	}
	m := make(map[string]identity.Role, len(entries))
	for i, e := range entries {
		claim, role, ok := strings.Cut(e, "=")
		claim, role = strings.TrimSpace(claim), strings.TrimSpace(role)
		rl, err := identity.ParseRole(role)
		switch {
		case !ok || claim == "":
			r.fail(name, fmt.Sprintf("entry %d is not claimValue=Role", i+1))
		case err != nil:
			r.fail(name, fmt.Sprintf("entry %d: %q is not one of the roles %v", i+1, role, identity.AllRoles()))
		case m[claim] != "":
			r.fail(name, fmt.Sprintf("entry %d maps a claim value that an earlier entry maps", i+1))
		default:
			m[claim] = rl
		}
	}
	return m
}

// backends checks the backend settings: each Azure backend complete and
// well-formed, and in Azure no local stand-in at all.
func (r *reader) backends(c *Config) {
	kv := c.KeyVault
	switch {
	case kv.URL == "" && kv.KeyName != "":
		r.fail("CREDVAULT_KEYVAULT_URL", "is required with CREDVAULT_KEY_NAME")
	case kv.URL != "" && kv.KeyName == "":
		r.fail("CREDVAULT_KEY_NAME", "is required with CREDVAULT_KEYVAULT_URL")
	case kv.URL != "" && !isHTTPS(kv.URL):
		r.fail("CREDVAULT_KEYVAULT_URL", "must be an https URL")
	}
	b := c.Blob
	switch {
	case b.AccountURL != "" && b.ConnectionString != "":
		r.fail("CREDVAULT_BLOB_ACCOUNT_URL", "and CREDVAULT_BLOB_CONNECTION_STRING exclude each other")
	case b.AccountURL != "" && !isHTTPS(b.AccountURL):
		r.fail("CREDVAULT_BLOB_ACCOUNT_URL", "must be an https URL")
	case b.ConnectionString != "" && c.InAzure:
		r.fail("CREDVAULT_BLOB_CONNECTION_STRING", "is for Azurite only; in Azure set CREDVAULT_BLOB_ACCOUNT_URL (managed identity)")
	}
	cs := c.Cosmos
	switch {
	case cs.Endpoint == "" && cs.Key != "":
		r.fail("CREDVAULT_COSMOS_ENDPOINT", "is required with CREDVAULT_COSMOS_KEY")
	case cs.Endpoint != "" && !isHTTPURL(cs.Endpoint):
		r.fail("CREDVAULT_COSMOS_ENDPOINT", "must be an http(s) URL")
	case cs.Key != "" && c.InAzure:
		r.fail("CREDVAULT_COSMOS_KEY", "is for the emulator only; in Azure local authentication is off and the managed identity is used")
	case cs.Endpoint != "" && cs.Key == "" && !isHTTPS(cs.Endpoint):
		r.fail("CREDVAULT_COSMOS_ENDPOINT", "must be https with Entra authentication")
	}
	if c.InAzure {
		switch {
		case kv.URL == "":
			r.fail("CREDVAULT_KEYVAULT_URL", "is required when running in Azure (WEBSITE_INSTANCE_ID is set): the local key file is refused there")
		case b.AccountURL == "":
			r.fail("CREDVAULT_BLOB_ACCOUNT_URL", "is required when running in Azure (WEBSITE_INSTANCE_ID is set): the embedded stores are refused there")
		case cs.Endpoint == "":
			r.fail("CREDVAULT_COSMOS_ENDPOINT", "is required when running in Azure (WEBSITE_INSTANCE_ID is set): the embedded stores are refused there")
		}
	}
}

func isHTTPS(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && u.Host != ""
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

type reader struct {
	getenv func(string) string
	err    error
}

func (r *reader) fail(name, reason string) {
	if r.err == nil {
		r.err = fmt.Errorf("configuration: %s %s", name, reason)
	}
}

func (r *reader) str(name, def string) string {
	if v := strings.TrimSpace(r.getenv(name)); v != "" {
		return v
	}
	return def
}

func (r *reader) bool(name string, def bool) bool {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, "must be true or false")
		return def
	}
	return b
}

func (r *reader) int(name string, def, lo, hi int) int {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		r.fail(name, fmt.Sprintf("must be an integer from %d to %d", lo, hi))
		return def
	}
	return n
}

func (r *reader) duration(name string, def, lo, hi time.Duration) time.Duration {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		r.fail(name, fmt.Sprintf("must be a duration (like 10m) from %s to %s", lo, hi))
		return def
	}
	return d
}
