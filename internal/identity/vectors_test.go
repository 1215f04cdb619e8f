package identity

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
)

type headerVector struct {
	line  int
	class string
	value string
}

var vectorClasses = map[string]error{
	"nocreds":    ErrNoCredentials,
	"malformed":  ErrMalformed,
	"signature":  ErrSignature,
	"unknownkey": ErrUnknownKey,
}

// readHeaderVectors reads testdata/headers.txt: "<class> | <value>" lines.
func readHeaderVectors(t testing.TB) []headerVector {
	t.Helper()
	f, err := os.Open("testdata/headers.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var vs []headerVector
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		class, value, ok := strings.Cut(line, "|")
		class = strings.TrimSpace(class)
		if _, known := vectorClasses[class]; !ok || !known {
			t.Fatalf("testdata/headers.txt:%d: want \"<class> | <value>\" with a known class", n)
		}
		vs = append(vs, headerVector{n, class, strings.TrimSpace(value)})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestAuthenticateVectors(t *testing.T) {
	v := newTestVerifier(t, testOptions(keys(t)))
	for _, vec := range readHeaderVectors(t) {
		h := http.Header{}
		h.Set("Authorization", vec.value)
		_, err := v.Authenticate(context.Background(), h)
		if want := vectorClasses[vec.class]; !errors.Is(err, want) {
			t.Errorf("testdata/headers.txt:%d: Authenticate error = %v, want %v", vec.line, err, want)
			continue
		}
		if tok, ok := strings.CutPrefix(vec.value, "Bearer "); ok {
			checkNoLeak(t, "testdata/headers.txt", err, tok)
		}
	}
}
