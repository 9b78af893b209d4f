package engine

import (
	"fmt"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/servicegraph"
	"github.com/spangraph/spangraph/pkg/spanmetrics"
)

// pairBatch is 1 000 client→server pairs (2 000 spans, a few attributes
// each, as SDKs send them) whose span names, from offset on, cycle through
// names distinct values: the span metrics have 2 series per name.
func pairBatch(b *testing.B, names, offset int) *otlp.Batch {
	now := time.Now()
	var clients, servers []*tracepb.Span
	for i := 0; i < 1000; i++ {
		name := fmt.Sprintf("op-%d", (offset+i)%names)
		attrs := []*commonpb.KeyValue{otlptest.Str("http.request.method", "POST"), otlptest.Str("http.route", "/"+name), otlptest.Str("net.peer.name", "checkout")}
		c := otlptest.Span(0, name, tracepb.Span_SPAN_KIND_CLIENT, now, 3*time.Millisecond, attrs...)
		c.TraceId, c.SpanId = otlptest.TraceID(uint64(i)+1), otlptest.SpanID(uint64(2*i)+1)
		s := otlptest.Span(0, name, tracepb.Span_SPAN_KIND_SERVER, now, 2*time.Millisecond, attrs...)
		s.TraceId, s.SpanId, s.ParentSpanId = c.TraceId, otlptest.SpanID(uint64(2*i)+2), c.SpanId
		clients, servers = append(clients, c), append(servers, s)
	}
	shop := func(service string) []*commonpb.KeyValue {
		return []*commonpb.KeyValue{otlptest.Str("service.name", service), otlptest.Str("service.namespace", "shop"), otlptest.Str("deployment.environment", "prod")}
	}
	return otlptest.Batch(b, otlptest.Request(otlptest.Resource(shop("frontend"), clients...), otlptest.Resource(shop("checkout"), servers...)))
}

// BenchmarkBothProcessors is what the engine does per span after decoding:
// span metrics and service graph, with default settings, in steady state,
// at 10, 1 000 and 100 000 active series (the edge store pairs every
// client with its server within the batch, as at full rate).
func BenchmarkBothProcessors(b *testing.B) {
	for _, names := range []int{5, 500, 50_000} {
		b.Run(fmt.Sprintf("series=%d", 2*names), func(b *testing.B) {
			reg := registry.New(registry.DefaultConfig())
			sm, err := spanmetrics.New(spanmetrics.DefaultConfig(), reg)
			if err != nil {
				b.Fatal(err)
			}
			sg, err := servicegraph.New(servicegraph.DefaultConfig(), reg, servicegraph.Options{})
			if err != nil {
				b.Fatal(err)
			}
			// 100 000 series need 100 batches of distinct names.
			batches := make([]*otlp.Batch, 0, 100)
			for i := 0; i < max(1, names/1000); i++ {
				batches = append(batches, pairBatch(b, names, 1000*i))
			}
			for _, batch := range batches {
				sm.Push(batch)
				sg.Push(batch)
			}
			spans := batches[0].SpanCount
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				batch := batches[i%len(batches)]
				sm.Push(batch)
				sg.Push(batch)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*spans), "ns/span")
		})
	}
}
