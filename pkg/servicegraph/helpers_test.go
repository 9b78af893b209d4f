package servicegraph

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/registry/registrytest"
)

// collected is one collection: metric name → series labels → value at
// the collection time (leading zeros left out).
type collected struct {
	series    map[string]map[string]float64
	exemplars []registrytest.Exemplar
}

func collect(t *testing.T, reg *registry.Registry) collected {
	t.Helper()
	rec := &registrytest.Appender{}
	// The registry stamps updates with the wall clock, so collect near it:
	// a far-off time would mark every series stale.
	collectTime := time.Now()
	if _, err := reg.Collect(rec, collectTime); err != nil {
		t.Fatalf("collect: %v", err)
	}
	out := collected{series: map[string]map[string]float64{}, exemplars: rec.Exemplars}
	for _, s := range rec.Samples {
		if s.T != collectTime.UnixMilli() {
			continue
		}
		name := s.Labels.Get(labels.MetricName)
		if out.series[name] == nil {
			out.series[name] = map[string]float64{}
		}
		out.series[name][seriesKey(s.Labels)] = s.V
	}
	return out
}

// seriesKey formats the labels other than __name__ as {a="b",c="d"}.
func seriesKey(l labels.Labels) string {
	var parts []string
	l.Range(func(lb labels.Label) {
		if lb.Name != labels.MetricName {
			parts = append(parts, fmt.Sprintf("%s=%q", lb.Name, lb.Value))
		}
	})
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// sp describes a span for a test batch. Times are offsets from base.
type sp struct {
	trace, id, parent uint64 // parent 0: no parent
	kind              otlp.SpanKind
	err               bool
	start, end        time.Duration
	attrs             []*commonpb.KeyValue
	traceState        string
	name              string
}

// res is a resource with its spans; service "" leaves service.name out.
type res struct {
	service string
	attrs   []*commonpb.KeyValue
	spans   []sp
}

const base = uint64(1_700_000_000) * 1e9

// makeBatch encodes the resources as an OTLP request and decodes it the
// way the receiver does.
func makeBatch(t testing.TB, rr ...res) *otlp.Batch {
	t.Helper()
	req := otlptest.Request()
	for _, r := range rr {
		attrs := r.attrs
		if r.service != "" {
			attrs = append([]*commonpb.KeyValue{otlptest.Str("service.name", r.service)}, attrs...)
		}
		var spans []*tracepb.Span
		for _, s := range r.spans {
			ps := &tracepb.Span{
				TraceId:           otlptest.TraceID(s.trace),
				SpanId:            otlptest.SpanID(s.id),
				Name:              s.name,
				Kind:              tracepb.Span_SpanKind(s.kind),
				StartTimeUnixNano: base + uint64(s.start),
				EndTimeUnixNano:   base + uint64(s.end),
				Attributes:        s.attrs,
				TraceState:        s.traceState,
			}
			if s.parent != 0 {
				ps.ParentSpanId = otlptest.SpanID(s.parent)
			}
			if s.err {
				ps.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
			}
			spans = append(spans, ps)
		}
		req.ResourceSpans = append(req.ResourceSpans, otlptest.Resource(attrs, spans...))
	}
	return otlptest.Batch(t, req)
}

// Spans of a typical call: the client span (id 1) spans 0–100 ms, the
// server span (id 2, child of 1) 10–90 ms.
func client(trace uint64, attrs ...*commonpb.KeyValue) sp {
	return sp{trace: trace, id: 1, parent: 9, kind: otlp.SpanKindClient, start: 0, end: 100 * time.Millisecond, attrs: attrs}
}

func server(trace uint64, attrs ...*commonpb.KeyValue) sp {
	return sp{trace: trace, id: 2, parent: 1, kind: otlp.SpanKindServer, start: 10 * time.Millisecond, end: 90 * time.Millisecond, attrs: attrs}
}

func with(s sp, f func(*sp)) sp {
	f(&s)
	return s
}

// unsafeBytes returns the bytes behind s, to overwrite request memory.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
