package appinsights

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

// connectionStringErrors are all the errors ParseConnectionString returns:
// fixed texts, so none can echo its input.
var connectionStringErrors = []error{
	errTooLong, errNotKeyValue, errEmptyKey, errDuplicate, errNoIKey, errIKeyNotGUID,
	errEndpointNotURL, errEndpointScheme, errEndpointExtras, errSuffixNotDNSName, errLocationNotLabel,
}

var authenticationStringErrors = []error{
	errAuthTooLong, errAuthNotKeyValue, errAuthEmptyKey, errAuthDuplicate, errAuthUnknownKey, errAuthNotAAD, errAuthClientID,
}

// FuzzParseConnectionString checks that the parsers never panic, that
// their errors are fixed texts (so never echo the input), and that a
// parsed endpoint is https, or http to a loopback host.
func FuzzParseConnectionString(f *testing.F) {
	for _, file := range []string{"testdata/connection-strings.txt", "testdata/authentication-strings.txt"} {
		for _, v := range readVectors(f, file) {
			f.Add(v["in"])
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := ParseAuthenticationString(s); err != nil && !slices.Contains(authenticationStringErrors, err) {
			t.Fatalf("authentication string error %q is not one of the fixed errors", err)
		}
		cs, err := ParseConnectionString(s)
		if err != nil {
			if !slices.Contains(connectionStringErrors, err) {
				t.Fatalf("error %q is not one of the fixed errors", err)
			}
			return
		}
		if !isGUID(cs.InstrumentationKey) || !strings.Contains(s, cs.InstrumentationKey) {
			t.Fatalf("key %q is not a GUID from the input", cs.InstrumentationKey)
		}
		u, err := url.Parse(cs.IngestionEndpoint)
		if err != nil {
			t.Fatalf("endpoint %q does not parse: %v", cs.IngestionEndpoint, err)
		}
		if !(u.Scheme == "https" || u.Scheme == "http" && isLoopback(u.Hostname())) || u.Host == "" {
			t.Fatalf("endpoint %q is neither https nor http to a loopback host", cs.IngestionEndpoint)
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" || !strings.HasSuffix(u.Path, "/") {
			t.Fatalf("endpoint %q has user info, a query, a fragment or no final slash", cs.IngestionEndpoint)
		}
		again, err := cs.validate()
		if err != nil || again != cs {
			t.Fatalf("validate(%v) = %v, %v; want it unchanged", cs, again, err)
		}
	})
}
