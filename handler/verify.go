package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/credvault/credvault/internal/audit"
	"github.com/credvault/credvault/internal/config"
)

// verifyAudit is `handler audit verify [--from TIME]`: it reads the trail
// where the service writes it (the data dir's files, or the audit container
// of the blob account), checks every chain, prints the gaps and broken links
// it finds, and fails when there are any.
func verifyAudit(ctx context.Context, cfg config.Config, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	from := fs.String("from", "", "check only segments from this time on (RFC 3339, or a date 2006-01-02)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var opt audit.VerifyOptions
	if *from != "" {
		t, err := time.Parse(time.RFC3339, *from)
		if err != nil {
			if t, err = time.Parse(time.DateOnly, *from); err != nil {
				return fmt.Errorf("audit verify: --from %q is not an RFC 3339 time or a date", *from)
			}
		}
		opt.From = t
	}
	store, err := openAuditStore(ctx, cfg, func() (azcore.TokenCredential, error) { return credential(cfg) }, nil)
	if err != nil {
		return err
	}
	r, ok := store.(audit.Reader)
	if !ok {
		return errors.New("audit verify: this trail cannot be read back")
	}
	rep, err := audit.Verify(ctx, r, opt)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(stdout, "note: %s line %d: %s: %s\n", n.Segment, n.Line, n.Kind, n.Detail)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(stdout, "PROBLEM: %s line %d: %s: %s\n", p.Segment, p.Line, p.Kind, p.Detail)
	}
	fmt.Fprintf(stdout, "%d logs, %d segments, %d records, %d problems\n", rep.Logs, rep.Segments, rep.Records, len(rep.Problems))
	if !rep.OK() {
		return fmt.Errorf("audit verify: %d problems: the trail is not intact: %w", len(rep.Problems), audit.ErrCorrupt)
	}
	return nil
}
