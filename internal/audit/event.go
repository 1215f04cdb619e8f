package audit

import (
	"fmt"
	"log/slog"
	"strings"
)

func (e Event) hasIdentities() bool { return e.Owner != "" || e.Caller != "" || e.Name != "" }

// textSize is the number of bytes of the event's free text fields, which
// bound the size of its record.
func (e Event) textSize() int {
	n := len(e.Op) + len(e.Outcome) + len(e.Principal) + len(e.Correlation) + len(e.CMK) + len(e.Subject) + len(e.Reason)
	for _, r := range e.Roles {
		n += len(r) + 3
	}
	return n
}

// String describes the event without its raw identities: only whether each
// is set. fmt's %v, %+v and %s print this.
func (e Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "audit event %s %s", e.Op, e.Outcome)
	if e.Status != 0 {
		fmt.Fprintf(&b, " status=%d", e.Status)
	}
	if e.Correlation != "" {
		fmt.Fprintf(&b, " correlation=%s", e.Correlation)
	}
	for _, id := range []struct {
		name string
		set  bool
	}{{"owner", e.Owner != ""}, {"caller", e.Caller != ""}, {"name", e.Name != ""}} {
		if id.set {
			fmt.Fprintf(&b, " %s=(set)", id.name)
		}
	}
	return b.String()
}

// GoString is String: %#v does not print the raw identities either.
func (e Event) GoString() string { return e.String() }

// LogValue logs the event without its raw identities (slog).
func (e Event) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("op", e.Op), slog.String("outcome", e.Outcome)}
	if e.Status != 0 {
		attrs = append(attrs, slog.Int("status", e.Status))
	}
	if e.Correlation != "" {
		attrs = append(attrs, slog.String("correlation", e.Correlation))
	}
	attrs = append(attrs, slog.Bool("owner_set", e.Owner != ""), slog.Bool("caller_set", e.Caller != ""), slog.Bool("name_set", e.Name != ""))
	return slog.GroupValue(attrs...)
}
