package appinsights

import (
	"errors"
	"fmt"
	"strings"
)

// Authentication is what APPLICATIONINSIGHTS_AUTHENTICATION_STRING asks
// for: Entra (AAD) authenticated ingestion, optionally as the
// user-assigned managed identity with ClientID.
type Authentication struct {
	AAD      bool
	ClientID string // a GUID, or empty for the default identity
}

// ErrAuthenticationString is wrapped by every error of
// ParseAuthenticationString. Those errors never quote the string.
var ErrAuthenticationString = errors.New("appinsights: invalid authentication string")

var (
	errAuthTooLong     = authErr("longer than 4096 characters")
	errAuthNotKeyValue = authErr("a setting is not Key=Value")
	errAuthEmptyKey    = authErr("a setting has no key")
	errAuthDuplicate   = authErr("a setting appears twice")
	errAuthUnknownKey  = authErr("only Authorization and ClientId are allowed")
	errAuthNotAAD      = authErr("Authorization must be AAD")
	errAuthClientID    = authErr("ClientId is not a GUID")
)

func authErr(reason string) error { return fmt.Errorf("%w: %s", ErrAuthenticationString, reason) }

// ParseAuthenticationString parses the APPLICATIONINSIGHTS_AUTHENTICATION_STRING
// setting: "Authorization=AAD", optionally followed by ";ClientId=<guid>"
// (keys and AAD case-insensitive). An empty string means no Entra
// authentication; anything else is an error.
func ParseAuthenticationString(s string) (Authentication, error) {
	if strings.TrimSpace(s) == "" {
		return Authentication{}, nil
	}
	if len(s) > maxConnectionString {
		return Authentication{}, errAuthTooLong
	}
	set, err := settings(s, func(string) bool { return true })
	switch {
	case errors.Is(err, errEmptyKey):
		return Authentication{}, errAuthEmptyKey
	case errors.Is(err, errDuplicate):
		return Authentication{}, errAuthDuplicate
	case err != nil:
		return Authentication{}, errAuthNotKeyValue
	}
	for k := range set {
		if k != "authorization" && k != "clientid" {
			return Authentication{}, errAuthUnknownKey
		}
	}
	if !strings.EqualFold(set["authorization"], "AAD") {
		return Authentication{}, errAuthNotAAD
	}
	a := Authentication{AAD: true}
	if id, ok := set["clientid"]; ok {
		if !isGUID(id) {
			return Authentication{}, errAuthClientID
		}
		a.ClientID = id
	}
	return a, nil
}
