package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/rotation"
	"github.com/credvault/credvault/internal/store"
	"github.com/credvault/credvault/internal/vault"
)

// problem is an RFC 9457 problem details body.
type problem struct {
	Type          string `json:"type"`
	Title         string `json:"title"`
	Status        int    `json:"status"`
	Detail        string `json:"detail,omitempty"`
	CorrelationID string `json:"correlationId"`
}

var (
	errForbidden       = errors.New("the caller lacks the role this operation needs")
	errUnsupportedType = errors.New("the body must be application/json")
	errBodyTooLarge    = errors.New("the request body is too large")
	errMethod          = errors.New("method not allowed")
	errRoute           = errors.New("no such route")
	errPanic           = errors.New("panic")
	errCrossOrigin     = errors.New("the origin, method or request headers are not allowed for cross-origin calls")
)

// status is the one map from an error to an HTTP status and the text shown
// to the caller. The text never carries a value, token, key or owner id.
func status(err error) (int, string, string) {
	var inv *vault.InvalidError
	switch {
	case errors.As(err, &inv) && inv.TooLarge:
		return http.StatusRequestEntityTooLarge, "Payload Too Large", inv.Error()
	case errors.As(err, &inv):
		return http.StatusBadRequest, "Bad Request", inv.Error()
	case errors.Is(err, errBodyTooLarge):
		return http.StatusRequestEntityTooLarge, "Payload Too Large", err.Error()
	case errors.Is(err, errUnsupportedType):
		return http.StatusUnsupportedMediaType, "Unsupported Media Type", err.Error()
	case errors.Is(err, errRoute):
		return http.StatusNotFound, "Not Found", err.Error()
	case errors.Is(err, errMethod):
		return http.StatusMethodNotAllowed, "Method Not Allowed", err.Error()
	case errors.Is(err, identity.ErrKeysUnavailable):
		return http.StatusServiceUnavailable, "Service Unavailable", "the token signing keys cannot be fetched; retry later"
	case errors.Is(err, identity.ErrNoCredentials):
		return http.StatusUnauthorized, "Unauthorized", "a bearer token is required"
	case errors.Is(err, identity.ErrInvalidToken):
		return http.StatusUnauthorized, "Unauthorized", tokenClass(err)
	case errors.Is(err, errForbidden), errors.Is(err, errCrossOrigin):
		return http.StatusForbidden, "Forbidden", err.Error()
	case errors.Is(err, rotation.ErrInvalidOwner), errors.Is(err, rotation.ErrInvalidStep):
		return http.StatusBadRequest, "Bad Request", "the rotation request names an unknown step or owner"
	case errors.Is(err, rotation.ErrUnknownOwner):
		return http.StatusNotFound, "Not Found", "no such owner"
	case errors.Is(err, rotation.ErrNoReport):
		return http.StatusNotFound, "Not Found", "no rotation has run yet"
	case errors.Is(err, errNoRotation):
		return http.StatusServiceUnavailable, "Service Unavailable", "rotation is not configured"
	case errors.Is(err, vault.ErrNotFound):
		return http.StatusNotFound, "Not Found", "no such secret or version"
	case errors.Is(err, vault.ErrPrecondition):
		return http.StatusPreconditionFailed, "Precondition Failed", "the secret changed or exists; read it again"
	case errors.Is(err, vault.ErrConflict):
		return http.StatusConflict, "Conflict", "the secret's state does not allow this: a deleted secret must be restored or purged first, and only a deleted secret can be restored"
	case errors.Is(err, vault.ErrKeyRevoked), errors.Is(err, keyring.ErrRevoked):
		return http.StatusServiceUnavailable, "Service Unavailable", "the encryption key is disabled or access to it is revoked"
	case errors.Is(err, vault.ErrUnavailable), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, keyring.ErrUnavailable), errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable, "Service Unavailable", "a backend is unavailable; retry later"
	case errors.Is(err, audit.ErrUnavailable):
		return http.StatusServiceUnavailable, "Service Unavailable", "the audit trail cannot be written; nothing was released or changed by this answer; retry later"
	case errors.Is(err, errNoHasher):
		return http.StatusServiceUnavailable, "Service Unavailable", "the audit trail is not configured"
	case errors.Is(err, vault.ErrIntegrity):
		return http.StatusInternalServerError, "Internal Server Error", "stored data failed verification"
	default:
		return http.StatusInternalServerError, "Internal Server Error", "internal error"
	}
}

// tokenClass names which class of check a token failed, from the identity
// package's sentinels only.
func tokenClass(err error) string {
	for _, c := range []struct {
		err  error
		text string
	}{
		{identity.ErrMalformed, "the token is malformed"},
		{identity.ErrUnknownKey, "the token's signing key is unknown"},
		{identity.ErrSignature, "the token's signature is not valid"},
		{identity.ErrExpired, "the token has expired"},
		{identity.ErrNotYetValid, "the token is not valid yet"},
		{identity.ErrIssuer, "the token's issuer is not accepted"},
		{identity.ErrAudience, "the token's audience is not accepted"},
		{identity.ErrTenant, "the token's tenant is not allowed"},
		{identity.ErrClaims, "the token lacks required claims"},
	} {
		if errors.Is(err, c.err) {
			return c.text
		}
	}
	return "the token is not valid"
}

// writeProblem answers err as application/problem+json.
func writeProblem(w http.ResponseWriter, r *http.Request, err error) {
	code, title, detail := status(err)
	h := w.Header()
	switch code {
	case http.StatusUnauthorized:
		if errors.Is(err, identity.ErrInvalidToken) {
			h.Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		} else {
			h.Set("WWW-Authenticate", `Bearer`)
		}
	case http.StatusServiceUnavailable:
		h.Set("Retry-After", "5")
	case http.StatusMethodNotAllowed:
		// Allow is set by the caller that knows the route.
	}
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	rec := recordOf(r)
	rec.err = err
	json.NewEncoder(w).Encode(problem{Type: "about:blank", Title: title, Status: code, Detail: detail, CorrelationID: rec.correlationID})
}
