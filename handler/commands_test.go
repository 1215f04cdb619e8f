package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/cmk"
	"github.com/credvault/credvault/internal/cmk/kvfake"
	"github.com/credvault/credvault/internal/identity"
)

// envFrom is a getenv over a fixed map, as run receives os.Getenv.
func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// runCommand runs the handler's command line (as main does) with env and
// returns what it printed on stdout.
func runCommand(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), args, envFrom(env), &out)
	return out.String(), err
}

// TestTokenCommand: `handler token --user NAME --roles R1,R2` prints one
// line, a JWT that the app's own authenticator (the dev verifier over the
// data dir's key) accepts, for the owner of NAME with exactly those roles.
func TestTokenCommand(t *testing.T) {
	e := start(t)
	all := []identity.Role{identity.CredentialsRead, identity.CredentialsWrite, identity.CredentialsDelete}
	for _, c := range []struct {
		name  string
		args  []string
		user  string
		roles []identity.Role
	}{
		{"two roles", []string{"--user", "alice", "--roles", "Credentials.Read,Keys.Rotate"}, "alice",
			[]identity.Role{identity.CredentialsRead, identity.KeysRotate}},
		{"one role, spaces and a duplicate", []string{"--user=bob smith", "--roles", " Audit.Read , Audit.Read,"}, "bob smith",
			[]identity.Role{identity.AuditRead}},
		{"default roles", []string{"--user", "carol"}, "carol", all},
		{"with a ttl", []string{"--ttl", "5m", "--user", "dave", "--roles", "Credentials.Admin"}, "dave",
			[]identity.Role{identity.CredentialsAdmin}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := runCommand(t, e.env, append([]string{"token"}, c.args...)...)
			if err != nil {
				t.Fatalf("token %v: %v", c.args, err)
			}
			if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
				t.Fatalf("token printed %q, want exactly one line", out)
			}
			tok := strings.TrimSuffix(out, "\n")
			e.canaries.add("a bearer token", tok)
			parts := strings.Split(tok, ".")
			if len(parts) != 3 {
				t.Fatalf("token %q is not a compact JWS", tok)
			}
			var hdr struct{ Alg, Kid string }
			if b, err := base64.RawURLEncoding.DecodeString(parts[0]); err != nil || json.Unmarshal(b, &hdr) != nil {
				t.Fatalf("token header %q does not decode", parts[0])
			}
			if hdr.Alg != "RS256" || hdr.Kid != e.app.dev.KeyID() {
				t.Fatalf("token header %+v, want RS256 with the data dir's dev key %s", hdr, e.app.dev.KeyID())
			}
			h := http.Header{"Authorization": {"Bearer " + tok}}
			p, err := e.app.api.Auth.Authenticate(context.Background(), h)
			if err != nil {
				t.Fatalf("the app's verifier refuses the printed token: %v", err)
			}
			if p.Owner() != ownerOf(c.user) || p.Kind != identity.KindUser || p.Name != c.user {
				t.Fatalf("principal %+v (owner %s), want user %q with owner %s", p, p.Owner(), c.user, ownerOf(c.user))
			}
			want := slices.Clone(c.roles)
			slices.Sort(want)
			if got := p.RoleList(); !slices.Equal(got, want) {
				t.Fatalf("roles %v, want exactly %v", got, want)
			}
		})
	}
	// The printed token works against the API like any other.
	out, err := runCommand(t, e.env, "token", "--user", "erin", "--roles", "Credentials.Read,Credentials.Write")
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out)
	e.canaries.add("a bearer token", tok)
	wantStatus(t, "PUT with the printed token", e.do("PUT", "/api/credentials/t", tok, `{"value":"v"}`), 201)
	wantStatus(t, "GET with the printed token", e.do("GET", "/api/credentials/t", tok, nil), 200)
	wantProblem(t, "DELETE without Credentials.Delete", e.do("DELETE", "/api/credentials/t", tok, nil), 403)
}

// TestTokenCommandErrors: an unknown role, no --user, a bad flag or a bad
// ttl fail with an error that says what is wrong, and print nothing.
func TestTokenCommandErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want []string // in the error
	}{
		{"unknown role", []string{"--user", "alice", "--roles", "Credentials.Read,Secrets.Steal"}, []string{`"Secrets.Steal"`, "unknown role", "Keys.Rotate"}},
		{"role in the wrong case", []string{"--user", "alice", "--roles", "credentials.read"}, []string{`"credentials.read"`, "unknown role"}},
		{"missing --user", []string{"--roles", "Credentials.Read"}, []string{"--user is required"}},
		{"empty --user", []string{"--user", "", "--roles", "Credentials.Read"}, []string{"--user is required"}},
		{"bad flag", []string{"--user", "alice", "--role", "Credentials.Read"}, []string{"flag provided but not defined", "-role"}},
		{"bad ttl", []string{"--user", "alice", "--ttl", "soon"}, []string{"invalid value", "-ttl"}},
		{"ttl too long", []string{"--user", "alice", "--ttl", "48h"}, []string{"ttl"}},
		{"untrimmed user", []string{"--user", " alice", "--roles", "Credentials.Read"}, []string{"user name"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			out, err := runCommand(t, map[string]string{"CREDVAULT_DATA_DIR": dir}, append([]string{"token"}, c.args...)...)
			if err == nil {
				t.Fatalf("token %q succeeded with %q, want an error", c.args, out)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if out != "" {
				t.Errorf("token %q failed but printed %q", c.args, out)
			}
		})
	}
}

// TestRotateCMKCommand: `handler rotate-cmk` adds a version to the data
// dir's local CMK and makes it current; the old version still unwraps what
// it wrapped, and a secret stored before reads back after a restart.
func TestRotateCMKCommand(t *testing.T) {
	e := startWith(t, false) // the local key file: the embedded backends whatever CREDVAULT_TEST_BACKENDS says
	alice := e.token("alice")
	wantStatus(t, "PUT before rotate-cmk", e.do("PUT", "/api/credentials/a", alice, `{"value":"before-rotation"}`), 201)
	old := e.app.localCMK.Current()
	key := []byte("0123456789abcdef0123456789abcdef")
	aad := []byte("rotate-cmk test")
	w, err := e.app.localCMK.Wrap(context.Background(), key, aad)
	if err != nil {
		t.Fatal(err)
	}
	if w.KeyID != old {
		t.Fatalf("wrapped under %s, want the current version %s", w.KeyID, old)
	}
	e.close()

	out, err := runCommand(t, e.env, "rotate-cmk")
	if err != nil {
		t.Fatalf("rotate-cmk: %v", err)
	}
	if strings.Count(out, "\n") != 1 {
		t.Fatalf("rotate-cmk printed %q, want one line: the new key id", out)
	}
	id := strings.TrimSpace(out)
	if id == old || !strings.HasPrefix(id, "local:") {
		t.Fatalf("rotate-cmk printed %q; the old key id was %q", id, old)
	}
	var file struct {
		Current  string
		Versions []struct {
			Version string
			Enabled bool
		}
	}
	b, err := os.ReadFile(filepath.Join(e.dir, cmk.LocalFile))
	if err != nil {
		t.Fatal(err)
	}
	decode(t, b, &file)
	if len(file.Versions) != 2 || !strings.HasSuffix(id, "/"+file.Current) || !strings.HasSuffix(old, "/"+file.Versions[0].Version) ||
		!file.Versions[0].Enabled || !file.Versions[1].Enabled {
		t.Fatalf("key file after rotate-cmk: %+v, want the old version kept enabled and a new current one %s", file, id)
	}

	fresh, err := cmk.OpenLocal(e.dir, cmk.LocalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Current() != id {
		t.Fatalf("current version %s after rotate-cmk, want %s", fresh.Current(), id)
	}
	got, err := fresh.Unwrap(context.Background(), w, aad)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("the old version no longer unwraps what it wrapped: %v", err)
	}
	if w2, err := fresh.Wrap(context.Background(), key, aad); err != nil || w2.KeyID != id {
		t.Fatalf("a new wrap uses %q (%v), want the new version %s", w2.KeyID, err, id)
	}

	e.open()
	if e.app.localCMK.Current() != id {
		t.Fatalf("the restarted app's CMK is %s, want %s", e.app.localCMK.Current(), id)
	}
	g := e.do("GET", "/api/credentials/a", alice, nil)
	if g.status != 200 || !strings.Contains(string(g.body), "before-rotation") {
		t.Fatalf("secret stored before rotate-cmk, after a restart: %d %s", g.status, g.body)
	}
	// The old version is what opens it: disabled, the secret is out of reach.
	if err := e.app.localCMK.SetEnabled(old, false); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if g := e.do("GET", "/api/credentials/a", alice, nil); g.status == 200 {
		t.Fatalf("the secret read with the old CMK version disabled: %s", g.body)
	}
}

// TestRotateCMKRefusedInAzure: with WEBSITE_INSTANCE_ID set, rotate-cmk
// fails (the local key file is refused in Azure) and leaves no key file.
func TestRotateCMKRefusedInAzure(t *testing.T) {
	dir := t.TempDir()
	out, err := runCommand(t, map[string]string{"CREDVAULT_DATA_DIR": dir, "WEBSITE_INSTANCE_ID": "abc123"}, "rotate-cmk")
	if err == nil || !strings.Contains(err.Error(), "running in Azure") || !strings.Contains(err.Error(), "local key file") {
		t.Fatalf("rotate-cmk in Azure: %v (printed %q), want a refusal naming the local key file", err, out)
	}
	if out != "" {
		t.Errorf("rotate-cmk in Azure printed %q", out)
	}
	if _, err := os.Stat(filepath.Join(dir, cmk.LocalFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rotate-cmk in Azure touched the key file: %v", err)
	}
}

// TestRotateCMKRefusedWithKeyVault: with the CMK in Key Vault, rotate-cmk
// refuses (it would create and rotate a local key file nobody uses).
func TestRotateCMKRefusedWithKeyVault(t *testing.T) {
	dir := t.TempDir()
	out, err := runCommand(t, map[string]string{"CREDVAULT_DATA_DIR": dir,
		"CREDVAULT_KEYVAULT_URL": "https://example.vault.azure.net", "CREDVAULT_KEY_NAME": "credvault-cmk"}, "rotate-cmk")
	if err == nil || !strings.Contains(err.Error(), "Key Vault") {
		t.Fatalf("rotate-cmk with Key Vault: %v (printed %q), want a refusal naming Key Vault", err, out)
	}
	if out != "" {
		t.Errorf("rotate-cmk with Key Vault printed %q", out)
	}
	if _, err := os.Stat(filepath.Join(dir, cmk.LocalFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rotate-cmk with Key Vault made a key file: %v", err)
	}
}

// serveLogs runs `handler` (serve) with env until it listens, stops it, and
// returns its log lines (stdout, where main's logger writes).
func serveLogs(t *testing.T, env map[string]string) []map[string]any {
	t.Helper()
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, envFrom(env), out) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "credvault listening") {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("serve ended before listening: %v; logs %s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("serve did not listen within 30 s: %s", out.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	return logLines(t, out.String())
}

func logLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// localCMKWarnings returns the WARN lines that mention the local key file.
func localCMKWarnings(lines []map[string]any) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if msg, _ := l["msg"].(string); l["level"] == "WARN" && strings.Contains(strings.ToLower(msg), "local key file") {
			out = append(out, l)
		}
	}
	return out
}

// keyMaterial returns the private key material in the data dir: each local
// CMK version and the dev signing key, in the forms they are stored in.
func keyMaterial(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	var f struct{ Versions []struct{ PKCS8 []byte } }
	b, err := os.ReadFile(filepath.Join(dir, cmk.LocalFile))
	if err != nil {
		t.Fatal(err)
	}
	decode(t, b, &f)
	for _, v := range f.Versions {
		out = append(out, base64.StdEncoding.EncodeToString(v.PKCS8), base64.RawURLEncoding.EncodeToString(v.PKCS8))
	}
	var jwk map[string]any
	b, err = os.ReadFile(filepath.Join(dir, identity.DevKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	decode(t, b, &jwk)
	for _, k := range []string{"d", "p", "q", "dp", "dq", "qi", "n"} {
		if s, _ := jwk[k].(string); s != "" {
			out = append(out, s)
		}
	}
	if len(out) < 3 {
		t.Fatalf("found no key material in %s", dir)
	}
	return out
}

// TestLocalCMKWarning: starting in local mode logs exactly one warning about
// the local key file, naming the file and nothing else: no key material, no
// other setting. With the CMK in Key Vault there is no such warning.
func TestLocalCMKWarning(t *testing.T) {
	check := func(t *testing.T, lines []map[string]any, dir string, secrets ...string) {
		t.Helper()
		warns := localCMKWarnings(lines)
		if len(warns) != 1 {
			t.Fatalf("%d warnings about the local key file, want 1; logs %v", len(warns), lines)
		}
		w := warns[0]
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, []string{"file", "level", "msg", "time"}) {
			t.Errorf("the warning carries %v, want only time, level, msg and file", keys)
		}
		if w["file"] != filepath.Join(dir, cmk.LocalFile) {
			t.Errorf("the warning names %v, want %s", w["file"], filepath.Join(dir, cmk.LocalFile))
		}
		if msg := w["msg"].(string); !strings.Contains(msg, "development only") {
			t.Errorf("the warning %q does not say the key file is for development only", msg)
		}
		raw, _ := json.Marshal(w)
		for _, s := range append(keyMaterial(t, dir), secrets...) {
			for i := 0; i+16 <= len(s); i += 8 {
				if strings.Contains(string(raw), s[i:i+16]) {
					t.Fatalf("the warning %s contains secret material (%q…)", raw, s[i:i+16])
				}
			}
		}
	}
	t.Run("serve", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		_, port, _ := net.SplitHostPort(closedAddr(t))
		lines := serveLogs(t, map[string]string{
			"CREDVAULT_DATA_DIR":           dir,
			"FUNCTIONS_CUSTOMHANDLER_PORT": port,
			"CREDVAULT_RUN_TIMER":          "false",
		})
		check(t, lines, dir)
	})
	t.Run("app with telemetry", func(t *testing.T) {
		e := startWith(t, false)
		check(t, logLines(t, e.logs.String()), e.dir, e.env["APPLICATIONINSIGHTS_CONNECTION_STRING"])
		e.restart() // the key file exists now: still one warning per start
		lines := logLines(t, e.logs.String())
		if n := len(localCMKWarnings(lines)); n != 2 {
			t.Fatalf("%d warnings about the local key file after two starts, want 2", n)
		}
	})
	t.Run("CMK in Key Vault", func(t *testing.T) {
		e := startPrepared(t, false, func(e *testEnv) {
			kv := kvfake.New(t, kvfake.Options{})
			kv.CreateKey("credvault-cmk")
			e.env["CREDVAULT_KEYVAULT_URL"] = kv.URL()
			e.env["CREDVAULT_KEY_NAME"] = "credvault-cmk"
			e.deps = deps{cred: kv.Credential(), keyVaultClient: kv.ClientOptions()}
		})
		if e.app.localCMK != nil {
			t.Fatal("the app opened the local key file with Key Vault configured")
		}
		if w := localCMKWarnings(logLines(t, e.logs.String())); len(w) != 0 {
			t.Fatalf("warning about the local key file with the CMK in Key Vault: %v", w)
		}
		if _, err := os.Stat(filepath.Join(e.dir, cmk.LocalFile)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a local key file exists with the CMK in Key Vault: %v", err)
		}
	})
}
