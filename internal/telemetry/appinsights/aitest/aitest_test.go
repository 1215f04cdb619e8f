package aitest_test

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"testing"
	"time"

	"github.com/credvault/credvault/internal/telemetry/appinsights/aitest"
)

const batch = `{"ver":1,"name":"Microsoft.ApplicationInsights.0f1e2d3c4b5a49788695a4b3c2d1e0f9.Event","iKey":"` + aitest.InstrumentationKey + `","tags":{"ai.operation.id":"t1","ai.operation.parentId":"p1"},"data":{"baseType":"EventData","baseData":{"ver":2,"name":"audit","properties":{"outcome":"ok"}}}}
{"ver":1,"name":"Microsoft.ApplicationInsights.Metric","iKey":"","data":{"baseType":"MetricData","baseData":{"metrics":[]}}}
`

func TestServerDecodesPlainAndGzip(t *testing.T) {
	s := aitest.New(t)
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	w.Write([]byte(batch))
	w.Close()
	for _, body := range []struct {
		encoding string
		data     []byte
	}{{"", []byte(batch)}, {"gzip", z.Bytes()}} {
		req, _ := http.NewRequest("POST", s.URL()+"v2.1/track", bytes.NewReader(body.data))
		req.Header.Set("Authorization", "Bearer t")
		if body.encoding != "" {
			req.Header.Set("Content-Encoding", body.encoding)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%q body: status %d", body.encoding, resp.StatusCode)
		}
	}
	items := s.WaitFor(t, func(items []aitest.Item) bool { return len(items) == 4 }, 10*time.Second)
	ev := items[0]
	if ev.Name != "Microsoft.ApplicationInsights.Event" || ev.BaseType != "EventData" || ev.OperationID != "t1" || ev.ParentID != "p1" ||
		ev.Field("name") != "audit" || ev.Property("outcome") != "ok" || !bytes.Contains(ev.Raw, []byte(`"audit"`)) {
		t.Errorf("event decoded as %+v", ev)
	}
	if items[1].Name != "Microsoft.ApplicationInsights.Metric" {
		t.Errorf("metric envelope name %q", items[1].Name)
	}
	posts := s.Posts()
	if len(posts) != 2 || posts[1].Path != "/v2.1/track" || posts[1].Authorization != "Bearer t" || posts[1].Items != 2 {
		t.Errorf("posts recorded as %+v", posts)
	}
}
