package keyring

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/credvault/credvault/internal/envelope"
)

var update = flag.Bool("update", false, "write missing hierarchy vectors (go test ./internal/keyring/ -run TestHierarchyVectors -update)")

// A hierarchy vector pins one level of docs/keys.md: the owner hash, or a
// key wrapped under its parent with the AAD the code builds for it.
type hvector map[string]string

func (v hvector) hex(t *testing.T, k string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(v[k]), ""))
	if err != nil || v[k] == "" {
		t.Fatalf("field %s: %q %v", k, v[k], err)
	}
	return b
}

func (v hvector) num(t *testing.T, k string) uint32 {
	t.Helper()
	n, err := strconv.ParseUint(v[k], 10, 32)
	if err != nil {
		t.Fatalf("field %s: %v", k, err)
	}
	return uint32(n)
}

func readHVector(t *testing.T, path string) hvector {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, key := hvector{}, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "":
		case strings.HasPrefix(line, "  ") && key != "":
			v[key] += " " + strings.TrimSpace(line)
		default:
			k, val, ok := strings.Cut(line, ":")
			if !ok {
				t.Fatalf("%s: line %q", path, line)
			}
			key = k
			v[k] = strings.TrimSpace(val)
		}
	}
	return v
}

func seq(n int, from byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = from + byte(i)
	}
	return b
}

func hexLines(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); i += 16 {
		sb.WriteString("\n  " + strings.TrimSpace(fmt.Sprintf("% x", b[i:min(i+16, len(b))])))
	}
	return sb.String()
}

// frozen returns the vectors' inputs and, for -update, their expected
// outputs computed by the code once.
func frozen(t *testing.T) map[string]string {
	const owner = "72f988bf-86f1-41af-91ab-2d7cd011db47/0d9e1c3e-6f7a-4b8e-9d1a-3c5b7e9f2a41"
	indexKey, domainKey, kek := seq(32, 0x00), seq(32, 0x40), seq(32, 0x80)
	oh := ownerHash(indexKey, owner)
	wrap := func(wk, key, aad []byte) []byte {
		b, err := envelope.WrapKey(wk, key, aad, bytes.NewReader(seq(12, 0xc0)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	kekAADBytes := domainWrapper{d: 7}.aad(kekAAD(oh)(3), 2)
	indexAADBytes := domainWrapper{d: 0}.aad(indexAAD(1), 1)
	return map[string]string{
		"owner-hash.txt": fmt.Sprintf("# The owner hash: HMAC-SHA256(index key, \"credvault/v1 owner\" || 0x00 || owner)[:16], hex.\nindex_key: %x\nowner: %s\nowner_hash: %s\n", indexKey, owner, oh),
		"kek-wrap.txt": fmt.Sprintf("# Owner KEK version 3 wrapped by domain 7's key version 2 (wrapped key v1 of docs/format.md, nonce c0..cb).\n"+
			"domain: 7\ndomain_version: 2\ndomain_key: %x\nowner_hash: %s\nkek_version: 3\nkek: %x\naad:%s\nwrapped:%s\n",
			domainKey, oh, kek, hexLines(kekAADBytes), hexLines(wrap(domainKey, kek, kekAADBytes))),
		"index-wrap.txt": fmt.Sprintf("# The deployment's index key version 1 wrapped by domain 0's key version 1.\n"+
			"domain: 0\ndomain_version: 1\ndomain_key: %x\nindex_version: 1\nindex_key: %x\naad:%s\nwrapped:%s\n",
			domainKey, indexKey, hexLines(indexAADBytes), hexLines(wrap(domainKey, indexKey, indexAADBytes))),
		"domain-aad.txt": fmt.Sprintf("# The context a domain key version is bound to under the CMK (see internal/cmk for the binding).\ndomain: 5\ndomain_version: 4\naad:%s\n",
			hexLines(domainAAD(5)(4))),
	}
}

func TestHierarchyVectors(t *testing.T) {
	dir := filepath.Join("testdata", "vectors")
	if *update {
		for name, text := range frozen(t) {
			p := filepath.Join(dir, name)
			if _, err := os.Stat(p); err == nil {
				continue // frozen: never rewritten
			}
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*.txt"))
	slices.Sort(names)
	if len(names) != 4 {
		t.Fatalf("%d vectors in %s, want 4", len(names), dir)
	}
	for _, p := range names {
		v := readHVector(t, p)
		t.Run(filepath.Base(p), func(t *testing.T) {
			switch filepath.Base(p) {
			case "owner-hash.txt":
				if got := ownerHash(v.hex(t, "index_key"), v["owner"]); got != v["owner_hash"] {
					t.Fatalf("owner hash = %s, want %s", got, v["owner_hash"])
				}
			case "kek-wrap.txt", "index-wrap.txt":
				var aad []byte
				var want []byte
				if v["kek"] != "" {
					aad = domainWrapper{d: int(v.num(t, "domain"))}.aad(kekAAD(v["owner_hash"])(v.num(t, "kek_version")), v.num(t, "domain_version"))
					want = v.hex(t, "kek")
				} else {
					aad = domainWrapper{d: int(v.num(t, "domain"))}.aad(indexAAD(v.num(t, "index_version")), v.num(t, "domain_version"))
					want = v.hex(t, "index_key")
				}
				if !bytes.Equal(aad, v.hex(t, "aad")) {
					t.Fatalf("the code builds aad %x, the vector says %x", aad, v.hex(t, "aad"))
				}
				got, err := envelope.UnwrapKey(v.hex(t, "domain_key"), v.hex(t, "wrapped"), aad)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("unwrap = %x, %v; want %x", got, err, want)
				}
				other := slices.Clone(aad)
				other[len(other)-1] ^= 1 // another domain version
				if _, err := envelope.UnwrapKey(v.hex(t, "domain_key"), v.hex(t, "wrapped"), other); err == nil {
					t.Fatal("unwrapped under another context")
				}
			case "domain-aad.txt":
				if got := domainAAD(int(v.num(t, "domain")))(v.num(t, "domain_version")); !bytes.Equal(got, v.hex(t, "aad")) {
					t.Fatalf("domain aad = %x, want %x", got, v.hex(t, "aad"))
				}
			default:
				t.Fatalf("unknown vector %s", p)
			}
		})
	}
}
