package vault

import (
	"encoding/json"
	"fmt"
	"regexp"
	"unicode"
	"unicode/utf8"
)

// Limits of a secret, checked before any backend call.
const (
	MaxValueBytes       = 64 << 10 // the JSON value, as sent
	MaxTags             = 15
	MaxTagKeyBytes      = 128
	MaxTagValueBytes    = 256
	MaxContentTypeBytes = 255
)

// NamePattern is the grammar of a secret name.
var NamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// InvalidError is bad input: what is wrong, safe to show the caller (it never
// contains the value).
type InvalidError struct {
	Field, Reason string
	TooLarge      bool // the value exceeds its size limit (HTTP 413)
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Reason }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ValidateName checks a secret name.
func ValidateName(name string) error {
	if !NamePattern.MatchString(name) {
		return invalid("name", "must match %s", NamePattern)
	}
	return nil
}

// PutRequest is a new version of a secret.
type PutRequest struct {
	Name        string
	Value       json.RawMessage   // any JSON value
	ContentType string            // optional
	Tags        map[string]string // optional
	IfMatch     string            // "" or the ETag the caller last saw ("*": must exist)
	IfNoneMatch bool              // create only: fail if the secret exists
	By          string            // who writes it, shown as createdBy
}

// Validate checks every limit of the request.
func (r *PutRequest) Validate() error {
	if err := ValidateName(r.Name); err != nil {
		return err
	}
	if len(r.Value) == 0 {
		return invalid("value", "is required")
	}
	if len(r.Value) > MaxValueBytes {
		return &InvalidError{Field: "value", Reason: fmt.Sprintf("exceeds %d bytes", MaxValueBytes), TooLarge: true}
	}
	if !json.Valid(r.Value) {
		return invalid("value", "is not valid JSON")
	}
	if len(r.ContentType) > MaxContentTypeBytes || !printable(r.ContentType) {
		return invalid("contentType", "must be at most %d printable characters", MaxContentTypeBytes)
	}
	if len(r.Tags) > MaxTags {
		return invalid("tags", "at most %d tags", MaxTags)
	}
	for k, v := range r.Tags {
		if k == "" || len(k) > MaxTagKeyBytes || !printable(k) {
			return invalid("tags", "keys must be 1 to %d printable characters", MaxTagKeyBytes)
		}
		if len(v) > MaxTagValueBytes || !printable(v) {
			return invalid("tags", "values must be at most %d printable characters", MaxTagValueBytes)
		}
	}
	if r.IfMatch != "" && r.IfNoneMatch {
		return invalid("If-Match", "cannot be combined with If-None-Match")
	}
	return nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
