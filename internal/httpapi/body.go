package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/credvault/credvault/internal/vault"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 1 << 20

// decodeJSON reads a JSON object body into v: application/json only (415),
// at most MaxBodyBytes (413), no unknown fields and nothing after the object
// (400). It runs before any backend call.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return errUnsupportedType
	}
	if r.ContentLength > MaxBodyBytes {
		return errBodyTooLarge
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			return badBody("unexpected data after the JSON object")
		}
		return bodyError(err)
	}
	return nil
}

func bodyError(err error) error {
	var tooLarge *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooLarge):
		return errBodyTooLarge
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badBody("not valid JSON")
	case errors.As(err, &typ):
		if typ.Field != "" {
			return badBody(fmt.Sprintf("field %q must be %s", typ.Field, kindName(typ.Type)))
		}
		return badBody("must be a JSON object")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		if len(field) > 64 {
			field = field[:64] + "…"
		}
		return badBody("unknown field " + field)
	default:
		return badBody("cannot be read")
	}
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Map, reflect.Struct:
		return "an object"
	default:
		return "of another type"
	}
}

func badBody(reason string) error { return &vault.InvalidError{Field: "body", Reason: reason} }

// writeJSON answers v as application/json.
func writeJSON(w http.ResponseWriter, code int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v) // the status is sent: a failure here is the client's connection
	return nil
}
