package otlp

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzDecodeProto holds DecodeProto to the generated decoder: on any input
// it must not panic; whatever referenceDecode (proto.Unmarshal, with the
// rule for strings that are not UTF-8) accepts it must accept and read the
// same way, flagging the spans the rule flags; when it fails, the error
// wraps ErrMalformed and the batch is empty. It may accept more than the
// reference (it does not look inside fields it skips), but what it
// returns must still be consistent.
//
// Seeds: testdata/fuzz/FuzzDecodeProto (realistic requests, every value
// type, odd ids, unusual field orders, merge rules, malformed input, text
// that is not UTF-8 in a span, a resource, or where nothing reads it).
func FuzzDecodeProto(f *testing.F) {
	f.Add(mustMarshal(realisticRequest(2, 3, 2, 1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		want, faults, refErr := referenceDecode(data)
		var plain coltracepb.ExportTraceServiceRequest
		if proto.Unmarshal(data, &plain) == nil {
			// The rule must change nothing where there is nothing to flag.
			if refErr != nil || slices.ContainsFunc(faults, func(f Fault) bool { return f != FaultNone }) || !proto.Equal(&plain, want) {
				t.Fatalf("referenceDecode differs from proto.Unmarshal on valid input: %v, %v", refErr, faults)
			}
		}

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
			if err := checkFlagged(b, want, nil, faults); err != nil {
				t.Fatal(err)
			}
		}
		// What a ring forwards decodes to the same spans, split after
		// decoding (AppendPart) or before (SplitRequest).
		if err := checkSplit(data, 3); err != nil {
			t.Fatal(err)
		}
		if err := checkParts(b, 3, rand.New(rand.NewPCG(uint64(len(data)), 3))); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzDecodeJSON: DecodeJSON must not panic; errors wrap ErrMalformed and
// leave the batch empty; a decoded batch is consistent, equals what the
// binary path makes of the binary request it was turned into, flags the
// spans that jsonSpanFaults and referenceDecode say it must, and survives
// a MarshalJSON / DecodeJSON round trip.
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
		// b.raw holds the binary request the JSON was turned into: text
		// that is not UTF-8 stays so, ids that are not hex and unknown
		// enum names are left out.
		req, faults, err := referenceDecode(b.raw)
		if err != nil {
			t.Fatalf("DecodeJSON produced a binary request the reference refuses: %v", err)
		}
		jsonFaults, err := jsonSpanFaults(data)
		if err != nil {
			t.Fatalf("encoding/json refuses what DecodeJSON accepts: %v", err)
		}
		if len(jsonFaults) != len(faults) {
			t.Fatalf("%d spans in the JSON, %d in the binary request", len(jsonFaults), len(faults))
		}
		i := 0
		for ri := range b.Resources {
			for si := range b.Resources[ri].Spans {
				// The transcoder keeps the first of a span's JSON faults,
				// and those come before any other.
				if allowed := jsonFaults[i]; len(allowed) > 0 {
					got, _ := b.Resources[ri].Spans[si].Fault()
					faults[i] = allowed[0]
					if slices.Contains(allowed, got) {
						faults[i] = got
					}
				}
				i++
			}
		}
		if err := checkFlagged(b, req, canonicalSizes(req), faults); err != nil {
			t.Fatal(err)
		}
		doc, err := MarshalJSON(req)
		if err != nil {
			t.Fatalf("MarshalJSON of a decoded request: %v", err)
		}
		again := GetBatch()
		defer again.Release()
		if err := again.DecodeJSON(doc); err != nil {
			t.Fatalf("DecodeJSON(MarshalJSON(req)): %v\n%s", err, doc)
		}
		if err := checkBatch(again, req, canonicalSizes(req)); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}
