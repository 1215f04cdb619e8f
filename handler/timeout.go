package main

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/credvault/credvault/internal/functions"
)

// budgetMargin is what the rotation budget must leave of the host's
// function timeout: a run past its budget still finishes the page it is on.
const budgetMargin = time.Minute

// checkRotationBudget refuses a rotation budget that the host's
// functionTimeout (host.json in the app root, the working directory under
// the host and `make run`) would cut short: the host would stop the timer
// function in the middle of a page instead of letting it checkpoint. With
// no host.json, or no limit in it, there is nothing to check.
func checkRotationBudget(hostJSON string, budget time.Duration) error {
	h, err := functions.LoadHost(hostJSON)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	limit, ok, err := h.Timeout()
	if err != nil || !ok {
		return err
	}
	if budget > limit-budgetMargin {
		return fmt.Errorf("CREDVAULT_ROTATION_BUDGET %v must leave at least %v of host.json's functionTimeout %v, or the host stops the rotation mid-page: lower it to %v or less",
			budget, budgetMargin, limit, limit-budgetMargin)
	}
	return nil
}
