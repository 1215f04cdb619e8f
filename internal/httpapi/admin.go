package httpapi

import (
	"net/http"

	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/vault"
)

func (s *server) adminList(w http.ResponseWriter, r *http.Request, _ identity.Principal) error {
	opt, err := listOptions(r)
	if err != nil {
		return err
	}
	page, err := s.vault.AdminList(r.Context(), opt)
	if err != nil {
		return err
	}
	eventOf(r).Count = len(page.Items)
	return writeJSON(w, http.StatusOK, page)
}

// maxOwnerBytes bounds the owner id an administrator names.
const maxOwnerBytes = 256

func (s *server) erase(w http.ResponseWriter, r *http.Request, _ identity.Principal) error {
	var b struct {
		Owner string `json:"owner"`
	}
	if err := decodeJSON(w, r, &b); err != nil {
		return err
	}
	if b.Owner == "" || len(b.Owner) > maxOwnerBytes {
		return &vault.InvalidError{Field: "owner", Reason: "must be the owner id (tenant/object), 1 to 256 bytes"}
	}
	eventOf(r).Owner = b.Owner // the erased owner; Caller stays the administrator
	rep, err := s.vault.Erase(r.Context(), b.Owner)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rep)
}
