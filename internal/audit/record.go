package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Format constants of a record (docs/audit.md).
const (
	formatVersion = 1
	timeLayout    = "2006-01-02T15:04:05.000000000Z" // always UTC, always nine digits
	hashHexLen    = 32                               // an identity hash: 16 bytes in hex
	maxLogIDLen   = 64
	// maxLineBytes bounds one line as Verify reads it; the trail refuses an
	// event whose text fields could make a longer one (maxEventText).
	maxLineBytes = 1 << 20
	maxEventText = 64 << 10
)

// zeroHash is the prev of a log's first record.
var zeroHash = strings.Repeat("0", 64)

var errMalformed = errors.New("malformed record")

// record is one line of the trail. The field order is the format: a record
// is written by marshalling this struct and nothing else, and a line is a
// record only if it is exactly what marshalling its parse gives back.
type record struct {
	V           int      `json:"v"`
	Log         string   `json:"log"`
	Seq         uint64   `json:"seq"`
	Prev        string   `json:"prev"`
	Continues   string   `json:"continues,omitempty"`
	Time        string   `json:"time"`
	Op          string   `json:"op"`
	Outcome     string   `json:"outcome"`
	Status      int      `json:"status,omitempty"`
	Principal   string   `json:"principal,omitempty"`
	Roles       []string `json:"roles,omitempty"`
	Correlation string   `json:"correlation,omitempty"`
	Version     uint64   `json:"version,omitempty"`
	KEK         uint32   `json:"kek,omitempty"`
	CMK         string   `json:"cmk,omitempty"`
	Subject     string   `json:"subject,omitempty"`
	Count       int      `json:"count,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	Key         uint32   `json:"key,omitempty"`
	Owner       string   `json:"owner,omitempty"`
	Caller      string   `json:"caller,omitempty"`
	Name        string   `json:"name,omitempty"`
}

// newRecord is the event's record without its place in the chain (log,
// seq, prev, continues): the identities become hashes under key, version
// keyVersion. A nil key is allowed only for an event without identities.
func newRecord(e Event, at time.Time, key []byte, keyVersion uint32) record {
	r := record{
		V:           formatVersion,
		Time:        formatTime(at),
		Op:          e.Op,
		Outcome:     e.Outcome,
		Status:      e.Status,
		Principal:   e.Principal,
		Roles:       e.Roles,
		Correlation: e.Correlation,
		Version:     e.Version,
		KEK:         e.KEK,
		CMK:         e.CMK,
		Subject:     e.Subject,
		Count:       e.Count,
		Reason:      e.Reason,
	}
	if len(r.Roles) == 0 {
		r.Roles = nil // omitted: an empty list and no list are one record
	}
	if e.hasIdentities() {
		h := hashes(key, keyVersion, e.Owner, e.Caller, e.Name)
		r.Key, r.Owner, r.Caller, r.Name = h.Key, h.Owner, h.Caller, h.Name
	}
	return r
}

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// marshal is the record's line, without the "\n".
func (r *record) marshal() []byte {
	b, err := json.Marshal(r)
	if err != nil {
		// Only strings, integers and a string slice: Marshal cannot fail.
		panic("audit: marshal record: " + err.Error())
	}
	return b
}

// parseRecord parses one line (without its "\n"). It accepts only the
// canonical encoding (what marshal writes) of a record that the trail could
// have written; errors wrap errMalformed and never quote the line.
func parseRecord(line []byte) (record, error) {
	var r record
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return record{}, fmt.Errorf("%w: %v", errMalformed, describeJSONError(err))
	}
	if !bytes.Equal(r.marshal(), line) {
		return record{}, fmt.Errorf("%w: not in canonical form", errMalformed)
	}
	if err := r.validate(); err != nil {
		return record{}, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return r, nil
}

// describeJSONError keeps the class of a decoding error without the values
// that some of encoding/json's messages quote.
func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("not JSON (offset %d)", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %s: want %s", typ.Field, typ.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return "unknown field"
	default:
		return "not a JSON object"
	}
}

// validate checks what the struct's types cannot.
func (r *record) validate() error {
	switch {
	case r.V != formatVersion:
		return fmt.Errorf("version %d, want %d", r.V, formatVersion)
	case !validLogID(r.Log):
		return errors.New("log id: want 1 to 64 characters of 0-9 and a-z")
	case r.Seq == 0:
		return errors.New("seq 0: the first record is seq 1")
	case !isLowerHex(r.Prev, 64):
		return errors.New("prev: want 64 hex digits")
	}
	if r.Continues != "" {
		if _, err := parseSegmentName(r.Continues); err != nil {
			return fmt.Errorf("continues: %w", err)
		}
	}
	if t, err := time.Parse(timeLayout, r.Time); err != nil || formatTime(t) != r.Time {
		return errors.New("time: want RFC 3339 UTC with nine fractional digits")
	}
	for _, h := range []struct{ field, v string }{{"owner", r.Owner}, {"caller", r.Caller}, {"name", r.Name}} {
		if h.v != "" && !isLowerHex(h.v, hashHexLen) {
			return fmt.Errorf("%s: want %d hex digits", h.field, hashHexLen)
		}
	}
	if hashed := r.Owner != "" || r.Caller != "" || r.Name != ""; hashed != (r.Key != 0) {
		return errors.New("key: want a key version exactly when there are hashes")
	}
	return nil
}

// validLogID: 1 to 64 characters of [0-9a-z]. No '-' (it ends the log id in
// a segment name) and no '/'.
func validLogID(s string) bool {
	if len(s) == 0 || len(s) > maxLogIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
