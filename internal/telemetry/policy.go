package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Dependency types, as Application Insights names them.
const (
	KindKeyVault = "Azure Key Vault"
	KindBlob     = "Azure blob"
	KindCosmos   = "Azure DocumentDB"
)

// DependencyPolicy is an azcore pipeline policy that reports each try of
// an SDK call as a *Dependency and counts tries by operation name. Add it
// to a client's azcore.ClientOptions.PerRetryPolicies so that each retry
// is an item of its own.
//
// Names are built from a fixed vocabulary: the method, the path's shape
// with every name, id and version replaced by a placeholder, and, for
// Blob Storage, the comp and restype query values. No other part of the
// URL, no header and no body is reported.
type DependencyPolicy struct {
	sink Sink
	kind string

	mu     sync.Mutex
	counts map[string]int64
}

// NewDependencyPolicy returns a policy that reports to sink the calls of a
// client of kind (KindKeyVault, KindBlob, KindCosmos; any other kind gets
// names with every path segment replaced).
func NewDependencyPolicy(sink Sink, kind string) *DependencyPolicy {
	if sink == nil {
		sink = Discard
	}
	return &DependencyPolicy{sink: sink, kind: kind, counts: map[string]int64{}}
}

// Do implements policy.Policy.
func (p *DependencyPolicy) Do(req *policy.Request) (*http.Response, error) {
	raw := req.Raw()
	name := raw.Method + " " + operation(p.kind, raw.URL)
	parent, ok := SpanFrom(raw.Context())
	span := Span{TraceID: parent.TraceID, SpanID: randomHex(8)}
	if ok {
		span.ParentID = parent.SpanID
	}
	if span.TraceID == "" {
		span.TraceID = randomHex(16)
	}

	p.mu.Lock()
	p.counts[name]++
	p.mu.Unlock()

	start := time.Now()
	resp, err := req.Next()
	d := &Dependency{
		Span:     span,
		Type:     p.kind,
		Target:   raw.URL.Host,
		Name:     name,
		Start:    start,
		Duration: time.Since(start),
	}
	switch {
	case resp != nil:
		d.Code = strconv.Itoa(resp.StatusCode)
		d.Success = resp.StatusCode < 400
		switch resp.StatusCode {
		case http.StatusNotFound, http.StatusConflict, http.StatusPreconditionFailed:
			// A miss or a lost compare-and-swap: answers the caller handles.
			d.Properties = map[string]string{"expected": "true"}
		}
	case err != nil:
		// Never the error's text: a transport error quotes the URL.
		d.Properties = map[string]string{"error": failureClass(err)}
	}
	p.sink.Track(d)
	return resp, err
}

// Counts returns how many tries the policy has seen, by operation name
// ("POST /keys/{name}/{version}/unwrapkey"). The map is a copy.
func (p *DependencyPolicy) Counts() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int64, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

func failureClass(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	default:
		return "transport"
	}
}

// operation is the path template of u for a service of kind.
func operation(kind string, u *url.URL) string {
	segs := segments(u.EscapedPath())
	switch kind {
	case KindKeyVault:
		return keyVaultPath(segs)
	case KindBlob:
		if pathStyle(u.Hostname()) && len(segs) > 0 {
			segs = segs[1:] // the account: http://127.0.0.1:10000/devstoreaccount1/…
		}
		return blobPath(segs) + blobQuery(u.Query())
	case KindCosmos:
		return cosmosPath(segs)
	default:
		return join(placeholders(len(segs), "{segment}"))
	}
}

func segments(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

func join(segs []string) string { return "/" + strings.Join(segs, "/") }

func placeholders(n int, s string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// pathStyle reports whether a storage host puts the account in the path,
// as Azurite and other emulators reached by IP or localhost do.
func pathStyle(host string) bool {
	return host == "localhost" || net.ParseIP(host) != nil
}

var (
	keyVaultCollections = words("keys", "secrets", "certificates", "deletedkeys", "deletedsecrets", "deletedcertificates", "rng")
	keyVaultActions     = words("wrapkey", "unwrapkey", "encrypt", "decrypt", "sign", "verify", "release", "attestation",
		"create", "import", "rotate", "rotationpolicy", "backup", "recover", "versions", "pending", "policy")
)

// keyVaultPath: /{collection}/{name}/{version}/{action}, where an action
// may also follow the name directly (/keys/{name}/rotate).
func keyVaultPath(segs []string) string {
	out := make([]string, len(segs))
	for i, s := range segs {
		s = strings.ToLower(s)
		switch {
		case i == 0 && keyVaultCollections[s]:
			out[i] = s
		case i == 0:
			out[i] = "{collection}"
		case i == 1 && s == "restore" && len(segs) == 2:
			out[i] = s
		case i == 1:
			out[i] = "{name}"
		case keyVaultActions[s]:
			out[i] = s
		case i == 2:
			out[i] = "{version}"
		default:
			out[i] = "{segment}"
		}
	}
	return join(out)
}

// blobPath: /, /{container} or /{container}/{blob}; a blob's name may
// hold slashes.
func blobPath(segs []string) string {
	switch len(segs) {
	case 0:
		return "/"
	case 1:
		return "/{container}"
	default:
		return "/{container}/{blob}"
	}
}

// blobQuery keeps restype and comp, the query values that name a Blob
// Storage operation, when they are plain words.
func blobQuery(q url.Values) string {
	var parts []string
	for _, k := range []string{"restype", "comp"} {
		if v := q.Get(k); v != "" {
			parts = append(parts, k+"="+word(v))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "?" + strings.Join(parts, "&")
}

func word(v string) string {
	v = strings.ToLower(v)
	if len(v) > 32 {
		return "{value}"
	}
	for _, r := range v {
		if r < 'a' || r > 'z' {
			return "{value}"
		}
	}
	return v
}

// cosmosIDs maps each Cosmos DB resource type to the placeholder of the id
// that follows it: /dbs/{db}/colls/{coll}/docs/{id}.
var cosmosIDs = map[string]string{
	"dbs": "{db}", "colls": "{coll}", "docs": "{id}", "pkranges": "{id}", "users": "{user}",
	"permissions": "{id}", "sprocs": "{id}", "triggers": "{id}", "udfs": "{id}", "conflicts": "{id}",
	"offers": "{id}", "attachments": "{id}", "clientencryptionkeys": "{id}",
}

func cosmosPath(segs []string) string {
	out := make([]string, len(segs))
	for i, s := range segs {
		if i%2 == 1 {
			out[i] = "{id}"
			if id, ok := cosmosIDs[out[i-1]]; ok {
				out[i] = id
			}
			continue
		}
		out[i] = "{type}"
		if _, ok := cosmosIDs[s]; ok {
			out[i] = s
		}
	}
	return join(out)
}

func words(ws ...string) map[string]bool {
	m := make(map[string]bool, len(ws))
	for _, w := range ws {
		m[w] = true
	}
	return m
}

// randomHex returns n random bytes as lower-case hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b)
}
