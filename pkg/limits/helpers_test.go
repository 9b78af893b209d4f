package limits

import (
	"fmt"
	"slices"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/otlptest"
)

// Test batches go through the real decoder, so that the limits see what
// the receiver hands them: strings pointing into the request buffer,
// attributes sharing one backing array.

type testSpan struct {
	name  string
	attrs map[string]string // string attributes
	ints  int               // extra int attributes, named i0, i1, …
}

type testResource struct {
	attrs map[string]string
	spans []testSpan
}

func encodeRequest(resources ...testResource) *coltracepb.ExportTraceServiceRequest {
	req := otlptest.Request()
	id := byte(1)
	for _, r := range resources {
		var attrs []*commonpb.KeyValue
		for _, k := range sortedKeys(r.attrs) {
			attrs = append(attrs, otlptest.Str(k, r.attrs[k]))
		}
		var spans []*tracepb.Span
		for _, s := range r.spans {
			sp := &tracepb.Span{
				TraceId: make([]byte, 16), SpanId: []byte{id, 0, 0, 0, 0, 0, 0, 1},
				Name: s.name, Kind: tracepb.Span_SPAN_KIND_SERVER,
				StartTimeUnixNano: 1, EndTimeUnixNano: 2,
			}
			id++
			for _, k := range sortedKeys(s.attrs) {
				sp.Attributes = append(sp.Attributes, otlptest.Str(k, s.attrs[k]))
			}
			for i := 0; i < s.ints; i++ {
				sp.Attributes = append(sp.Attributes, otlptest.Int(fmt.Sprintf("i%d", i), int64(i)))
			}
			spans = append(spans, sp)
		}
		req.ResourceSpans = append(req.ResourceSpans, otlptest.Resource(attrs, spans...))
	}
	return req
}

func batchOf(t testing.TB, resources ...testResource) *otlp.Batch {
	t.Helper()
	return otlptest.Batch(t, encodeRequest(resources...))
}

// namedSpans returns one resource with a span per name.
func namedSpans(names ...string) testResource {
	r := testResource{attrs: map[string]string{"service.name": "svc"}}
	for _, n := range names {
		r.spans = append(r.spans, testSpan{name: n})
	}
	return r
}

func spanNames(b *otlp.Batch) []string {
	var out []string
	for _, rs := range b.Resources {
		for _, s := range rs.Spans {
			out = append(out, s.Name)
		}
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func mustNew(t testing.TB, cfg Config) *Limits {
	t.Helper()
	l, err := New(cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func ptr[T any](v T) *T { return &v }
