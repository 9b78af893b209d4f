package otlp

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// checkParts removes the spans with a fault, as the receiver does before
// it splits a batch, splits the rest into n parts by rnd, encodes each
// with AppendPart, decodes it again, and checks that every span arrives in
// its part once, unchanged: same fields, attributes, Size and resource
// attributes.
func checkParts(b *Batch, n int, rnd *rand.Rand) error {
	b.Filter(func(_ *ResourceSpans, s *Span) bool { f, _ := s.Fault(); return f == FaultNone })
	parts := make([]uint16, b.SpanCount)
	for i := range parts {
		parts[i] = uint16(rnd.IntN(n))
	}
	type spanAt struct {
		span     Span
		resource []KeyValue
	}
	want := make([][]spanAt, n)
	k := 0
	for ri := range b.Resources {
		for si := range b.Resources[ri].Spans {
			want[parts[k]] = append(want[parts[k]], spanAt{b.Resources[ri].Spans[si], b.Resources[ri].Attributes})
			k++
		}
	}
	for p := range n {
		body := b.AppendPart(nil, parts, uint16(p))
		got := GetBatch()
		if err := got.DecodeProto(body); err != nil {
			got.Release()
			return fmt.Errorf("part %d does not decode: %v", p, err)
		}
		var have []spanAt
		for ri := range got.Resources {
			for si := range got.Resources[ri].Spans {
				have = append(have, spanAt{got.Resources[ri].Spans[si], got.Resources[ri].Attributes})
			}
		}
		if len(have) != len(want[p]) {
			got.Release()
			return fmt.Errorf("part %d: %d spans, want %d", p, len(have), len(want[p]))
		}
		for i := range have {
			g, w := have[i], want[p][i]
			if err := sameSpan(&g.span, &w.span); err != nil {
				got.Release()
				return fmt.Errorf("part %d span %d: %v", p, i, err)
			}
			if !sameAttrs(g.resource, w.resource) {
				got.Release()
				return fmt.Errorf("part %d span %d: resource %v, want %v", p, i, g.resource, w.resource)
			}
		}
		got.Release()
	}
	return nil
}

// sameSpan compares what the processors read of two spans.
func sameSpan(g, w *Span) error {
	gf, _ := g.Fault()
	wf, _ := w.Fault()
	switch {
	case g.TraceID != w.TraceID || g.SpanID != w.SpanID || g.ParentSpanID != w.ParentSpanID || g.HasParent() != w.HasParent():
		return fmt.Errorf("ids differ")
	case g.IDError() != w.IDError():
		return fmt.Errorf("id error %q, want %q", g.IDError(), w.IDError())
	case g.Name != w.Name || g.TraceState != w.TraceState || g.Kind != w.Kind || g.StatusCode != w.StatusCode || g.StatusMsg != w.StatusMsg:
		return fmt.Errorf("%+v, want %+v", g, w)
	case g.Start != w.Start || g.End != w.End:
		return fmt.Errorf("times differ")
	case g.Size != w.Size:
		return fmt.Errorf("size %d, want %d", g.Size, w.Size)
	case gf != wf:
		return fmt.Errorf("fault %v, want %v", gf, wf)
	case !sameAttrs(g.Attributes, w.Attributes):
		return fmt.Errorf("attributes %v, want %v", g.Attributes, w.Attributes)
	}
	return nil
}

func sameAttrs(a, b []KeyValue) bool {
	return slices.EqualFunc(a, b, func(x, y KeyValue) bool { return x.Key == y.Key && sameValue(x.Value, y.Value) })
}

func TestAppendPart(t *testing.T) {
	req := realisticRequest(20, 6, 5, 7)
	// A resource whose resource field comes twice, after its spans: the
	// decoder merges both, and so must the part.
	rs := appendMsg(nil, 2, mustMarshal(scopeSpans("s", simpleSpan(3, tracepb.Span_SPAN_KIND_SERVER))))
	rs = appendMsg(rs, 1, mustMarshal(&resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", strV("late"))}}))
	rs = appendMsg(rs, 1, mustMarshal(&resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("deployment.environment", strV("prod"))}}))
	raw := appendMsg(nil, 1, rs)
	jsonBody, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		decode func(b *Batch) error
	}{
		{"protobuf", func(b *Batch) error { return b.DecodeProto(mustMarshal(req)) }},
		{"json", func(b *Batch) error { return b.DecodeJSON(jsonBody) }},
		{"resource field twice, after the spans", func(b *Batch) error { return b.DecodeProto(raw) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := GetBatch()
			defer b.Release()
			if err := tc.decode(b); err != nil {
				t.Fatal(err)
			}
			if b.SpanCount == 0 {
				t.Fatal("no spans decoded")
			}
			for seed := range uint64(20) {
				if err := checkParts(b, 1+int(seed%4), rand.New(rand.NewPCG(seed, 1))); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// After Filter, the parts hold the spans left, still byte for byte.
func TestAppendPartAfterFilter(t *testing.T) {
	b := GetBatch()
	defer b.Release()
	if err := b.DecodeProto(mustMarshal(realisticRequest(10, 5, 3, 2))); err != nil {
		t.Fatal(err)
	}
	i := 0
	b.Filter(func(*ResourceSpans, *Span) bool { i++; return i%3 != 0 })
	if err := checkParts(b, 3, rand.New(rand.NewPCG(9, 9))); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkAppendPart(b *testing.B) {
	batch := GetBatch()
	defer batch.Release()
	data := mustMarshal(realisticRequest(100, 8, 10, 1))
	if err := batch.DecodeProto(data); err != nil {
		b.Fatal(err)
	}
	parts := make([]uint16, batch.SpanCount)
	for i := range parts {
		parts[i] = uint16(i % 3)
	}
	buf := make([]byte, 0, len(data))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		for p := range uint16(3) {
			buf = batch.AppendPart(buf[:0], parts, p)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch.SpanCount), "ns/span")
}
