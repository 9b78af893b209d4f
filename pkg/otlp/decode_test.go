package otlp

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// everyValue has an attribute of every AnyValue variant and of the edge
// values of each (empty, negative, extreme, NaN, -0, no value at all).
func everyValue() []*commonpb.KeyValue {
	return []*commonpb.KeyValue{
		kv("str", strV("checkout")),
		kv("str.empty", strV("")),
		kv("str.unicode", strV("zürich ☃ 東京")),
		kv("bool.true", boolV(true)),
		kv("bool.false", boolV(false)),
		kv("int", intV(200)),
		kv("int.negative", intV(-7)),
		kv("int.max", intV(math.MaxInt64)),
		kv("int.min", intV(math.MinInt64)),
		kv("double", dblV(0.25)),
		kv("double.nan", dblV(math.NaN())),
		kv("double.inf", dblV(math.Inf(-1))),
		kv("double.negzero", dblV(math.Copysign(0, -1))),
		kv("array", arrV(strV("a"), intV(1))),
		kv("kvlist", kvlistV(kv("inner", strV("v")))),
		kv("bytes", bytesV([]byte{0, 1, 0xff})),
		kv("nil.value", nil),
		kv("empty.anyvalue", &commonpb.AnyValue{}),
		kv("", strV("empty key")),
	}
}

// oddIDs covers the id lengths the specification forbids: each span must
// still decode, with IDError saying what is wrong.
func oddIDs() []*tracepb.Span {
	mk := func(trace, span, parent []byte) *tracepb.Span {
		s := simpleSpan(1, tracepb.Span_SPAN_KIND_SERVER)
		s.TraceId, s.SpanId, s.ParentSpanId = trace, span, parent
		return s
	}
	return []*tracepb.Span{
		mk(nil, seqID(1, 8), nil),
		mk(seqID(1, 15), seqID(1, 8), nil),
		mk(seqID(1, 17), seqID(1, 8), nil),
		mk(seqID(1, 300), seqID(1, 8), nil), // longer than a byte can count
		mk(seqID(1, 16), nil, nil),
		mk(seqID(1, 16), seqID(1, 7), nil),
		mk(seqID(1, 16), seqID(1, 9), nil),
		mk(seqID(1, 16), seqID(1, 8), seqID(1, 3)),
		mk(seqID(1, 16), seqID(1, 8), seqID(1, 16)),
		mk(seqID(1, 16), seqID(1, 8), seqID(9, 8)), // the good one
		mk(seqID(1, 16), seqID(1, 8), nil),         // a root span
	}
}

// oracleCases are requests given as generated messages; each is encoded
// by proto.Marshal and also by every layout of layouts.
func oracleCases() []struct {
	name string
	req  *coltracepb.ExportTraceServiceRequest
} {
	allKinds := func() []*tracepb.Span {
		var spans []*tracepb.Span
		for k := range int32(6) {
			spans = append(spans, simpleSpan(byte(10+k), tracepb.Span_SpanKind(k)))
		}
		unknownKind := simpleSpan(30, 9)
		negativeKind := simpleSpan(31, -1) // a 10-byte varint on the wire
		return append(spans, unknownKind, negativeKind)
	}
	statuses := func() []*tracepb.Span {
		var spans []*tracepb.Span
		for i, st := range []*tracepb.Status{
			nil,
			{},
			{Code: tracepb.Status_STATUS_CODE_OK},
			{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "connection refused"},
			{Message: "message without a code"},
			{Code: 7},
		} {
			s := simpleSpan(byte(40+i), tracepb.Span_SPAN_KIND_CLIENT)
			s.Status = st
			spans = append(spans, s)
		}
		return spans
	}
	withExtras := simpleSpan(60, tracepb.Span_SPAN_KIND_PRODUCER, kv("messaging.system", strV("kafka")))
	withExtras.TraceState = "ot=th:c;rv:0123456789abcd,vendor=opaque"
	withExtras.Flags = 0x301
	withExtras.DroppedAttributesCount = 3
	withExtras.Events = []*tracepb.Span_Event{{TimeUnixNano: 5, Name: "exception", Attributes: []*commonpb.KeyValue{kv("exception.type", strV("E"))}}}
	withExtras.Links = []*tracepb.Span_Link{{TraceId: seqID(70, 16), SpanId: seqID(80, 8), TraceState: "x=y", Flags: 1}}
	withExtras.DroppedEventsCount, withExtras.DroppedLinksCount = 1, 2

	return []struct {
		name string
		req  *coltracepb.ExportTraceServiceRequest
	}{
		{"empty request", request()},
		{"resource without anything", request(&tracepb.ResourceSpans{})},
		{"realistic", realisticRequest(20, 8, 10, 1)},
		{"every value type on resource and span", request(resourceSpans(everyValue(),
			scopeSpans("s", simpleSpan(1, tracepb.Span_SPAN_KIND_SERVER, everyValue()...))))},
		{"several resources and scopes", request(
			resourceSpans([]*commonpb.KeyValue{kv("service.name", strV("frontend"))},
				scopeSpans("a", simpleSpan(1, tracepb.Span_SPAN_KIND_SERVER), simpleSpan(2, tracepb.Span_SPAN_KIND_CLIENT)),
				scopeSpans("empty scope"),
				scopeSpans("b", simpleSpan(3, tracepb.Span_SPAN_KIND_INTERNAL, kv("k", strV("v"))))),
			resourceSpans(nil, scopeSpans("no resource", simpleSpan(4, tracepb.Span_SPAN_KIND_SERVER))),
			resourceSpans([]*commonpb.KeyValue{kv("service.name", strV("no spans"))}),
			resourceSpans([]*commonpb.KeyValue{kv("service.name", strV("backend")), kv("k8s.pod.name", strV("backend-7d9"))},
				scopeSpans("c", simpleSpan(5, tracepb.Span_SPAN_KIND_SERVER, kv("http.route", strV("/x")))),
				&tracepb.ScopeSpans{Spans: []*tracepb.Span{simpleSpan(6, tracepb.Span_SPAN_KIND_CONSUMER)}}), // no scope message
		)},
		{"every kind", request(resourceSpans(nil, scopeSpans("k", allKinds()...)))},
		{"statuses", request(resourceSpans(nil, scopeSpans("st", statuses()...)))},
		{"odd id lengths", request(resourceSpans(nil, scopeSpans("ids", oddIDs()...)))},
		{"events, links, flags and counters are skipped", request(resourceSpans(nil, scopeSpans("x", withExtras)))},
		{"empty span", request(resourceSpans(nil, scopeSpans("x", &tracepb.Span{})))},
	}
}

var layouts = []struct {
	name string
	l    wireLayout
}{
	{"span fields reversed", wireLayout{reverseSpans: true}},
	{"scope after spans", wireLayout{reverseScopes: true}},
	{"resource after scope_spans", wireLayout{resourceLast: true}},
	{"resource split into one field per attribute", wireLayout{splitResource: true}},
	{"split resource after scope_spans", wireLayout{splitResource: true, resourceLast: true}},
	{"unknown fields of every wire type", wireLayout{unknownEverywhere: true}},
	{"everything at once", wireLayout{true, true, true, true, true}},
}

// decodeAndCheck decodes data with DecodeProto and with referenceDecode,
// compares, and returns the faults the spans are flagged with. sizes may
// be nil.
func decodeAndCheck(t *testing.T, data []byte, sizes []int) []Fault {
	t.Helper()
	want, faults, err := referenceDecode(data)
	if err != nil {
		t.Fatalf("the reference decoder refuses the test input: %v", err)
	}
	b := GetBatch()
	defer b.Release()
	if err := b.DecodeProto(data); err != nil {
		t.Fatalf("DecodeProto: %v", err)
	}
	if err := checkFlagged(b, want, sizes, faults); err != nil {
		t.Fatal(err)
	}
	if err := checkConsistent(b); err != nil {
		t.Fatal(err)
	}
	return faults
}

func TestDecodeProtoMatchesGenerated(t *testing.T) {
	for _, tc := range oracleCases() {
		t.Run(tc.name, func(t *testing.T) {
			// Canonical encoding: Size must be exactly what proto.Size says.
			decodeAndCheck(t, mustMarshal(tc.req), canonicalSizes(tc.req))
			for _, lay := range layouts {
				t.Run(lay.name, func(t *testing.T) {
					data, sizes := encodeWith(tc.req, lay.l)
					decodeAndCheck(t, data, sizes)
				})
			}
		})
	}
}

// invalidUTF8Cases are requests where strings are not UTF-8 (invalidMarker
// before corrupt), with the spans DecodeProto must flag, in batch order.
func invalidUTF8Cases() []struct {
	name    string
	req     *coltracepb.ExportTraceServiceRequest
	flagged []int
	why     string // of the first flagged span
} {
	bad := func(seed byte, edit func(*tracepb.Span)) *tracepb.Span {
		s := simpleSpan(seed, tracepb.Span_SPAN_KIND_SERVER, kv("http.route", strV("/a")))
		edit(s)
		return s
	}
	good := func(seed byte) *tracepb.Span {
		return simpleSpan(seed, tracepb.Span_SPAN_KIND_CLIENT, kv("k", strV("v")))
	}
	svc := func(name string) []*commonpb.KeyValue { return []*commonpb.KeyValue{kv("service.name", strV(name))} }
	one := func(s *tracepb.Span) *coltracepb.ExportTraceServiceRequest {
		return request(resourceSpans(svc("a"), scopeSpans("s", good(1), s, good(3))))
	}
	return []struct {
		name    string
		req     *coltracepb.ExportTraceServiceRequest
		flagged []int
		why     string
	}{
		{"span name", one(bad(2, func(s *tracepb.Span) { s.Name = invalidMarker })), []int{1}, "span name"},
		{"trace_state", one(bad(2, func(s *tracepb.Span) { s.TraceState = invalidMarker })), []int{1}, "trace_state"},
		{"status message", one(bad(2, func(s *tracepb.Span) { s.Status.Message = invalidMarker })), []int{1}, "status message"},
		{"attribute key", one(bad(2, func(s *tracepb.Span) { s.Attributes = append(s.Attributes, kv(invalidMarker, intV(1))) })), []int{1}, "span attribute key"},
		{"attribute string value", one(bad(2, func(s *tracepb.Span) { s.Attributes = append(s.Attributes, kv("k", strV(invalidMarker))) })), []int{1}, "span attribute string value"},
		{"two spans of three", request(resourceSpans(svc("a"), scopeSpans("s",
			bad(1, func(s *tracepb.Span) { s.Name = invalidMarker }), good(2),
			bad(3, func(s *tracepb.Span) { s.Attributes[0].Value = strV(invalidMarker) })))), []int{0, 2}, "span name"},
		{"resource attribute value", request(
			resourceSpans(svc("ok"), scopeSpans("s", good(1))),
			resourceSpans(svc(invalidMarker), scopeSpans("s", good(2), good(3)), scopeSpans("t", good(4))),
			resourceSpans(svc("ok too"), scopeSpans("s", good(5)))), []int{1, 2, 3}, "resource attribute string value"},
		{"resource attribute key", request(
			resourceSpans([]*commonpb.KeyValue{kv("service.name", strV("x")), kv(invalidMarker, strV("y"))}, scopeSpans("s", good(1))),
			resourceSpans(svc("ok"), scopeSpans("s", good(2)))), []int{0}, "resource attribute key"},
		{"flagged span in a flagged resource", request(
			resourceSpans(svc(invalidMarker), scopeSpans("s", bad(1, func(s *tracepb.Span) { s.Name = invalidMarker }), good(2)))), []int{0, 1}, "span name"},
		{"strings the processors never read", request(resourceSpans(svc("a"),
			&tracepb.ScopeSpans{Scope: &commonpb.InstrumentationScope{Name: invalidMarker}, SchemaUrl: invalidMarker, Spans: []*tracepb.Span{
				bad(1, func(s *tracepb.Span) {
					s.Events = []*tracepb.Span_Event{{Name: invalidMarker, Attributes: []*commonpb.KeyValue{kv(invalidMarker, strV(invalidMarker))}}}
					s.Links = []*tracepb.Span_Link{{TraceId: seqID(1, 16), SpanId: seqID(2, 8), TraceState: invalidMarker}}
					s.Attributes = append(s.Attributes, kv("array", arrV(strV(invalidMarker))), kv("map", kvlistV(kv(invalidMarker, strV(invalidMarker)))))
				}),
				good(2),
			}})), nil, ""},
	}
}

// TestDecodeProtoFlagsInvalidUTF8: a string that is not UTF-8 flags its
// span (or its resource's spans) and nothing else, whatever the layout,
// where the generated decoder refuses the whole request.
func TestDecodeProtoFlagsInvalidUTF8(t *testing.T) {
	for _, tc := range invalidUTF8Cases() {
		t.Run(tc.name, func(t *testing.T) {
			data := corrupt(mustMarshal(tc.req))
			var ref coltracepb.ExportTraceServiceRequest
			if proto.Unmarshal(data, &ref) == nil {
				t.Fatal("the generated decoder accepts the input: the case tests nothing")
			}
			want := make([]Fault, len(canonicalSizes(tc.req)))
			for _, i := range tc.flagged {
				want[i] = FaultUTF8
			}
			if got := decodeAndCheck(t, data, canonicalSizes(tc.req)); !slices.Equal(got, want) {
				t.Fatalf("the reference rule flags %v, want %v", got, want)
			}
			if tc.why != "" {
				b := GetBatch()
				defer b.Release()
				if err := b.DecodeProto(data); err != nil {
					t.Fatal(err)
				}
				var flagged *Span
				for ri := range b.Resources {
					for si := range b.Resources[ri].Spans {
						if f, _ := b.Resources[ri].Spans[si].Fault(); f != FaultNone && flagged == nil {
							flagged = &b.Resources[ri].Spans[si]
						}
					}
				}
				if _, why := flagged.Fault(); why != tc.why+" is not valid UTF-8" && why != "a "+tc.why+" is not valid UTF-8" {
					t.Errorf("first flagged span: %q, want it to name the %s", why, tc.why)
				}
			}
			for _, lay := range layouts {
				t.Run(lay.name, func(t *testing.T) {
					data, sizes := encodeWith(tc.req, lay.l)
					decodeAndCheck(t, corrupt(data), sizes)
				})
			}
		})
	}
}

// TestDecodeProtoFlagsMergedStrings: a string that is not UTF-8 flags the
// span even when a later field of the encoding replaces it, as the
// generated decoder refuses it even then.
func TestDecodeProtoFlagsMergedStrings(t *testing.T) {
	// Clipped: every case appends to it.
	ids := slices.Clip(appendMsg(appendMsg(nil, 1, seqID(1, 16)), 2, seqID(2, 8)))
	badUTF8 := []byte("caf\xc3(")
	attr := func(values ...[]byte) []byte {
		kv := appendMsg(nil, 1, []byte("k"))
		for _, v := range values {
			kv = appendMsg(kv, 2, v)
		}
		return appendMsg(nil, 9, kv)
	}
	cases := []struct {
		name string
		span []byte
	}{
		{"surrogate half in the name", appendMsg(ids, 5, []byte("\xed\xa0\x80"))},
		{"a bad name, then a good one", appendMsg(appendMsg(ids, 5, badUTF8), 5, []byte("good"))},
		{"a bad string value, then an int in the same AnyValue", append(ids, attr(append(appendMsg(nil, 1, badUTF8), appendVarint(nil, 3, 7)...))...)},
		{"a bad string value, then an int in a second AnyValue", append(ids, attr(appendMsg(nil, 1, badUTF8), appendVarint(nil, 3, 7))...)},
		{"a bad status message, then a second status", appendMsg(appendMsg(ids, 15, appendMsg(nil, 2, badUTF8)), 15, appendVarint(nil, 3, 2))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			good := appendMsg(ids, 5, []byte("fine"))
			data := appendMsg(nil, 1, appendMsg(nil, 2, append(appendMsg(nil, 2, tc.span), appendMsg(nil, 2, good)...)))
			if got := decodeAndCheck(t, data, []int{len(tc.span), len(good)}); !slices.Equal(got, []Fault{FaultUTF8, FaultNone}) {
				t.Errorf("flagged %v, want the first span only", got)
			}
		})
	}
}

// TestDecodeProtoMergeSemantics covers encodings where protobuf's "last one
// wins" and "messages merge" rules decide the result. The expected values
// are spelled out as well as checked against the oracle, so that a wrong
// oracle cannot hide a wrong decoder.
func TestDecodeProtoMergeSemantics(t *testing.T) {
	var span []byte
	span = appendMsg(span, 1, seqID(0xa0, 16))
	span = appendMsg(span, 1, seqID(0xb0, 16)) // second trace id wins
	span = appendMsg(span, 2, seqID(1, 8))
	span = appendMsg(span, 5, []byte("first name"))
	span = appendVarint(span, 6, uint64(tracepb.Span_SPAN_KIND_CLIENT))
	span = appendMsg(span, 15, mustMarshal(&tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "first"}))
	// An attribute whose value field appears twice: the AnyValue messages
	// merge, so the second variant replaces the first.
	var attr []byte
	attr = appendMsg(attr, 1, []byte("merged"))
	attr = appendMsg(attr, 2, mustMarshal(strV("a string")))
	attr = appendMsg(attr, 2, mustMarshal(intV(42)))
	span = appendMsg(span, 9, attr)
	// One AnyValue holding two variants: the last on the wire wins.
	var twoVariants []byte
	twoVariants = appendMsg(twoVariants, 1, []byte("str"))
	twoVariants = appendFixed64(twoVariants, 4, math.Float64bits(2.5))
	span = appendMsg(span, 9, appendMsg(appendMsg(nil, 1, []byte("two.variants")), 2, twoVariants))
	// An empty second AnyValue merges nothing: the first value stays.
	var keep []byte
	keep = appendMsg(keep, 1, []byte("kept"))
	keep = appendMsg(keep, 2, mustMarshal(boolV(true)))
	keep = appendMsg(keep, 2, nil)
	span = appendMsg(span, 9, keep)
	span = appendVarint(span, 6, uint64(tracepb.Span_SPAN_KIND_SERVER)) // second kind wins
	span = appendMsg(span, 5, []byte("second name"))
	// A second status merges: it sets the message, the code stays ERROR.
	span = appendMsg(span, 15, mustMarshal(&tracepb.Status{Message: "second"}))
	// Known field numbers with the wrong wire type are unknown fields.
	span = appendVarint(span, 5, 12345)
	span = appendFixed64(span, 6, 1)
	span = appendVarint(span, 7, 99)

	data := appendMsg(nil, 1, appendMsg(nil, 2, appendMsg(nil, 2, span)))
	decodeAndCheck(t, data, []int{len(span)})

	b := GetBatch()
	defer b.Release()
	if err := b.DecodeProto(data); err != nil {
		t.Fatal(err)
	}
	s := &b.Resources[0].Spans[0]
	if s.Name != "second name" || s.Kind != SpanKindServer || s.TraceID[0] != 0xb0 ||
		s.StatusCode != StatusError || s.StatusMsg != "second" || s.Start != 0 {
		t.Errorf("merge rules not applied: %+v", s)
	}
	want := []KeyValue{
		{"merged", Value{Type: ValueInt, Int: 42}},
		{"two.variants", Value{Type: ValueDouble, Double: 2.5}},
		{"kept", Value{Type: ValueBool, Int: 1}},
	}
	for i, w := range want {
		if s.Attributes[i].Key != w.Key || !sameValue(s.Attributes[i].Value, w.Value) {
			t.Errorf("attribute %d = %+v, want %+v", i, s.Attributes[i], w)
		}
	}
}

// TestDecodeProtoStringIndex: OTLP 1.9 added string_value_strindex (field
// 8, a varint) to AnyValue. It is a oneof variant like the others, so when
// it comes last it replaces an earlier string; the decoder must not keep
// reporting the string.
func TestDecodeProtoStringIndex(t *testing.T) {
	var v []byte
	v = appendMsg(v, 1, []byte("stale string"))
	v = appendVarint(v, 8, 3)
	attr := appendMsg(appendMsg(nil, 1, []byte("k")), 2, v)
	span := appendMsg(appendMsg(nil, 5, []byte("n")), 9, attr)
	data := appendMsg(nil, 1, appendMsg(nil, 2, appendMsg(nil, 2, span)))
	decodeAndCheck(t, data, nil)
}

// TestDecodeProtoPrefixes decodes every prefix of a request: a cut inside
// a field must be an error wrapping ErrMalformed, exactly when the
// reference decoder fails too, and a failed decode must leave the batch
// empty.
func TestDecodeProtoPrefixes(t *testing.T) {
	req := request(
		resourceSpans([]*commonpb.KeyValue{kv("service.name", strV("a"))},
			scopeSpans("s", simpleSpan(1, tracepb.Span_SPAN_KIND_SERVER, everyValue()[:8]...))),
		resourceSpans([]*commonpb.KeyValue{kv("service.name", strV("b"))},
			scopeSpans("s", simpleSpan(2, tracepb.Span_SPAN_KIND_CLIENT, kv("k", strV("v"))))),
	)
	data := mustMarshal(req)
	b := new(Batch)
	for n := range len(data) + 1 {
		prefix := data[:n:n]
		var want coltracepb.ExportTraceServiceRequest
		refErr := proto.Unmarshal(prefix, &want)
		err := b.DecodeProto(prefix)
		switch {
		case refErr == nil && err != nil:
			t.Fatalf("prefix %d: DecodeProto: %v, but the reference decodes it", n, err)
		case refErr != nil && err == nil:
			t.Fatalf("prefix %d: DecodeProto accepts a request cut inside a field (reference: %v)", n, refErr)
		case err != nil:
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("prefix %d: error %v does not wrap ErrMalformed", n, err)
			}
			if len(b.Resources) != 0 || b.SpanCount != 0 {
				t.Fatalf("prefix %d: failed decode left %d resources, %d spans", n, len(b.Resources), b.SpanCount)
			}
		default:
			if cerr := checkBatch(b, &want, nil); cerr != nil {
				t.Fatalf("prefix %d: %v", n, cerr)
			}
			b.reset()
		}
	}
}

func TestDecodeProtoMalformed(t *testing.T) {
	// wrap puts a span encoding into a request.
	wrap := func(span []byte) []byte {
		return appendMsg(nil, 1, appendMsg(nil, 2, appendMsg(nil, 2, span)))
	}
	badUTF8 := []byte("caf\xc3(") // a 2-byte sequence cut short
	overlong := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}

	cases := []struct {
		name string
		data []byte
	}{
		{"truncated tag varint", []byte{0x8a}},
		{"varint tag over 10 bytes", overlong},
		{"length beyond the end", []byte{0x0a, 0x64, 0x01, 0x02, 0x03}},
		{"field number 0", []byte{0x02, 0x00}},
		{"end group with no start", protowire.AppendTag(nil, 9, protowire.EndGroupType)},
		{"unterminated group", protowire.AppendTag(nil, 9, protowire.StartGroupType)},
		{"truncated fixed64 start time", wrap(append(protowire.AppendTag(nil, 7, protowire.Fixed64Type), 1, 2, 3))},
		{"truncated fixed32 in span", wrap(append(protowire.AppendTag(nil, 16, protowire.Fixed32Type), 1))},
		{"bad varint in span kind", wrap(append(protowire.AppendTag(nil, 6, protowire.VarintType), overlong...))},
		{"bad varint in unknown span field", wrap(append(protowire.AppendTag(nil, 12, protowire.VarintType), 0x80, 0x80))},
		{"truncated inside resource attributes", appendMsg(nil, 1, appendMsg(nil, 1, []byte{0x0a, 0x05, 'a'}))},
		{"resource after spans is malformed", appendMsg(nil, 1, append(appendMsg(nil, 2, nil), 0x0a, 0x03, 0x0a, 0x05, 'x'))},
		{"error after good spans", append(wrap(appendMsg(nil, 5, []byte("ok"))), wrap(append(protowire.AppendTag(nil, 7, protowire.Fixed64Type), 1))...)},
		{"error after a flagged span", append(wrap(appendMsg(nil, 5, badUTF8)), 0x0a, 0x05)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The reference must refuse it too, or the case tests nothing.
			var ref coltracepb.ExportTraceServiceRequest
			if proto.Unmarshal(tc.data, &ref) == nil {
				t.Fatalf("the reference decoder accepts this input")
			}
			b := new(Batch)
			err := b.DecodeProto(tc.data)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeProto = %v, want an error wrapping ErrMalformed", err)
			}
			if len(b.Resources) != 0 || b.SpanCount != 0 || len(b.spans) != 0 || len(b.attrs) != 0 {
				t.Fatalf("a failed decode left data behind: %d resources, %d spans", len(b.Resources), b.SpanCount)
			}
		})
	}
}

// TestDecodeProtoZeroAlloc: per the design (§6), a warm batch decodes
// without allocating.
func TestDecodeProtoZeroAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes the per-resource scratch slice escape")
	}
	data := mustMarshal(realisticRequest(20, 8, 10, 2))
	b := new(Batch)
	if err := b.DecodeProto(data); err != nil {
		t.Fatal(err)
	}
	b.reset()
	allocs := testing.AllocsPerRun(50, func() {
		if err := b.DecodeProto(data); err != nil {
			t.Fatal(err)
		}
		b.reset()
	})
	if allocs != 0 {
		t.Errorf("DecodeProto on a warm batch: %v allocs per request, want 0", allocs)
	}
}

func TestBatchFilter(t *testing.T) {
	req := realisticRequest(10, 8, 3, 3)
	b := GetBatch()
	defer b.Release()
	if err := b.DecodeProto(mustMarshal(req)); err != nil {
		t.Fatal(err)
	}
	before := b.SpanCount

	// Keep only the client spans and check that what stays is exactly the
	// reference's client spans, in order, with their attributes.
	removed := b.Filter(func(_ *ResourceSpans, s *Span) bool { return s.Kind == SpanKindClient })
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			var kept []*tracepb.Span
			for _, s := range ss.Spans {
				if s.Kind == tracepb.Span_SPAN_KIND_CLIENT {
					kept = append(kept, s)
				}
			}
			ss.Spans = kept
		}
	}
	if err := checkBatch(b, req, canonicalSizes(req)); err != nil {
		t.Fatal(err)
	}
	if removed != before-b.SpanCount || removed == 0 {
		t.Errorf("Filter returned %d, span count went %d -> %d", removed, before, b.SpanCount)
	}
	// The callback sees the span's own resource.
	b.Filter(func(rs *ResourceSpans, s *Span) bool {
		name, _ := Lookup(rs.Attributes, "service.name")
		if want := s.Attributes[3].Value.Str; want == "" || name.Str == "" {
			t.Errorf("Filter passed a resource without service.name")
		}
		inside := false
		for i := range rs.Spans {
			inside = inside || &rs.Spans[i] == s
		}
		if !inside {
			t.Errorf("Filter passed a span with a resource it does not belong to")
		}
		return true
	})
	if n := b.Filter(func(*ResourceSpans, *Span) bool { return false }); n != len(canonicalSizes(req)) || b.SpanCount != 0 {
		t.Errorf("removing everything: Filter = %d, SpanCount = %d", n, b.SpanCount)
	}
	if err := checkConsistent(b); err != nil {
		t.Fatal(err)
	}
}

// TestBatchReuseNoLeak decodes a large request and then a small, different
// one into the same batch: nothing of the first may show in the second.
func TestBatchReuseNoLeak(t *testing.T) {
	big := realisticRequest(30, 8, 10, 4)
	small := request(resourceSpans([]*commonpb.KeyValue{kv("service.name", strV("only"))},
		scopeSpans("s", simpleSpan(9, tracepb.Span_SPAN_KIND_CLIENT))))
	noAttrs := request(resourceSpans(nil, scopeSpans("s", &tracepb.Span{Name: "bare"})))

	b := new(Batch)
	for i, req := range []*coltracepb.ExportTraceServiceRequest{big, small, big, noAttrs, small} {
		if err := b.DecodeProto(mustMarshal(req)); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if err := checkBatch(b, req, canonicalSizes(req)); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b.reset() // what Release does before pooling
		// A failed decode in between must not leave anything either.
		if err := b.DecodeProto([]byte{0x0a, 0x10, 0x12}); err == nil {
			t.Fatal("malformed input accepted")
		}
	}
}

// TestPoolReuse goes through GetBatch/Release as the receiver does, with
// requests that alternate; whichever batch the pool hands out must hold
// exactly the current request. Each request gets its own buffer from
// Batch.Buffer, which the previous request's strings pointed into.
func TestPoolReuse(t *testing.T) {
	reqs := []*coltracepb.ExportTraceServiceRequest{
		realisticRequest(10, 8, 5, 5),
		request(resourceSpans(everyValue(), scopeSpans("s", simpleSpan(1, tracepb.Span_SPAN_KIND_SERVER, everyValue()...)))),
		request(),
		realisticRequest(3, 2, 2, 6),
	}
	encoded := make([][]byte, len(reqs))
	for i, r := range reqs {
		encoded[i] = mustMarshal(r)
	}
	for round := range 20 {
		i := round % len(reqs)
		b := GetBatch()
		if b.SpanCount != 0 || len(b.Resources) != 0 {
			t.Fatalf("round %d: GetBatch returned a batch holding %d spans", round, b.SpanCount)
		}
		buf := append(b.Buffer(), encoded[i]...)
		if err := b.DecodeProto(buf); err != nil {
			t.Fatal(err)
		}
		if err := checkBatch(b, reqs[i], canonicalSizes(reqs[i])); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		b.Release()
	}
}

func TestSpanKindAndStatusStrings(t *testing.T) {
	kinds := map[SpanKind]string{
		SpanKindUnspecified: "SPAN_KIND_UNSPECIFIED", SpanKindInternal: "SPAN_KIND_INTERNAL",
		SpanKindServer: "SPAN_KIND_SERVER", SpanKindClient: "SPAN_KIND_CLIENT",
		SpanKindProducer: "SPAN_KIND_PRODUCER", SpanKindConsumer: "SPAN_KIND_CONSUMER",
		6: "SPAN_KIND_UNSPECIFIED", -1: "SPAN_KIND_UNSPECIFIED",
	}
	for k, want := range kinds {
		if k >= 0 && k <= 5 && tracepb.Span_SpanKind(k).String() != want {
			t.Errorf("the contract names disagree with the proto enum for %d", k)
		}
		if got := k.String(); got != want {
			t.Errorf("SpanKind(%d) = %q, want %q", k, got, want)
		}
	}
	codes := map[StatusCode]string{StatusUnset: "STATUS_CODE_UNSET", StatusOK: "STATUS_CODE_OK", StatusError: "STATUS_CODE_ERROR", 3: "STATUS_CODE_UNSET", -2: "STATUS_CODE_UNSET"}
	for c, want := range codes {
		if got := c.String(); got != want {
			t.Errorf("StatusCode(%d) = %q, want %q", c, got, want)
		}
	}
}

func TestValueText(t *testing.T) {
	cases := []struct {
		v    Value
		want string
		ok   bool
	}{
		{Value{Type: ValueString, Str: "abc"}, "abc", true},
		{Value{Type: ValueString}, "", true},
		{Value{Type: ValueInt, Int: -42}, "-42", true},
		{Value{Type: ValueInt, Int: math.MaxInt64}, "9223372036854775807", true},
		{Value{Type: ValueDouble, Double: 0.1}, "0.1", true},
		{Value{Type: ValueDouble, Double: 2}, "2", true},
		{Value{Type: ValueDouble, Double: 1e21}, "1000000000000000000000", true}, // 'f', never exponent
		{Value{Type: ValueDouble, Double: math.Inf(1)}, "+Inf", true},
		{Value{Type: ValueBool, Int: 1}, "true", true},
		{Value{Type: ValueBool}, "false", true},
		{Value{Type: ValueOther}, "", false},
		{Value{}, "", false},
	}
	for _, tc := range cases {
		got, ok := tc.v.AppendText([]byte("prefix:"))
		if string(got) != "prefix:"+tc.want || ok != tc.ok {
			t.Errorf("%+v.AppendText = %q, %v; want %q, %v", tc.v, got, ok, "prefix:"+tc.want, tc.ok)
		}
		if s := tc.v.Text(); s != tc.want {
			t.Errorf("%+v.Text = %q, want %q", tc.v, s, tc.want)
		}
	}
}

func TestLookup(t *testing.T) {
	attrs := []KeyValue{{"a", Value{Type: ValueString, Str: "1"}}, {"b", Value{}}, {"a", Value{Type: ValueString, Str: "2"}}}
	if v, ok := Lookup(attrs, "a"); !ok || v.Str != "1" {
		t.Errorf("Lookup a = %+v, %v; want the first occurrence", v, ok)
	}
	if _, ok := Lookup(attrs, "b"); !ok {
		t.Error("Lookup b: a key with an empty value is still present")
	}
	if _, ok := Lookup(attrs, "c"); ok {
		t.Error("Lookup c found a missing key")
	}
}

func TestPartialSuccess(t *testing.T) {
	if ps := PartialSuccess(0, "x"); ps.PartialSuccess != nil {
		t.Errorf("nothing rejected must be a plain success, got %v", ps)
	}
	ps := PartialSuccess(3, "end time outside the ingestion window")
	if ps.GetPartialSuccess().GetRejectedSpans() != 3 || !strings.Contains(ps.GetPartialSuccess().GetErrorMessage(), "ingestion window") {
		t.Errorf("PartialSuccess = %v", ps)
	}
	for _, asJSON := range []bool{false, true} {
		out, err := EncodeResponse(ps, asJSON)
		if err != nil || len(out) == 0 {
			t.Fatalf("EncodeResponse(json=%v) = %q, %v", asJSON, out, err)
		}
	}
}
