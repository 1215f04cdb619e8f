package appinsights

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// vector is one block of a testdata file: "field: value" lines.
type vector map[string]string

// readVectors reads the blocks of a testdata file, "in" unquoted.
func readVectors(t testing.TB, path string) []vector {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []vector
	cur := vector{}
	flush := func() {
		if len(cur) > 0 {
			out = append(out, cur)
			cur = vector{}
		}
	}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		switch {
		case strings.HasPrefix(text, "#"):
		case strings.TrimSpace(text) == "":
			flush()
		default:
			k, v, ok := strings.Cut(text, ": ")
			if !ok {
				t.Fatalf("%s:%d: not \"field: value\"", path, line)
			}
			if k == "in" {
				if v, err = strconv.Unquote(v); err != nil {
					t.Fatalf("%s:%d: in: %v", path, line, err)
				}
			}
			cur[k] = v
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no vectors", path)
	}
	return out
}

const vectorKey = "8a3b1c2d-4e5f-4a6b-9c7d-0e1f2a3b4c5d"

func TestParseConnectionString(t *testing.T) {
	for _, v := range readVectors(t, "testdata/connection-strings.txt") {
		t.Run(v["name"], func(t *testing.T) {
			cs, err := ParseConnectionString(v["in"])
			if want, ok := v["error"]; ok {
				if err == nil {
					t.Fatalf("parsed as %v, want an error containing %q", cs, want)
				}
				if !strings.Contains(err.Error(), want) || !errors.Is(err, ErrConnectionString) {
					t.Errorf("error %q, want one wrapping ErrConnectionString and containing %q", err, want)
				}
				checkNoEcho(t, err, v["in"])
				return
			}
			if err != nil {
				t.Fatalf("error %v, want endpoint %s", err, v["endpoint"])
			}
			wantKey := vectorKey
			if k, ok := v["ikey"]; ok {
				wantKey = k
			}
			if cs.InstrumentationKey != wantKey || cs.IngestionEndpoint != v["endpoint"] {
				t.Errorf("got key %s, endpoint %s; want %s, %s", cs.InstrumentationKey, cs.IngestionEndpoint, wantKey, v["endpoint"])
			}
			if _, err := cs.validate(); err != nil {
				t.Errorf("a parsed connection string fails validate: %v", err)
			}
		})
	}
}

func TestParseAuthenticationString(t *testing.T) {
	for _, v := range readVectors(t, "testdata/authentication-strings.txt") {
		t.Run(v["name"], func(t *testing.T) {
			a, err := ParseAuthenticationString(v["in"])
			if want, ok := v["error"]; ok {
				if err == nil {
					t.Fatalf("parsed as %+v, want an error containing %q", a, want)
				}
				if !strings.Contains(err.Error(), want) || !errors.Is(err, ErrAuthenticationString) {
					t.Errorf("error %q, want one wrapping ErrAuthenticationString and containing %q", err, want)
				}
				checkNoEcho(t, err, v["in"])
				return
			}
			if err != nil {
				t.Fatalf("error %v", err)
			}
			if want := (Authentication{AAD: v["aad"] == "true", ClientID: v["clientid"]}); a != want {
				t.Errorf("got %+v, want %+v", a, want)
			}
		})
	}
}

func TestConnectionStringTooLong(t *testing.T) {
	s := "InstrumentationKey=" + vectorKey + ";ApplicationId=" + strings.Repeat("x", maxConnectionString)
	if _, err := ParseConnectionString(s); !errors.Is(err, errTooLong) {
		t.Errorf("a %d-character string: error %v, want %v", len(s), err, errTooLong)
	}
}

func TestConnectionStringHidesKey(t *testing.T) {
	cs := ConnectionString{InstrumentationKey: vectorKey, IngestionEndpoint: "https://x.example.com/"}
	for _, s := range []string{cs.String(), fmt.Sprintf("%v", cs), fmt.Sprintf("%+v", &cs), fmt.Sprint(struct{ C ConnectionString }{cs})} {
		if strings.Contains(s, vectorKey) {
			t.Errorf("%q shows the instrumentation key", s)
		}
	}
	if _, err := New(ConnectionString{InstrumentationKey: vectorKey + "0"}, Options{}); err == nil || strings.Contains(err.Error(), vectorKey) {
		t.Errorf("New with a bad key: error %v, want one without the key", err)
	}
}

// checkNoEcho fails t if err quotes a value of in.
func checkNoEcho(t *testing.T, err error, in string) {
	t.Helper()
	for _, f := range strings.Split(in, ";") {
		_, v, _ := strings.Cut(f, "=")
		if v = strings.TrimSpace(v); len(v) >= 4 && strings.Contains(err.Error(), v) {
			t.Errorf("error %q quotes the value %q", err, v)
		}
	}
}
