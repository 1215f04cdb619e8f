package auditblob

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/credvault/credvault/internal/blobclient"
)

// The service's error answers map to this package's errors and keep the
// SDK's error in the chain; no message quotes the data. No emulator: a
// transport answers every request.
func TestServiceErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		code   string
		want   error
	}{
		{"Forbidden", http.StatusForbidden, "AuthorizationPermissionMismatch", ErrAccessDenied},
		{"Unauthorized", http.StatusUnauthorized, "InvalidAuthenticationInfo", ErrAccessDenied},
		{"BadAuthentication", http.StatusBadRequest, "InvalidAuthenticationInfo", ErrAccessDenied},
		{"ContainerNotFound", http.StatusNotFound, "ContainerNotFound", errContainerNotFound},
		{"BlobNotFound", http.StatusNotFound, "BlobNotFound", fs.ErrNotExist},
		{"Exists", http.StatusConflict, "BlobAlreadyExists", ErrConflict},
		{"PositionNotMet", http.StatusPreconditionFailed, "AppendPositionConditionNotMet", ErrConflict},
		{"Throttled", http.StatusTooManyRequests, "TooManyRequests", errThrottled},
		{"Busy", http.StatusServiceUnavailable, "ServerBusy", errThrottled},
		{"Timeout", http.StatusRequestTimeout, "OperationTimedOut", errThrottled},
		{"InternalError", http.StatusInternalServerError, "InternalError", errServer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refuse := transport(func(r *http.Request) (*http.Response, error) {
				return answer(r, tc.status, tc.code), nil
			})
			s, err := NewFromConnectionString(azuriteConnStr("http://"+closedPort(t)), DefaultContainer,
				Options{Client: via(refuse, -1)})
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, tc.want) {
					t.Errorf("%s: err = %v, want %v", what, err, tc.want)
				}
				var re *azcore.ResponseError
				if !errors.As(err, &re) || re.StatusCode != tc.status {
					t.Errorf("%s: err = %v, want the SDK's *azcore.ResponseError (HTTP %d) in the chain", what, err, tc.status)
				}
				if err != nil {
					checkNoSecrets(t, what, err)
				}
			}
			check("Append", s.Append(t.Context(), segName, []byte(secretPayload)))
			_, err = s.Segments(t.Context())
			check("Segments", err)
			_, err = s.Open(t.Context(), segName)
			check("Open", err)
		})
	}
}

// A store answering 503 to every Append Block makes Append fail once the
// retries it was given are spent, not when the call's time is up.
func TestUnavailableFailsAfterRetries(t *testing.T) {
	var tries atomic.Int32
	busy := transport(func(r *http.Request) (*http.Response, error) {
		if isAppendBlock(r) {
			tries.Add(1)
			return answer(r, http.StatusServiceUnavailable, "ServerBusy"), nil
		}
		return forward(r)
	})
	const retries = 2
	s := openAzurite(t, Options{Client: via(busy, retries), Timeout: 10 * time.Minute})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	err := s.Append(ctx, segName, []byte(secretPayload))
	if !errors.Is(err, errThrottled) {
		t.Fatalf("Append against a busy store: err = %v, want errThrottled", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append against a busy store: err = %v, want the service's answer, not a timeout", err)
	}
	checkNoSecrets(t, "Append against a busy store", err)
	if got, want := tries.Load(), int32(retries+1); got != want {
		t.Errorf("Append Block tries = %d, want %d (one and %d retries)", got, want, retries)
	}
}

// A token that cannot be had is an access problem, not the network's.
func TestTokenError(t *testing.T) {
	s, err := New("https://"+closedPort(t), DefaultContainer, fakeCred{err: errors.New("no managed identity")}, Options{Client: via(forward, -1)})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Append(t.Context(), segName, []byte(secretPayload))
	if !errors.Is(err, ErrAccessDenied) {
		t.Fatalf("Append without a token: err = %v, want ErrAccessDenied", err)
	}
	checkNoSecrets(t, "Append without a token", err)
}

// Nothing listens: the error tells the request's failure without its URL.
func TestConnectionRefused(t *testing.T) {
	s, err := NewFromConnectionString(azuriteConnStr("http://"+closedPort(t))+"SharedAccessSignature=sv=2020&sig=abc;",
		DefaultContainer, Options{Client: via(forward, -1)})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Append(t.Context(), segName, []byte(secretPayload))
	var te *blobclient.TransportError
	if !errors.As(err, &te) {
		t.Fatalf("Append to a closed port: err = %v, want a *blobclient.TransportError", err)
	}
	checkNoSecrets(t, "Append to a closed port", err)
}

// A store that never answers: each call ends at Options.Timeout with an
// error wrapping context.DeadlineExceeded.
func TestNoAnswerTimesOut(t *testing.T) {
	hang := transport(func(r *http.Request) (*http.Response, error) {
		<-r.Context().Done()
		return nil, r.Context().Err()
	})
	s, err := NewFromConnectionString(azuriteConnStr("http://"+closedPort(t)), DefaultContainer,
		Options{Client: via(hang, -1), Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, openErr := s.Open(t.Context(), segName)
	_, listErr := s.Segments(t.Context())
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"Append", s.Append(t.Context(), segName, []byte(secretPayload))},
		{"Open", openErr},
		{"Segments", listErr},
		{"EnsureContainer", s.EnsureContainer(t.Context())},
	} {
		if !errors.Is(tc.err, context.DeadlineExceeded) || errors.Is(tc.err, context.Canceled) {
			t.Errorf("%s against a silent store: err = %v, want context.DeadlineExceeded", tc.name, tc.err)
		}
	}
}
