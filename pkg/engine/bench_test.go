package engine

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/servicegraph"
	"github.com/spangraph/spangraph/pkg/spanmetrics"
)

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// pairBatch is 1 000 client→server pairs (2 000 spans, a few attributes
// each, as SDKs send them) whose span names, from offset on, cycle through
// names distinct values: the span metrics have 2 series per name.
func pairBatch(b *testing.B, names, offset int) *otlp.Batch {
	now := time.Now()
	client := &tracepb.ResourceSpans{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
		str("service.name", "frontend"), str("service.namespace", "shop"), str("deployment.environment", "prod")}},
		ScopeSpans: []*tracepb.ScopeSpans{{}}}
	server := &tracepb.ResourceSpans{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
		str("service.name", "checkout"), str("service.namespace", "shop"), str("deployment.environment", "prod")}},
		ScopeSpans: []*tracepb.ScopeSpans{{}}}
	for i := 0; i < 1000; i++ {
		trace := make([]byte, 16)
		binary.LittleEndian.PutUint64(trace, uint64(i)+1)
		cid, sid := make([]byte, 8), make([]byte, 8)
		binary.LittleEndian.PutUint64(cid, uint64(2*i)+1)
		binary.LittleEndian.PutUint64(sid, uint64(2*i)+2)
		name := fmt.Sprintf("op-%d", (offset+i)%names)
		attrs := []*commonpb.KeyValue{str("http.request.method", "POST"), str("http.route", "/"+name), str("net.peer.name", "checkout")}
		client.ScopeSpans[0].Spans = append(client.ScopeSpans[0].Spans, &tracepb.Span{TraceId: trace, SpanId: cid, Name: name,
			Kind: tracepb.Span_SPAN_KIND_CLIENT, StartTimeUnixNano: uint64(now.Add(-3 * time.Millisecond).UnixNano()), EndTimeUnixNano: uint64(now.UnixNano()), Attributes: attrs})
		server.ScopeSpans[0].Spans = append(server.ScopeSpans[0].Spans, &tracepb.Span{TraceId: trace, SpanId: sid, ParentSpanId: cid, Name: name,
			Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: uint64(now.Add(-2 * time.Millisecond).UnixNano()), EndTimeUnixNano: uint64(now.UnixNano()), Attributes: attrs})
	}
	body, err := proto.Marshal(&coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{client, server}})
	if err != nil {
		b.Fatal(err)
	}
	batch := otlp.GetBatch()
	if err := batch.DecodeProto(body); err != nil {
		b.Fatal(err)
	}
	return batch
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
