package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// hashContext prefixes every identity hash: "credvault/v1 audit owner",
// "… caller", "… name", then a zero byte and the raw value.
const hashContext = "credvault/v1 audit "

// Hashes are the identity hashes the trail writes, as POST
// /api/admin/audit-hash returns them: hex HMAC-SHA256 (first 16 bytes) under
// the audit key of version Key. An empty input gives an empty hash; Key is 0
// when all three are empty.
type Hashes struct {
	Owner, Caller, Name string
	Key                 uint32
}

// hashID is HMAC-SHA256(key, "credvault/v1 audit " || label || 0x00 ||
// value), first 16 bytes, in hex; "" for an empty value.
func hashID(key []byte, label, value string) string {
	if value == "" {
		return ""
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(hashContext + label + "\x00"))
	m.Write([]byte(value))
	return hex.EncodeToString(m.Sum(nil)[:hashHexLen/2])
}

func hashes(key []byte, version uint32, owner, caller, name string) Hashes {
	if owner == "" && caller == "" && name == "" {
		return Hashes{}
	}
	return Hashes{
		Owner:  hashID(key, "owner", owner),
		Caller: hashID(key, "caller", caller),
		Name:   hashID(key, "name", name),
		Key:    version,
	}
}
