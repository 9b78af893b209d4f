package otlp

import (
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// The benchmark request: 100 traces of 8 spans over 10 services, a handful
// of attributes per span and seven per resource — what an SDK batch
// processor or a collector sends.
const benchTraces, benchSpansPerTrace, benchServices = 100, 8, 10

func benchRequest() (*coltracepb.ExportTraceServiceRequest, int) {
	return realisticRequest(benchTraces, benchSpansPerTrace, benchServices, 42), benchTraces * benchSpansPerTrace
}

func reportPerSpan(b *testing.B, spans int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*spans), "ns/span")
}

// BenchmarkDecodeProto decodes the way the receiver does: a pooled batch,
// the body read into its buffer, decoded, released.
func BenchmarkDecodeProto(b *testing.B) {
	req, spans := benchRequest()
	data := mustMarshal(req)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		batch := GetBatch()
		buf := append(batch.Buffer(), data...)
		if err := batch.DecodeProto(buf); err != nil {
			b.Fatal(err)
		}
		if batch.SpanCount != spans {
			b.Fatalf("decoded %d spans", batch.SpanCount)
		}
		batch.Release()
	}
	reportPerSpan(b, spans)
}

// BenchmarkDecodeGenerated is the reference: proto.Unmarshal into the
// generated types, as a receiver built on them would do per request.
func BenchmarkDecodeGenerated(b *testing.B) {
	req, spans := benchRequest()
	data := mustMarshal(req)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var out coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(data, &out); err != nil {
			b.Fatal(err)
		}
	}
	reportPerSpan(b, spans)
}

// BenchmarkDecodeJSON is the OTLP/JSON path, through the same pooled batch.
func BenchmarkDecodeJSON(b *testing.B) {
	req, spans := benchRequest()
	doc, err := MarshalJSON(req)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		batch := GetBatch()
		buf := append(batch.Buffer(), doc...)
		if err := batch.DecodeJSON(buf); err != nil {
			b.Fatal(err)
		}
		batch.Release()
	}
	reportPerSpan(b, spans)
}
