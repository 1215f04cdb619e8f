package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/keyring"
	"github.com/credvault/credvault/internal/telemetry"
)

// auditedCMK records every wrap and unwrap asked of the CMK in the audit
// trail. Because domain keys are cached, these are rare: Key Vault's own logs
// see the same calls, and the trail says which request caused them.
type auditedCMK struct {
	cmk   keyring.Wrapper
	trail *audit.Trail // set once wiring is done, before the first call
}

var (
	_ keyring.Wrapper    = (*auditedCMK)(nil)
	_ keyring.CurrentKey = (*auditedCMK)(nil)
)

func (a *auditedCMK) Wrap(ctx context.Context, key, aad []byte) (keyring.Wrapped, error) {
	w, err := a.cmk.Wrap(ctx, key, aad)
	if rerr := a.record(ctx, audit.OpCMKWrap, w.KeyID, err); rerr != nil {
		return keyring.Wrapped{}, rerr
	}
	return w, err
}

func (a *auditedCMK) Unwrap(ctx context.Context, w keyring.Wrapped, aad []byte) ([]byte, error) {
	key, err := a.cmk.Unwrap(ctx, w, aad)
	if rerr := a.record(ctx, audit.OpCMKUnwrap, w.KeyID, err); rerr != nil {
		clear(key)
		return nil, rerr
	}
	return key, err
}

// CurrentKeyID passes the CMK's current version through, for rotation.
func (a *auditedCMK) CurrentKeyID(ctx context.Context) (string, error) {
	c, ok := a.cmk.(keyring.CurrentKey)
	if !ok {
		return "", errors.New("this CMK cannot name its current version")
	}
	return c.CurrentKeyID(ctx)
}

// record writes the operation's record; an error means it is not durable
// (closed mode), and the key must not be used: the cache then treats the
// CMK as unreachable.
func (a *auditedCMK) record(ctx context.Context, op, keyID string, err error) error {
	ev := audit.Event{Op: op, Principal: audit.PrincipalSystem, Outcome: audit.Success,
		CMK: keyID[strings.LastIndexByte(keyID, '/')+1:]}
	if span, ok := telemetry.SpanFrom(ctx); ok {
		ev.Correlation = span.TraceID
	}
	switch {
	case err == nil:
	case errors.Is(err, keyring.ErrRevoked):
		ev.Outcome, ev.Reason = audit.Denied, "revoked"
	case errors.Is(err, keyring.ErrUnavailable):
		ev.Outcome, ev.Reason = audit.Error, "unavailable"
	default:
		ev.Outcome, ev.Reason = audit.Error, "error"
	}
	if rerr := a.trail.Record(ctx, ev); rerr != nil {
		return fmt.Errorf("cmk %s not audited: %w: %w", op, keyring.ErrUnavailable, rerr)
	}
	return nil
}
