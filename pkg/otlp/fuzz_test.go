package otlp

import (
	"errors"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzDecodeProto holds DecodeProto to the generated decoder: on any input
// it must not panic; whatever proto.Unmarshal accepts it must accept and
// read the same way; when it fails, the error wraps ErrMalformed and the
// batch is empty. It may accept more than the reference (it does not look
// inside fields it skips), but what it returns must still be consistent.
//
// Seeds: testdata/fuzz/FuzzDecodeProto (realistic requests, every value
// type, odd ids, unusual field orders, merge rules, malformed input).
func FuzzDecodeProto(f *testing.F) {
	f.Add(mustMarshal(realisticRequest(2, 3, 2, 1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		var want coltracepb.ExportTraceServiceRequest
		refErr := proto.Unmarshal(data, &want)

		b := GetBatch()
		defer b.Release()
		err := b.DecodeProto(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if refErr == nil {
				t.Fatalf("DecodeProto refuses what the reference decoder accepts: %v", err)
			}
			if b.SpanCount != 0 || len(b.Resources) != 0 {
				t.Fatalf("a failed decode left %d resources, %d spans", len(b.Resources), b.SpanCount)
			}
			return
		}
		if err := checkConsistent(b); err != nil {
			t.Fatal(err)
		}
		for ri := range b.Resources {
			for si := range b.Resources[ri].Spans {
				if s := b.Resources[ri].Spans[si].Size; s > len(data) {
					t.Fatalf("span size %d larger than the request (%d)", s, len(data))
				}
			}
		}
		if refErr == nil {
			if err := checkBatch(b, &want, nil); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzDecodeJSON: DecodeJSON must not panic; errors wrap ErrMalformed and
// leave the batch empty; a decoded batch is consistent, equals what the
// binary path makes of the same request, and survives a MarshalJSON /
// DecodeJSON round trip.
func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(otlpJSON))
	f.Fuzz(func(t *testing.T, data []byte) {
		b := GetBatch()
		defer b.Release()
		err := b.DecodeJSON(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if b.SpanCount != 0 || len(b.Resources) != 0 {
				t.Fatalf("a failed decode left %d resources, %d spans", len(b.Resources), b.SpanCount)
			}
			return
		}
		if err := checkConsistent(b); err != nil {
			t.Fatal(err)
		}
		// b.raw holds the binary request the JSON was turned into.
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b.raw, &req); err != nil {
			t.Fatalf("DecodeJSON produced a binary request the reference refuses: %v", err)
		}
		if err := checkBatch(b, &req, canonicalSizes(&req)); err != nil {
			t.Fatal(err)
		}
		doc, err := MarshalJSON(&req)
		if err != nil {
			t.Fatalf("MarshalJSON of a decoded request: %v", err)
		}
		again := GetBatch()
		defer again.Release()
		if err := again.DecodeJSON(doc); err != nil {
			t.Fatalf("DecodeJSON(MarshalJSON(req)): %v\n%s", err, doc)
		}
		if err := checkBatch(again, &req, canonicalSizes(&req)); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}
