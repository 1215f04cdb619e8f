// Package config turns the environment into one typed, validated
// configuration. A bad setting stops the start with one clear line.
package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Config is every setting credvault reads. The names are the environment
// variables of local.settings.json.example.
type Config struct {
	DataDir     string        // CREDVAULT_DATA_DIR: every embedded file
	ListenAddr  string        // CREDVAULT_LISTEN_HOST + FUNCTIONS_CUSTOMHANDLER_PORT
	AuthMode    string        // CREDVAULT_AUTH_MODE: dev (entra and easyauth come later)
	KeyDomains  int           // CREDVAULT_KEY_DOMAINS: recorded at first start
	MaxVersions int           // CREDVAULT_MAX_VERSIONS
	KeyTTL      time.Duration // CREDVAULT_KEY_CACHE_TTL
	KeyGrace    time.Duration // CREDVAULT_KEY_GRACE
	LogLevel    string        // CREDVAULT_LOG_LEVEL: debug, info, warn, error
	InAzure     bool          // WEBSITE_INSTANCE_ID is set: running on App Service / Functions
}

// Auth modes.
const (
	AuthDev = "dev"
)

// Load reads the configuration from getenv (os.Getenv in main).
func Load(getenv func(string) string) (Config, error) {
	r := reader{getenv: getenv}
	c := Config{
		DataDir:     r.str("CREDVAULT_DATA_DIR", ".data"),
		AuthMode:    r.str("CREDVAULT_AUTH_MODE", AuthDev),
		KeyDomains:  r.int("CREDVAULT_KEY_DOMAINS", 16, 1, 1024),
		MaxVersions: r.int("CREDVAULT_MAX_VERSIONS", 25, 1, 1000),
		KeyTTL:      r.duration("CREDVAULT_KEY_CACHE_TTL", 10*time.Minute, time.Second, 24*time.Hour),
		KeyGrace:    r.duration("CREDVAULT_KEY_GRACE", 24*time.Hour, 0, 7*24*time.Hour),
		LogLevel:    r.str("CREDVAULT_LOG_LEVEL", "info"),
		InAzure:     getenv("WEBSITE_INSTANCE_ID") != "",
	}
	host := r.str("CREDVAULT_LISTEN_HOST", "127.0.0.1")
	port := r.int("FUNCTIONS_CUSTOMHANDLER_PORT", 8080, 1, 65535)
	c.ListenAddr = net.JoinHostPort(host, strconv.Itoa(port))

	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		r.fail("CREDVAULT_LOG_LEVEL", "must be debug, info, warn or error")
	}
	switch c.AuthMode {
	case AuthDev:
		if c.InAzure {
			r.fail("CREDVAULT_AUTH_MODE", "dev tokens are refused when running in Azure (WEBSITE_INSTANCE_ID is set)")
		}
	default:
		r.fail("CREDVAULT_AUTH_MODE", fmt.Sprintf("%q is not supported by this build (supported: dev)", c.AuthMode))
	}
	if c.InAzure {
		r.fail("CREDVAULT_DATA_DIR", "the local key file and embedded stores are refused when running in Azure (WEBSITE_INSTANCE_ID is set); configure Key Vault and Azure storage")
	}
	if r.err != nil {
		return Config{}, r.err
	}
	return c, nil
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
