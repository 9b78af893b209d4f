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

// checkSplit splits data into n parts by trace id with SplitRequest,
// decodes each part and checks it holds exactly the spans of the whole
// request's decoding that its trace ids give it, unchanged.
func checkSplit(data []byte, n int) error {
	whole := GetBatch()
	defer whole.Release()
	if err := whole.DecodeProto(data); err != nil {
		return nil // nothing to compare with; SplitRequest may refuse it or not
	}
	partOf := func(id [16]byte) int { return int(id[0]^id[15]) % n }
	var scratch []SplitSpan
	parts, err := SplitRequest(data, func(raw []byte) int {
		var id [16]byte
		copy(id[:], raw)
		return partOf(id)
	}, make([][]byte, n), &scratch)
	if err != nil {
		return fmt.Errorf("SplitRequest refuses what DecodeProto takes: %v", err)
	}
	want := make([][]Span, n)
	wantRes := make([][][]KeyValue, n)
	for ri := range whole.Resources {
		for _, s := range whole.Resources[ri].Spans {
			p := partOf(s.TraceID)
			want[p] = append(want[p], s)
			wantRes[p] = append(wantRes[p], whole.Resources[ri].Attributes)
		}
	}
	for p := range n {
		got := GetBatch()
		if err := got.DecodeProto(parts[p]); err != nil {
			got.Release()
			return fmt.Errorf("part %d does not decode: %v", p, err)
		}
		i := 0
		for ri := range got.Resources {
			for si := range got.Resources[ri].Spans {
				if i >= len(want[p]) {
					got.Release()
					return fmt.Errorf("part %d has more spans than the %d it should", p, len(want[p]))
				}
				if err := sameSpan(&got.Resources[ri].Spans[si], &want[p][i]); err != nil {
					got.Release()
					return fmt.Errorf("part %d span %d: %v", p, i, err)
				}
				if !sameAttrs(got.Resources[ri].Attributes, wantRes[p][i]) {
					got.Release()
					return fmt.Errorf("part %d span %d: resource differs", p, i)
				}
				i++
			}
		}
		got.Release()
		if i != len(want[p]) {
			return fmt.Errorf("part %d: %d spans, want %d", p, i, len(want[p]))
		}
	}
	return nil
}

func TestSplitRequest(t *testing.T) {
	rs := appendMsg(nil, 2, mustMarshal(scopeSpans("s", simpleSpan(3, tracepb.Span_SPAN_KIND_SERVER), simpleSpan(4, tracepb.Span_SPAN_KIND_CLIENT))))
	rs = appendMsg(rs, 1, mustMarshal(&resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", strV("late"))}}))
	for name, data := range map[string][]byte{
		"realistic":                         mustMarshal(realisticRequest(30, 6, 5, 11)),
		"resource after its spans":          appendMsg(nil, 1, rs),
		"several scopes, odd ids, no spans": mustMarshal(request(resourceSpans(nil, scopeSpans("a", simpleSpan(1, tracepb.Span_SPAN_KIND_SERVER)), scopeSpans("b"), scopeSpans("c", simpleSpan(2, tracepb.Span_SPAN_KIND_CLIENT))), resourceSpans(nil))),
	} {
		for n := 1; n <= 4; n++ {
			if err := checkSplit(data, n); err != nil {
				t.Errorf("%s, %d parts: %v", name, n, err)
			}
		}
	}
	var scratch []SplitSpan
	if _, err := SplitRequest([]byte{0x0a, 0xff}, func([]byte) int { return 0 }, make([][]byte, 2), &scratch); err == nil {
		t.Error("a truncated request split without error")
	}
}

func BenchmarkSplitRequest(b *testing.B) {
	data := mustMarshal(realisticRequest(100, 8, 10, 1))
	whole := GetBatch()
	if err := whole.DecodeProto(data); err != nil {
		b.Fatal(err)
	}
	spans := whole.SpanCount
	whole.Release()
	parts := make([][]byte, 3)
	for i := range parts {
		parts[i] = make([]byte, 0, len(data))
	}
	var scratch []SplitSpan
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		for i := range parts {
			parts[i] = parts[i][:0]
		}
		var err error
		if parts, err = SplitRequest(data, func(id []byte) int { return int(id[len(id)-1]) % 3 }, parts, &scratch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*spans), "ns/span")
}
