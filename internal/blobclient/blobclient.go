// Package blobclient opens Azure Blob Storage container clients for
// credvault's stores and tells the SDK's errors briefly, without URLs or
// bodies.
//
// Its errors carry no package prefix: each store wraps them with its own.
// Each store also keeps its own mapping of errors to its sentinels, using
// StatusError, TransportError and TokenError to tell what went wrong.
package blobclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// Open returns a client for the container in the account at accountURL
// (https://<account>.blob.core.windows.net), authenticated with a token
// credential such as a managed identity. It refuses an invalid container
// name, a nil credential and a URL that is not https or holds a query or
// user info; its errors quote the URL without those. A token that cannot
// be had fails the call with a *TokenError. It makes no network call.
//
// The options are copied, never changed; see WithTries for the policy Open
// adds.
func Open(accountURL, name string, cred azcore.TokenCredential, o *container.ClientOptions) (*container.Client, error) {
	if err := ValidContainerName(name); err != nil {
		return nil, err
	}
	if cred == nil {
		return nil, errors.New("no credential")
	}
	u, err := url.Parse(accountURL)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("account URL %q is not of the form https://<account>.blob.core.windows.net", RedactURL(accountURL))
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("account URL %q: bearer tokens are sent over https only", RedactURL(accountURL))
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + name
	c, err := container.NewClient(u.String(), tokenCredential{cred}, withCounter(o))
	if err != nil {
		return nil, fmt.Errorf("container %q: %v", name, err)
	}
	return c, nil
}

// OpenConnectionString returns a client for the container in the account a
// connection string names (Azurite's, or a shared-key one). Its error never
// quotes the connection string. It makes no network call.
//
// The options are copied, never changed; see WithTries for the policy
// OpenConnectionString adds.
func OpenConnectionString(connStr, name string, o *container.ClientOptions) (*container.Client, error) {
	if err := ValidContainerName(name); err != nil {
		return nil, err
	}
	c, err := container.NewClientFromConnectionString(connStr, name, withCounter(o))
	if err != nil {
		// The SDK's message may quote the connection string: leave it out.
		return nil, fmt.Errorf("connection string for container %q is not usable", name)
	}
	return c, nil
}

// ValidContainerName applies Azure's rules: 3 to 63 lowercase letters,
// digits and single hyphens, starting and ending with a letter or digit.
func ValidContainerName(name string) error {
	bad := len(name) < 3 || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' || strings.Contains(name, "--")
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("container name %q: want 3 to 63 lowercase letters, digits and single hyphens", name)
	}
	return nil
}

// RedactURL drops a URL's query, fragment and user info, which may hold
// secrets.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return u.String()
}

// WithTries returns ctx carrying a fresh counter of tries: every try of a
// request made under it by a client from Open or OpenConnectionString, the
// first and each retry, adds one. A store uses it to tell a retried call
// whose earlier try may have landed.
func WithTries(ctx context.Context) (context.Context, *atomic.Int32) {
	n := new(atomic.Int32)
	return context.WithValue(ctx, triesKey{}, n), n
}

type triesKey struct{}

// countTries is the per-retry policy behind WithTries.
type countTries struct{}

func (countTries) Do(req *policy.Request) (*http.Response, error) {
	if n, ok := req.Raw().Context().Value(triesKey{}).(*atomic.Int32); ok {
		n.Add(1)
	}
	return req.Next()
}

// withCounter returns a copy of o with countTries among its per-retry
// policies.
func withCounter(o *container.ClientOptions) *container.ClientOptions {
	var c container.ClientOptions
	if o != nil {
		c = *o
	}
	// Copy the caller's slice before appending to it.
	c.PerRetryPolicies = append(append([]policy.Policy(nil), c.PerRetryPolicies...), countTries{})
	return &c
}
