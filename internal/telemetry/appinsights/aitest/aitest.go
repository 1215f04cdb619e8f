// Package aitest is a fake Application Insights ingestion endpoint for
// tests: it accepts the batches an Application Insights client posts
// (gzip or not, newline-delimited JSON envelopes), answers that all were
// accepted, and keeps each item and each post for the test to check.
package aitest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// InstrumentationKey is the key in ConnectionString.
const InstrumentationKey = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"

// Item is one telemetry envelope as the endpoint received it.
type Item struct {
	Name        string            // envelope name without the key: "Microsoft.ApplicationInsights.Request"
	IKey        string            // the envelope's instrumentation key
	BaseType    string            // "RequestData", "RemoteDependencyData", "ExceptionData", "EventData", "MetricData"
	OperationID string            // tag ai.operation.id: the trace id
	ParentID    string            // tag ai.operation.parentId
	Tags        map[string]string // all the envelope's tags
	Data        map[string]any    // data.baseData
	Raw         []byte            // the envelope's JSON as sent
}

// Field is baseData's field name when it is a string ("name", "id",
// "url", "responseCode", "type", "target"…), else "".
func (it Item) Field(name string) string {
	s, _ := it.Data[name].(string)
	return s
}

// Property is the custom property name, or "".
func (it Item) Property(name string) string {
	props, _ := it.Data["properties"].(map[string]any)
	s, _ := props[name].(string)
	return s
}

// Post is one batch the endpoint received.
type Post struct {
	Path          string // "/v2/track" or "/v2.1/track"
	Authorization string // the Authorization header, "" when absent
	Items         int    // envelopes in the batch
}

// Server is the fake endpoint. Its methods are safe for concurrent use.
type Server struct {
	srv *httptest.Server

	mu     sync.Mutex
	items  []Item
	posts  []Post
	errors []string
}

// New starts a Server that t's cleanup stops; the cleanup also fails t if
// a batch could not be read.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		s.srv.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, e := range s.errors {
			t.Errorf("aitest: %s", e)
		}
	})
	return s
}

// URL is the ingestion endpoint, with a final "/".
func (s *Server) URL() string { return s.srv.URL + "/" }

// ConnectionString is an Application Insights connection string whose
// IngestionEndpoint is s.
func (s *Server) ConnectionString() string {
	return "InstrumentationKey=" + InstrumentationKey + ";IngestionEndpoint=" + s.URL() +
		";LiveEndpoint=" + s.URL() + ";ApplicationId=00000000-0000-0000-0000-000000000000"
}

// Items returns the items received so far, in order.
func (s *Server) Items() []Item {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Item(nil), s.items...)
}

// Posts returns the batches received so far, in order.
func (s *Server) Posts() []Post {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Post(nil), s.posts...)
}

// WaitFor polls the items received until done accepts them and returns
// them; it fails t if timeout passes first.
func (s *Server) WaitFor(t testing.TB, done func([]Item) bool, timeout time.Duration) []Item {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		items := s.Items()
		if done(items) {
			return items
		}
		if time.Now().After(deadline) {
			names := make([]string, len(items))
			for i, it := range items {
				names[i] = it.Name + " " + it.Field("name")
			}
			t.Fatalf("aitest: after %v the %d items received are not the ones awaited: %s", timeout, len(items), strings.Join(names, "; "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	items, err := decode(r)
	post := Post{Path: r.URL.Path, Authorization: r.Header.Get("Authorization"), Items: len(items)}
	s.mu.Lock()
	s.posts = append(s.posts, post)
	s.items = append(s.items, items...)
	if err != nil {
		s.errors = append(s.errors, fmt.Sprintf("post %d to %s: %v", len(s.posts), post.Path, err))
	}
	s.mu.Unlock()
	if err != nil {
		http.Error(w, "unreadable batch", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"itemsReceived":%d,"itemsAccepted":%d,"errors":[]}`, len(items), len(items))
}

func decode(r *http.Request) ([]Item, error) {
	var body io.Reader = r.Body
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		z, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		defer z.Close()
		body = z
	}
	b, err := io.ReadAll(io.LimitReader(body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	var items []Item
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return items, nil
		} else if err != nil {
			return items, fmt.Errorf("envelope %d: %w", len(items), err)
		}
		it, err := parse(raw)
		if err != nil {
			return items, fmt.Errorf("envelope %d: %w", len(items), err)
		}
		items = append(items, it)
	}
}

func parse(raw []byte) (Item, error) {
	var env struct {
		Name string            `json:"name"`
		IKey string            `json:"iKey"`
		Tags map[string]string `json:"tags"`
		Data struct {
			BaseType string         `json:"baseType"`
			BaseData map[string]any `json:"baseData"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return Item{}, err
	}
	if env.Name == "" || env.Data.BaseType == "" {
		return Item{}, errors.New("no name or no baseType")
	}
	name := env.Name
	if k := strings.ReplaceAll(env.IKey, "-", ""); k != "" {
		name = strings.Replace(name, "."+k+".", ".", 1)
	}
	return Item{
		Name:        name,
		IKey:        env.IKey,
		BaseType:    env.Data.BaseType,
		OperationID: env.Tags["ai.operation.id"],
		ParentID:    env.Tags["ai.operation.parentId"],
		Tags:        env.Tags,
		Data:        env.Data.BaseData,
		Raw:         bytes.Clone(raw),
	}, nil
}
