package vault

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
)

// A continuation token is opaque to callers and tamper-proof: the store's
// own token (an offset or a Cosmos DB token) sealed with HMAC-SHA256 under
// the deployment's page key (keyring.Hierarchy.PageKey, the same on every
// instance), bound to the listing it continues: whose (the owner hash, or
// the administrator's listing of every owner) and which (live or deleted
// secrets). A modified, truncated or forged token, or one from another
// owner or listing, is refused as invalid (HTTP 400) before the store sees
// it. The token is not encrypted: it carries no secret, only where the
// listing stopped.
//
//	token = base64url(0x01 || store token || HMAC-SHA256(page key, context || store token))

const (
	pageTokenVersion = 1
	pageMACSize      = sha256.Size
	// maxPageToken bounds the token a caller may send (a Cosmos DB token is
	// a few hundred bytes).
	maxPageToken = 16 << 10
)

// badPageToken is the answer to a token this listing did not issue.
func badPageToken() error {
	return &InvalidError{Field: "continuation", Reason: "is not a continuation token of this listing"}
}

// sealPage turns the store's continuation into the caller's token; "" stays "".
func (v *Vault) sealPage(ctx context.Context, partition string, deleted bool, storeToken string) (string, error) {
	if storeToken == "" {
		return "", nil
	}
	mac, err := v.pageMAC(ctx, partition, deleted, storeToken)
	if err != nil {
		return "", err
	}
	b := make([]byte, 0, 1+len(storeToken)+len(mac))
	b = append(b, pageTokenVersion)
	b = append(b, storeToken...)
	b = append(b, mac...)
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// openPage checks a caller's token and returns the store's continuation;
// "" stays "" (the first page).
func (v *Vault) openPage(ctx context.Context, partition string, deleted bool, token string) (string, error) {
	if token == "" {
		return "", nil
	}
	if len(token) > maxPageToken {
		return "", badPageToken()
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) < 1+1+pageMACSize || b[0] != pageTokenVersion {
		return "", badPageToken()
	}
	storeToken, got := string(b[1:len(b)-pageMACSize]), b[len(b)-pageMACSize:]
	want, err := v.pageMAC(ctx, partition, deleted, storeToken)
	if err != nil {
		return "", err
	}
	if !hmac.Equal(got, want) {
		return "", badPageToken()
	}
	return storeToken, nil
}

func (v *Vault) pageMAC(ctx context.Context, partition string, deleted bool, storeToken string) ([]byte, error) {
	key, err := v.keys.PageKey(ctx)
	if err != nil {
		return nil, backend("page key", err)
	}
	defer clear(key)
	listing, which := "owner", "live"
	if partition == "" {
		listing = "admin"
	}
	if deleted {
		which = "deleted"
	}
	m := hmac.New(sha256.New, key)
	for _, s := range []string{"credvault/v1 continuation", listing, partition, which} {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	m.Write([]byte(storeToken))
	return m.Sum(nil), nil
}
