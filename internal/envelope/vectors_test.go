package envelope

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// The vectors under testdata/ are frozen known answers: one vector per file, a
// `key: value` text format a reader can open (see docs/format.md). They were
// generated once with
//
//	go test ./internal/envelope/ -run TestVectors -update
//
// The -update flag goes after the package, so that go test hands it to the
// test binary. It writes only the files that do not exist yet and fails on a
// file that differs from what the generator would write: a frozen vector is
// never rewritten by accident. Delete a file on purpose to regenerate it.
var update = flag.Bool("update", false, "write missing test vectors under testdata/ (never overwrites a frozen one)")

const (
	vectorsDir = "testdata/vectors"
	wrapDir    = "testdata/wrap"
	formatDoc  = "../../docs/format.md"
	workedName = "ok-json-value.txt" // the vector copied into docs/format.md
)

// expectations of a vector file
const (
	expectOK      = "ok"
	expectOpen    = "open failure"
	expectFormat  = "format failure"
	failsAtCommit = "commitment"
	failsAtAuth   = "authentication"
)

// vector is one parsed vector file: fields by key.
type vector struct {
	path   string
	fields map[string]string
}

// readVector parses a vector file. Lines starting with '#' are comments;
// "key: value" starts a field; an indented line continues the previous field
// (long hex values are split over several lines).
func readVector(t testing.TB, path string) vector {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read vector: %v", err)
	}
	v := vector{path: path, fields: map[string]string{}}
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRightFunc(sc.Text(), unicode.IsSpace)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case line[0] == ' ' || line[0] == '\t':
			if last == "" {
				t.Fatalf("%s:%d: continuation line before any field", path, n)
			}
			v.fields[last] += " " + strings.TrimSpace(line)
		default:
			key, value, ok := strings.Cut(line, ":")
			if !ok {
				t.Fatalf("%s:%d: want `key: value`, got %q", path, n, line)
			}
			if _, dup := v.fields[key]; dup {
				t.Fatalf("%s:%d: field %q given twice", path, n, key)
			}
			v.fields[key] = strings.TrimSpace(value)
			last = key
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read vector %s: %v", path, err)
	}
	return v
}

func (v vector) has(key string) bool { _, ok := v.fields[key]; return ok }

func (v vector) str(t testing.TB, key string) string {
	t.Helper()
	s, ok := v.fields[key]
	if !ok {
		t.Fatalf("%s: missing field %q", v.path, key)
	}
	return s
}

// hex decodes a hex field, ignoring whitespace.
func (v vector) hex(t testing.TB, key string) []byte {
	t.Helper()
	s := strings.Join(strings.Fields(v.str(t, key)), "")
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("%s: field %q is not hex: %v", v.path, key, err)
	}
	return b
}

func (v vector) uint(t testing.TB, key string, bits int) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(v.str(t, key), 10, bits)
	if err != nil {
		t.Fatalf("%s: field %q: %v", v.path, key, err)
	}
	return n
}

func (v vector) identity(t testing.TB) Identity {
	t.Helper()
	return Identity{
		Owner:      string(v.hex(t, "owner")),
		Name:       string(v.hex(t, "name")),
		Version:    v.uint(t, "version", 64),
		KEKVersion: uint32(v.uint(t, "kek_version", 32)),
	}
}

// vectorFiles lists the *.txt files of dir; an empty folder fails the test.
func vectorFiles(t testing.TB, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no vectors in %s (generate them with -update)", dir)
	}
	return files
}

func checkExpectedError(t testing.TB, v vector, err error) {
	t.Helper()
	switch expect := v.str(t, "expect"); expect {
	case expectOpen:
		if !errors.Is(err, ErrOpen) {
			t.Fatalf("open a vector that must not open: err = %v, want ErrOpen", err)
		}
		if v.has("fails_at") {
			want := map[string]error{failsAtCommit: errCommitment, failsAtAuth: errAuth}[v.str(t, "fails_at")]
			if want == nil {
				t.Fatalf("%s: unknown fails_at %q", v.path, v.str(t, "fails_at"))
			}
			if !errors.Is(err, want) {
				t.Fatalf("refused at the wrong check: err = %v, want it refused by %q", err, want)
			}
		}
	case expectFormat:
		if !errors.Is(err, ErrFormat) {
			t.Fatalf("open a malformed vector: err = %v, want ErrFormat", err)
		}
	default:
		t.Fatalf("%s: unknown expect %q", v.path, expect)
	}
}

// TestVectors checks every ciphertext vector: an ok vector must be what Seal
// writes byte for byte (its salt used as the random stream) and must open to
// its plaintext; a failure vector must fail Open with the named sentinel.
func TestVectors(t *testing.T) {
	if *update {
		writeVectors(t, vectorsDir, generateCiphertextVectors(t))
	}
	for _, path := range vectorFiles(t, vectorsDir) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			v := readVector(t, path)
			kek, id, ct := v.hex(t, "kek"), v.identity(t), v.hex(t, "ciphertext")

			pt, err := Open(kek, id, ct)
			if v.str(t, "expect") != expectOK {
				if err == nil {
					t.Fatalf("Open of a %q vector succeeded with %d bytes of plaintext", v.str(t, "expect"), len(pt))
				}
				checkExpectedError(t, v, err)
				return
			}
			if err != nil {
				t.Fatalf("Open of an ok vector: %v", err)
			}
			want := v.hex(t, "plaintext")
			if !bytes.Equal(pt, want) {
				t.Fatalf("Open of an ok vector = %x, want plaintext %x", pt, want)
			}

			salt := bytes.NewReader(v.hex(t, "salt"))
			got, err := Seal(kek, id, want, salt)
			if err != nil {
				t.Fatalf("Seal with the vector's salt: %v", err)
			}
			if !bytes.Equal(got, ct) {
				t.Fatalf("Seal with the vector's salt =\n%x\nwant the frozen ciphertext\n%x", got, ct)
			}
			if salt.Len() != 0 {
				t.Fatalf("Seal read %d bytes of randomness, want exactly %d", 32-salt.Len(), 32)
			}
			if got := specSeal(t, kek, id, v.hex(t, "salt"), want); !bytes.Equal(got, ct) {
				t.Fatalf("the spec of docs/format.md, implemented independently, gives\n%x\nwant the frozen ciphertext\n%x", got, ct)
			}
		})
	}
}

// TestVectorsWrap checks every wrapped key vector the same way: ok vectors
// are what WrapKey writes with the vector's nonce as the random stream, and
// unwrap to the key; failure vectors fail UnwrapKey with the named sentinel.
func TestVectorsWrap(t *testing.T) {
	if *update {
		writeVectors(t, wrapDir, generateWrapVectors(t))
	}
	for _, path := range vectorFiles(t, wrapDir) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			v := readVector(t, path)
			wk, aad, wrapped := v.hex(t, "wrapping_key"), v.hex(t, "aad"), v.hex(t, "wrapped")

			key, err := UnwrapKey(wk, wrapped, aad)
			if v.str(t, "expect") != expectOK {
				if err == nil {
					t.Fatalf("UnwrapKey of a %q vector succeeded", v.str(t, "expect"))
				}
				checkExpectedError(t, v, err)
				return
			}
			if err != nil {
				t.Fatalf("UnwrapKey of an ok vector: %v", err)
			}
			want := v.hex(t, "key")
			if !bytes.Equal(key, want) {
				t.Fatalf("UnwrapKey of an ok vector = %x, want key %x", key, want)
			}
			nonce := bytes.NewReader(v.hex(t, "nonce"))
			got, err := WrapKey(wk, want, aad, nonce)
			if err != nil {
				t.Fatalf("WrapKey with the vector's nonce: %v", err)
			}
			if !bytes.Equal(got, wrapped) {
				t.Fatalf("WrapKey with the vector's nonce =\n%x\nwant the frozen wrapped key\n%x", got, wrapped)
			}
			if nonce.Len() != 0 {
				t.Fatalf("WrapKey read %d bytes of randomness, want exactly %d", 12-nonce.Len(), 12)
			}
			if got := specWrap(t, wk, v.hex(t, "nonce"), want, aad); !bytes.Equal(got, wrapped) {
				t.Fatalf("the spec of docs/format.md, implemented independently, gives\n%x\nwant the frozen wrapped key\n%x", got, wrapped)
			}
		})
	}
}

// TestFormatDocWorkedVector checks that the worked vector in docs/format.md
// is, verbatim, a vector file that TestVectors checks.
func TestFormatDocWorkedVector(t *testing.T) {
	doc, err := os.ReadFile(formatDoc)
	if err != nil {
		t.Fatalf("read the format spec: %v", err)
	}
	vec, err := os.ReadFile(filepath.Join(vectorsDir, workedName))
	if err != nil {
		t.Fatalf("read the worked vector: %v", err)
	}
	if !bytes.Contains(doc, vec) {
		t.Fatalf("%s does not contain %s verbatim: copy the file into the worked example", formatDoc, workedName)
	}
}

// specSeal is Seal written again, straight from docs/format.md and with
// HKDF from RFC 5869 over crypto/hmac, so that the frozen vectors are checked
// against the document and not only against the code that wrote them.
func specSeal(t testing.TB, kek []byte, id Identity, salt, plaintext []byte) []byte {
	t.Helper()
	header := []byte{'c', 'v', 0x01}
	var aad []byte
	aad = append(aad, header...)
	aad = append(aad, "credvault/v1 secret\x00"...)
	aad = binary.BigEndian.AppendUint16(aad, uint16(len(id.Owner)))
	aad = append(aad, id.Owner...)
	aad = binary.BigEndian.AppendUint16(aad, uint16(len(id.Name)))
	aad = append(aad, id.Name...)
	aad = binary.BigEndian.AppendUint64(aad, id.Version)
	aad = binary.BigEndian.AppendUint32(aad, id.KEKVersion)

	info := append([]byte("credvault/v1 data key\x00"), aad...)
	okm := rfc5869(kek, salt, info, 64)
	dataKey, commitment := okm[:32], okm[32:]

	block, err := aes.NewCipher(dataKey)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	out := append(append(append([]byte{}, header...), salt...), commitment...)
	return gcm.Seal(out, make([]byte, 12), plaintext, aad)
}

// specWrap is WrapKey written again from docs/format.md.
func specWrap(t testing.TB, wrappingKey, nonce, key, callerAAD []byte) []byte {
	t.Helper()
	header := []byte{'c', 'k', 0x01}
	aad := append(append(append([]byte{}, header...), "credvault/v1 key\x00"...), callerAAD...)
	block, err := aes.NewCipher(wrappingKey)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return gcm.Seal(append(append([]byte{}, header...), nonce...), nonce, key, aad)
}

// rfc5869 is HKDF-SHA256 extract-then-expand as RFC 5869 writes it.
func rfc5869(ikm, salt, info []byte, length int) []byte {
	extract := hmac.New(sha256.New, salt)
	extract.Write(ikm)
	prk := extract.Sum(nil)
	var okm, prev []byte
	for i := byte(1); len(okm) < length; i++ {
		expand := hmac.New(sha256.New, prk)
		expand.Write(prev)
		expand.Write(info)
		expand.Write([]byte{i})
		prev = expand.Sum(nil)
		okm = append(okm, prev...)
	}
	return okm[:length]
}

// --- the generator, run only with -update --------------------------------

// testStream is the fixed byte stream a vector's randomness comes from:
// ChaCha8 seeded with a hash of the vector's name, so that each vector's salt
// or nonce depends on nothing else.
func testStream(name string) io.Reader {
	return rand.NewChaCha8(sha256.Sum256([]byte("credvault/v1 test vector\x00" + name)))
}

func readStream(t testing.TB, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// vectorKEK is the KEK of the ciphertext vectors and the wrapping key of the
// wrapped key vectors: 00 01 … 1f.
func vectorKEK() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

// flipBit returns a copy of b with one bit of byte i flipped (i < 0 counts
// from the end).
func flipBit(b []byte, i int, mask byte) []byte {
	c := bytes.Clone(b)
	if i < 0 {
		i += len(c)
	}
	c[i] ^= mask
	return c
}

type generated struct {
	name    string
	content []byte
}

// field is one line (or block) of a vector file.
type field struct{ key, value string }

func hexField(key string, b []byte) field {
	if len(b) <= 32 {
		return field{key, hex.EncodeToString(b)}
	}
	var sb strings.Builder
	for i := 0; i < len(b); i += 16 {
		sb.WriteString("\n ")
		for _, c := range b[i:min(i+16, len(b))] {
			fmt.Fprintf(&sb, " %02x", c)
		}
	}
	return field{key, sb.String()}
}

func identityFields(id Identity) []field {
	return []field{
		hexField("owner", []byte(id.Owner)),
		hexField("name", []byte(id.Name)),
		{"version", strconv.FormatUint(id.Version, 10)},
		{"kek_version", strconv.FormatUint(uint64(id.KEKVersion), 10)},
	}
}

func formatVector(header string, fields []field) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	for _, f := range fields {
		if f.value == "" || strings.HasPrefix(f.value, "\n") {
			fmt.Fprintf(&b, "%s:%s\n", f.key, f.value)
		} else {
			fmt.Fprintf(&b, "%s: %s\n", f.key, f.value)
		}
	}
	return b.Bytes()
}

const generatedBy = "# Frozen known-answer vector, written once by `go test ./internal/envelope/ -run TestVectors -update`.\n"

func describe(id Identity) string {
	return fmt.Sprintf("owner %q, name %q, version %d, kek_version %d", id.Owner, id.Name, id.Version, id.KEKVersion)
}

func generateCiphertextVectors(t *testing.T) []generated {
	t.Helper()
	kek := vectorKEK()
	base := Identity{Owner: "contoso/alice", Name: "github-token", Version: 3, KEKVersion: 1}

	var out []generated
	seal := func(name, comment string, id Identity, plaintext func(io.Reader) []byte) []byte {
		stream := testStream(name)
		salt := readStream(t, stream, 32)
		pt := plaintext(stream)
		ct, err := Seal(kek, id, pt, bytes.NewReader(salt))
		if err != nil {
			t.Fatalf("seal vector %s: %v", name, err)
		}
		fields := []field{{"comment", comment}, {"expect", expectOK}, hexField("kek", kek), hexField("salt", salt)}
		fields = append(fields, identityFields(id)...)
		fields = append(fields, hexField("plaintext", pt), hexField("ciphertext", ct))
		header := generatedBy + "# Ciphertext v1, sealed for " + describe(id) + ".\n"
		out = append(out, generated{name, formatVector(header, fields)})
		return ct
	}
	fixed := func(b string) func(io.Reader) []byte { return func(io.Reader) []byte { return []byte(b) } }

	seal("ok-empty-plaintext.txt", "empty plaintext: the ciphertext is the 83 bytes of overhead", base, fixed(""))
	jsonCT := seal(workedName, "a JSON value, as the vault stores it", base,
		fixed(`{"token":"ghp_16C7e42F292c6912E7710c838347Ae178B4a","scopes":["repo"]}`))
	seal("ok-1kib-value.txt", "a 1 KiB value (1024 bytes of the vector's fixed stream)", base,
		func(r io.Reader) []byte { return readStream(t, r, 1024) })
	seal("ok-edge-identity.txt", "empty owner, non-ASCII name, largest version and kek_version",
		Identity{Owner: "", Name: "名前/🔑", Version: math.MaxUint64, KEKVersion: math.MaxUint32}, fixed("edge"))

	fail := func(name, comment, expect, failsAt string, k []byte, id Identity, ct []byte) {
		fields := []field{{"comment", comment}, {"expect", expect}}
		if failsAt != "" {
			fields = append(fields, field{"fails_at", failsAt})
		}
		fields = append(fields, hexField("kek", k))
		fields = append(fields, identityFields(id)...)
		fields = append(fields, hexField("ciphertext", ct))
		header := generatedBy + "# Derived from " + workedName + ", sealed for " + describe(base) + " under kek 00 01 .. 1f;\n" +
			"# opened for " + describe(id) + ".\n"
		out = append(out, generated{name, formatVector(header, fields)})
	}
	with := func(f func(*Identity)) Identity { id := base; f(&id); return id }
	otherKEK := flipBit(kek, -1, 0x01)
	const sealedOff = headerSize + saltSize + commitmentSize

	fail("tampered-tag.txt", "last byte of the GCM tag flipped", expectOpen, failsAtAuth, kek, base, flipBit(jsonCT, -1, 0x01))
	fail("tampered-body.txt", "first byte of the GCM ciphertext flipped", expectOpen, failsAtAuth, kek, base, flipBit(jsonCT, sealedOff, 0x80))
	fail("tampered-salt.txt", "first byte of the salt flipped: another data key and commitment", expectOpen, failsAtCommit, kek, base, flipBit(jsonCT, headerSize, 0x01))
	fail("tampered-commitment.txt", "last byte of the commitment flipped", expectOpen, failsAtCommit, kek, base, flipBit(jsonCT, sealedOff-1, 0x01))
	fail("truncated-tag.txt", "last byte cut off: still long enough to parse, the tag no longer verifies", expectOpen, failsAtAuth, kek, base, jsonCT[:len(jsonCT)-1])
	fail("wrong-owner.txt", "opened as another owner (identity swap)", expectOpen, failsAtCommit, kek,
		with(func(id *Identity) { id.Owner = "contoso/mallory" }), jsonCT)
	fail("wrong-owner-name-boundary.txt", "owner and name shifted by one byte: same concatenation, the length prefixes differ", expectOpen, failsAtCommit, kek,
		with(func(id *Identity) { id.Owner, id.Name = "contoso/alic", "egithub-token" }), jsonCT)
	fail("swapped-owner-name.txt", "owner and name swapped", expectOpen, failsAtCommit, kek,
		with(func(id *Identity) { id.Owner, id.Name = id.Name, id.Owner }), jsonCT)
	fail("wrong-name.txt", "opened under another secret name", expectOpen, failsAtCommit, kek,
		with(func(id *Identity) { id.Name = "gitlab-token" }), jsonCT)
	fail("wrong-version.txt", "opened as another secret version", expectOpen, failsAtCommit, kek,
		with(func(id *Identity) { id.Version = 2 }), jsonCT)
	fail("wrong-kek-version.txt", "opened with another kek_version", expectOpen, failsAtCommit, kek,
		with(func(id *Identity) { id.KEKVersion = 2 }), jsonCT)
	fail("wrong-kek.txt", "opened with a KEK that differs in its last bit", expectOpen, failsAtCommit, otherKEK, base, jsonCT)
	fail("truncated.txt", "cut to 82 bytes, one less than the smallest ciphertext", expectFormat, "", kek, base, jsonCT[:overhead-1])
	fail("empty.txt", "no bytes at all", expectFormat, "", kek, base, nil)
	fail("bad-magic.txt", "magic 'c' 'k' (a wrapped key's) instead of 'c' 'v'", expectFormat, "", kek, base, flipBit(jsonCT, 1, 'v'^'k'))
	fail("unknown-version.txt", "version byte 0x02, which this code does not know", expectFormat, "", kek, base, flipBit(jsonCT, 2, 0x01^0x02))
	return out
}

func generateWrapVectors(t *testing.T) []generated {
	t.Helper()
	wk := vectorKEK()
	aad := []byte("keyring/contoso/alice/kek/1")
	var out []generated
	wrap := func(name, comment string, callerAAD []byte) []byte {
		stream := testStream(name)
		key := readStream(t, stream, 32)
		nonce := readStream(t, stream, 12)
		w, err := WrapKey(wk, key, callerAAD, bytes.NewReader(nonce))
		if err != nil {
			t.Fatalf("wrap vector %s: %v", name, err)
		}
		fields := []field{{"comment", comment}, {"expect", expectOK}, hexField("wrapping_key", wk),
			hexField("key", key), hexField("aad", callerAAD), hexField("nonce", nonce), hexField("wrapped", w)}
		header := generatedBy + fmt.Sprintf("# Wrapped key v1, caller aad %q.\n", callerAAD)
		out = append(out, generated{name, formatVector(header, fields)})
		return w
	}
	okWrapped := wrap("ok.txt", "a 32-byte key wrapped with caller aad", aad)
	wrap("ok-empty-aad.txt", "a 32-byte key wrapped with empty caller aad", nil)

	fail := func(name, comment, expect string, k, callerAAD, w []byte) {
		fields := []field{{"comment", comment}, {"expect", expect}, hexField("wrapping_key", k), hexField("aad", callerAAD), hexField("wrapped", w)}
		header := generatedBy + fmt.Sprintf("# Derived from ok.txt, wrapped under 00 01 .. 1f with caller aad %q.\n", aad)
		out = append(out, generated{name, formatVector(header, fields)})
	}
	fail("wrong-aad.txt", "unwrapped with another caller aad", expectOpen, wk, []byte("keyring/contoso/mallory/kek/1"), okWrapped)
	fail("empty-aad.txt", "unwrapped with empty caller aad", expectOpen, wk, nil, okWrapped)
	fail("wrong-key.txt", "unwrapped under a wrapping key that differs in its last bit", expectOpen, flipBit(wk, -1, 0x01), aad, okWrapped)
	fail("tampered-tag.txt", "last byte of the tag flipped", expectOpen, wk, aad, flipBit(okWrapped, -1, 0x01))
	fail("tampered-nonce.txt", "first byte of the nonce flipped", expectOpen, wk, aad, flipBit(okWrapped, headerSize, 0x01))
	fail("bad-length-short.txt", "62 bytes: last byte cut off", expectFormat, wk, aad, okWrapped[:wrappedSize-1])
	fail("bad-length-long.txt", "64 bytes: one byte appended", expectFormat, wk, aad, append(bytes.Clone(okWrapped), 0x00))
	fail("bad-magic.txt", "magic 'c' 'v' (a ciphertext's) instead of 'c' 'k'", expectFormat, wk, aad, flipBit(okWrapped, 1, 'v'^'k'))
	fail("unknown-version.txt", "version byte 0x02", expectFormat, wk, aad, flipBit(okWrapped, 2, 0x01^0x02))
	return out
}

// writeVectors writes the generated vectors that do not exist yet and fails
// on any existing file that differs: frozen vectors are never overwritten.
func writeVectors(t testing.TB, dir string, vectors []generated) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, g := range vectors {
		path := filepath.Join(dir, g.name)
		old, err := os.ReadFile(path)
		switch {
		case err == nil && bytes.Equal(old, g.content):
			continue
		case err == nil:
			t.Errorf("%s is frozen and differs from what the generator writes now: not overwritten (delete it on purpose to regenerate)", path)
		case errors.Is(err, os.ErrNotExist):
			if err := os.WriteFile(path, g.content, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s", path)
		default:
			t.Fatal(err)
		}
	}
}

// workedIntermediates formats the intermediate values of the worked vector
// (AAD, HKDF info length, data key, commitment) as docs/format.md shows them.
func workedIntermediates(t testing.TB) []byte {
	t.Helper()
	v := readVector(t, filepath.Join(vectorsDir, workedName))
	aad, err := secretAAD(v.identity(t))
	if err != nil {
		t.Fatal(err)
	}
	info := append([]byte(dataKeyContext+"\x00"), aad...)
	okm := rfc5869(v.hex(t, "kek"), v.hex(t, "salt"), info, 64)
	return formatVector("", []field{
		hexField("aad", aad),
		hexField("info", info),
		hexField("data_key", okm[:32]),
		hexField("commitment", okm[32:]),
	})
}

// TestFormatDocIntermediates checks the intermediate values that
// docs/format.md shows for its worked vector.
func TestFormatDocIntermediates(t *testing.T) {
	doc, err := os.ReadFile(formatDoc)
	if err != nil {
		t.Fatalf("read the format spec: %v", err)
	}
	want := workedIntermediates(t)
	if !bytes.Contains(doc, want) {
		t.Fatalf("%s does not show the worked vector's intermediate values; want this block:\n%s", formatDoc, want)
	}
}
