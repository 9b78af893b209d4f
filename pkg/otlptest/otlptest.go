// Package otlptest builds OTLP export requests for tests: attributes,
// ids, spans, resources and requests from the generated OTLP types, their
// protobuf encoding, and the Batch the receiver's decoder makes of it. It
// also has LogBuffer, a log destination that tests read while goroutines
// write. Only tests import it.
//
// The builders fill in what every test needs (ids, times, a scope) and
// leave the rest to the caller, who sets fields of the returned messages
// when a test is about them.
package otlptest

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/otlp"
)

// Str is a string attribute.
func Str(key, value string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: key, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: value}}}
}

// Int is an integer attribute.
func Int(key string, value int64) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: key, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: value}}}
}

// Float is a double attribute.
func Float(key string, value float64) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: key, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: value}}}
}

// TraceID is a 16-byte trace id with n, big-endian, in its low half and a
// fixed non-zero high half, so that ids differ by n and are never zero.
func TraceID(n uint64) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b[:8], 0xabcdef)
	binary.BigEndian.PutUint64(b[8:], n)
	return b
}

// SpanID is an 8-byte span id holding n, big-endian.
func SpanID(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// Span is a span of kind named name that lasts d and ends at end. Its
// trace id is 16 and its span id 8 times the byte id, so that spans built
// with different ids are in different traces.
func Span(id byte, name string, kind tracepb.Span_SpanKind, end time.Time, d time.Duration, attrs ...*commonpb.KeyValue) *tracepb.Span {
	return &tracepb.Span{
		TraceId: bytes.Repeat([]byte{id}, 16), SpanId: bytes.Repeat([]byte{id}, 8),
		Name: name, Kind: kind, Attributes: attrs,
		StartTimeUnixNano: uint64(end.Add(-d).UnixNano()), EndTimeUnixNano: uint64(end.UnixNano()),
	}
}

// Resource is a resource with attrs whose spans are in one scope.
func Resource(attrs []*commonpb.KeyValue, spans ...*tracepb.Span) *tracepb.ResourceSpans {
	return &tracepb.ResourceSpans{
		Resource:   &resourcepb.Resource{Attributes: attrs},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
	}
}

// Service is a Resource whose only attribute is service.name.
func Service(name string, spans ...*tracepb.Span) *tracepb.ResourceSpans {
	return Resource([]*commonpb.KeyValue{Str("service.name", name)}, spans...)
}

// Request is an export request of the resources.
func Request(resources ...*tracepb.ResourceSpans) *coltracepb.ExportTraceServiceRequest {
	return &coltracepb.ExportTraceServiceRequest{ResourceSpans: resources}
}

// Marshal is the protobuf encoding of m, as an OTLP/HTTP body or gRPC
// message carries it.
func Marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Batch encodes req and decodes it the way the receiver does, into a
// pooled Batch that the caller releases (or leaves to the collector).
func Batch(t testing.TB, req *coltracepb.ExportTraceServiceRequest) *otlp.Batch {
	t.Helper()
	b := otlp.GetBatch()
	if err := b.DecodeProto(Marshal(t, req)); err != nil {
		t.Fatal(err)
	}
	return b
}

// LogBuffer collects log output that goroutines write while the test
// reads it; a process's or an engine's logs outlive t.Log's use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
