package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/credvault/credvault/internal/config"
)

// TestCredentialInAzure serves the App Service managed identity endpoint
// (IDENTITY_ENDPOINT and IDENTITY_HEADER, as the platform sets them) and
// checks that, in Azure, credvault's credential takes its tokens from it:
// for the user-assigned identity that AZURE_CLIENT_ID names, or the
// system-assigned one without it; no other credential is tried.
func TestCredentialInAzure(t *testing.T) {
	for _, tc := range []struct {
		name, clientID string
	}{
		{"user-assigned", "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"},
		{"system-assigned", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []http.Header
			var gotQuery []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				got = append(got, r.Header.Clone())
				gotQuery = append(gotQuery, r.URL.Query().Get("client_id")+"|"+r.URL.Query().Get("resource"))
				mu.Unlock()
				json.NewEncoder(w).Encode(map[string]any{
					"access_token": "test-token", "token_type": "Bearer", "resource": r.URL.Query().Get("resource"),
					"expires_on": strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10),
				})
			}))
			defer srv.Close()
			t.Setenv("IDENTITY_ENDPOINT", srv.URL+"/msi/token")
			t.Setenv("IDENTITY_HEADER", "platform-secret-header")

			cred, err := credential(config.Config{InAzure: true, ManagedIdentityClientID: tc.clientID})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
			if err != nil {
				t.Fatal(err)
			}
			if tok.Token != "test-token" {
				t.Fatalf("token %q, want the managed identity's", tok.Token)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 {
				t.Fatalf("%d requests to the identity endpoint, want 1", len(got))
			}
			if got[0].Get("X-IDENTITY-HEADER") != "platform-secret-header" {
				t.Errorf("the request lacks the platform's X-IDENTITY-HEADER")
			}
			if want := tc.clientID + "|https://vault.azure.net"; gotQuery[0] != want {
				t.Errorf("client_id|resource = %q, want %q", gotQuery[0], want)
			}
		})
	}
}
