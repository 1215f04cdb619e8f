package appinsights

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// DefaultIngestionEndpoint is where telemetry goes when the connection
// string names neither an IngestionEndpoint nor an EndpointSuffix.
const DefaultIngestionEndpoint = "https://dc.services.visualstudio.com/"

// maxConnectionString is the longest connection string Microsoft supports.
const maxConnectionString = 4096

// ConnectionString is what credvault takes from an Application Insights
// connection string: the resource's instrumentation key and the ingestion
// endpoint to post to.
type ConnectionString struct {
	InstrumentationKey string // a GUID
	IngestionEndpoint  string // absolute URL ending in "/": https, or http to a loopback host
}

// String describes c without its instrumentation key.
func (c ConnectionString) String() string {
	return "InstrumentationKey=<redacted>;IngestionEndpoint=" + c.IngestionEndpoint
}

// ErrConnectionString is wrapped by every error of ParseConnectionString
// and New about the connection string. Those errors name the setting at
// fault, never its value.
var ErrConnectionString = errors.New("appinsights: invalid connection string")

// The connection string errors: fixed texts, so that no error can quote
// the instrumentation key or anything else the string holds.
var (
	errTooLong          = connErr("longer than 4096 characters")
	errNotKeyValue      = connErr("a setting is not Key=Value")
	errEmptyKey         = connErr("a setting has no key")
	errDuplicate        = connErr("a setting appears twice")
	errNoIKey           = connErr("InstrumentationKey is missing")
	errIKeyNotGUID      = connErr("InstrumentationKey is not a GUID")
	errEndpointNotURL   = connErr("IngestionEndpoint is not an absolute URL")
	errEndpointScheme   = connErr("IngestionEndpoint must use https (http only to a loopback host)")
	errEndpointExtras   = connErr("IngestionEndpoint must not carry user info, a query or a fragment")
	errSuffixNotDNSName = connErr("EndpointSuffix is not a DNS name")
	errLocationNotLabel = connErr("Location is not a DNS label")
)

func connErr(reason string) error { return fmt.Errorf("%w: %s", ErrConnectionString, reason) }

// ParseConnectionString parses an Application Insights connection string
// as Microsoft documents it: Key=Value settings separated by semicolons,
// keys case-insensitive, spaces around keys and values ignored, at most
// 4096 characters.
//
// InstrumentationKey is required and must be a GUID. IngestionEndpoint,
// when present, is the endpoint; else EndpointSuffix (with an optional
// Location) builds https://{location.}dc.{suffix}/; else the endpoint is
// DefaultIngestionEndpoint. Other settings (LiveEndpoint, ApplicationId,
// Authorization, …) are ignored. An http IngestionEndpoint is accepted
// only for a loopback host, for tests.
func ParseConnectionString(s string) (ConnectionString, error) {
	if len(s) > maxConnectionString {
		return ConnectionString{}, errTooLong
	}
	set, err := settings(s, func(k string) bool { return connectionKeys[k] })
	if err != nil {
		return ConnectionString{}, err
	}
	cs := ConnectionString{InstrumentationKey: set["instrumentationkey"]}
	if cs.InstrumentationKey == "" {
		return ConnectionString{}, errNoIKey
	}
	if !isGUID(cs.InstrumentationKey) {
		return ConnectionString{}, errIKeyNotGUID
	}
	switch endpoint, suffix, location := set["ingestionendpoint"], set["endpointsuffix"], set["location"]; {
	case endpoint != "":
		if cs.IngestionEndpoint, err = ingestionEndpoint(endpoint); err != nil {
			return ConnectionString{}, err
		}
	case suffix != "":
		if !isDNSName(suffix) {
			return ConnectionString{}, errSuffixNotDNSName
		}
		if location != "" && !isDNSLabel(location) {
			return ConnectionString{}, errLocationNotLabel
		}
		if location != "" {
			location += "."
		}
		cs.IngestionEndpoint = "https://" + strings.ToLower(location+"dc."+suffix) + "/"
	default:
		cs.IngestionEndpoint = DefaultIngestionEndpoint
	}
	return cs, nil
}

// connectionKeys are the settings credvault reads, lower-cased.
var connectionKeys = map[string]bool{"instrumentationkey": true, "ingestionendpoint": true, "endpointsuffix": true, "location": true}

// validate checks a ConnectionString built by hand as the parser would.
func (c ConnectionString) validate() (ConnectionString, error) {
	if c.InstrumentationKey == "" {
		return c, errNoIKey
	}
	if !isGUID(c.InstrumentationKey) {
		return c, errIKeyNotGUID
	}
	if c.IngestionEndpoint == "" {
		c.IngestionEndpoint = DefaultIngestionEndpoint
		return c, nil
	}
	var err error
	c.IngestionEndpoint, err = ingestionEndpoint(c.IngestionEndpoint)
	return c, err
}

// settings splits s into its Key=Value settings, keys lower-cased. Keys
// that keep(key) refuses are checked for form and dropped.
func settings(s string, keep func(key string) bool) (map[string]string, error) {
	set := map[string]string{}
	for _, f := range strings.Split(s, ";") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, errNotKeyValue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if k == "" {
			return nil, errEmptyKey
		}
		if !keep(k) {
			continue
		}
		if _, dup := set[k]; dup {
			return nil, errDuplicate
		}
		set[k] = strings.TrimSpace(v)
	}
	return set, nil
}

// ingestionEndpoint checks an IngestionEndpoint and gives it a final "/".
func ingestionEndpoint(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return "", errEndpointNotURL
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return "", errEndpointScheme
		}
	default:
		return "", errEndpointScheme
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		return "", errEndpointExtras
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		if u.RawPath != "" {
			u.RawPath += "/"
		}
	}
	return u.String(), nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// isGUID reports whether s is a GUID in its 8-4-4-4-12 hex digit form.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isHexDigit(c) {
				return false
			}
		}
	}
	return true
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDNSName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isDNSLabel(l) {
			return false
		}
	}
	return true
}

func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-') {
			return false
		}
	}
	return true
}
