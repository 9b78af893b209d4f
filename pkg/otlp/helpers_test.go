package otlp

// Helpers shared by the decoder tests, the fuzzers and the benchmarks: the
// generated OTLP types are the reference decoder, and checkBatch compares a
// Batch with what proto.Unmarshal made of the same bytes.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"unicode/utf8"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// --- generated-type shorthands ---

func strV(s string) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
}
func intV(i int64) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: i}}
}
func dblV(f float64) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: f}}
}
func boolV(b bool) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: b}}
}
func bytesV(b []byte) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: b}}
}
func arrV(vs ...*commonpb.AnyValue) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: vs}}}
}
func kvlistV(kvs ...*commonpb.KeyValue) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: kvs}}}
}
func kv(key string, v *commonpb.AnyValue) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: key, Value: v}
}

// seqID returns n bytes counting up from first, so that ids of different
// spans and different lengths are easy to tell apart.
func seqID(first byte, n int) []byte {
	id := make([]byte, n)
	for i := range id {
		id[i] = first + byte(i)
	}
	return id
}

func request(rss ...*tracepb.ResourceSpans) *coltracepb.ExportTraceServiceRequest {
	return &coltracepb.ExportTraceServiceRequest{ResourceSpans: rss}
}

func resourceSpans(attrs []*commonpb.KeyValue, scopes ...*tracepb.ScopeSpans) *tracepb.ResourceSpans {
	rs := &tracepb.ResourceSpans{ScopeSpans: scopes, SchemaUrl: "https://opentelemetry.io/schemas/1.26.0"}
	if attrs != nil {
		rs.Resource = &resourcepb.Resource{Attributes: attrs}
	}
	return rs
}

func scopeSpans(name string, spans ...*tracepb.Span) *tracepb.ScopeSpans {
	return &tracepb.ScopeSpans{
		Scope: &commonpb.InstrumentationScope{Name: name, Version: "1.2.3", Attributes: []*commonpb.KeyValue{kv("scope.attr", strV("x"))}},
		Spans: spans,
	}
}

// simpleSpan is a well-formed span; seed makes its ids and name distinct.
func simpleSpan(seed byte, kind tracepb.Span_SpanKind, attrs ...*commonpb.KeyValue) *tracepb.Span {
	return &tracepb.Span{
		TraceId:           seqID(seed, 16),
		SpanId:            seqID(seed+100, 8),
		ParentSpanId:      seqID(seed+200, 8),
		Name:              fmt.Sprintf("GET /api/%d", seed),
		Kind:              kind,
		StartTimeUnixNano: 1_700_000_000_000_000_000 + uint64(seed)*1_000_000,
		EndTimeUnixNano:   1_700_000_000_000_000_000 + uint64(seed)*1_000_000 + 1_500_000,
		Attributes:        attrs,
		Status:            &tracepb.Status{Code: tracepb.Status_STATUS_CODE_OK},
	}
}

// realisticRequest builds what an SDK or a collector sends: traces of
// spansPerTrace spans spread over services, one ResourceSpans per service,
// a handful of attributes each. It is deterministic in seed.
func realisticRequest(traces, spansPerTrace, services int, seed uint64) *coltracepb.ExportTraceServiceRequest {
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	req := &coltracepb.ExportTraceServiceRequest{}
	scopes := make([]*tracepb.ScopeSpans, services)
	for i := range services {
		svc := fmt.Sprintf("service-%02d", i)
		scopes[i] = &tracepb.ScopeSpans{Scope: &commonpb.InstrumentationScope{Name: "io.opentelemetry.http", Version: "2.1.0"}}
		req.ResourceSpans = append(req.ResourceSpans, &tracepb.ResourceSpans{
			Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
				kv("service.name", strV(svc)),
				kv("service.namespace", strV("shop")),
				kv("service.version", strV("1.4.2")),
				kv("deployment.environment", strV("prod")),
				kv("host.name", strV(fmt.Sprintf("node-%d", i%3))),
				kv("telemetry.sdk.language", strV("go")),
				kv("process.pid", intV(int64(1000+i))),
			}},
			ScopeSpans: []*tracepb.ScopeSpans{scopes[i]},
		})
	}
	routes := []string{"/api/cart", "/api/checkout", "/api/product/{id}", "/api/user", "/healthz"}
	methods := []string{"GET", "POST", "PUT"}
	start := uint64(1_700_000_000_000_000_000)
	for t := range traces {
		traceID := make([]byte, 16)
		for i := range traceID {
			traceID[i] = byte(rnd.Uint32())
		}
		var parent []byte
		for s := range spansPerTrace {
			spanID := make([]byte, 8)
			for i := range spanID {
				spanID[i] = byte(rnd.Uint32())
			}
			svc := (t + s) % services
			kind := tracepb.Span_SPAN_KIND_SERVER
			switch {
			case s == 0:
				kind = tracepb.Span_SPAN_KIND_SERVER
			case s%2 == 1:
				kind = tracepb.Span_SPAN_KIND_CLIENT
			case s%5 == 4:
				kind = tracepb.Span_SPAN_KIND_INTERNAL
			}
			route := routes[rnd.IntN(len(routes))]
			method := methods[rnd.IntN(len(methods))]
			code := int64(200)
			status := &tracepb.Status{}
			if rnd.IntN(20) == 0 {
				code = 500
				status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "internal error"}
			}
			st := start + uint64(t)*10_000_000 + uint64(s)*100_000
			span := &tracepb.Span{
				TraceId:           traceID,
				SpanId:            spanID,
				ParentSpanId:      parent,
				Name:              method + " " + route,
				Kind:              kind,
				StartTimeUnixNano: st,
				EndTimeUnixNano:   st + uint64(rnd.IntN(50_000_000)),
				Attributes: []*commonpb.KeyValue{
					kv("http.request.method", strV(method)),
					kv("http.route", strV(route)),
					kv("http.response.status_code", intV(code)),
					kv("server.address", strV(fmt.Sprintf("service-%02d", (svc+1)%services))),
					kv("network.protocol.version", strV("1.1")),
				},
				Status: status,
			}
			if s%3 == 2 {
				span.Attributes = append(span.Attributes, kv("db.system", strV("postgresql")), kv("db.namespace", strV("orders")))
			}
			if s == 0 {
				span.TraceState = "ot=th:8"
			}
			scopes[svc].Spans = append(scopes[svc].Spans, span)
			parent = spanID
		}
	}
	return req
}

// --- the oracle ---

// wantValue is what the decoder must make of a generated AnyValue.
func wantValue(v *commonpb.AnyValue) Value {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return Value{Type: ValueString, Str: x.StringValue}
	case *commonpb.AnyValue_BoolValue:
		if x.BoolValue {
			return Value{Type: ValueBool, Int: 1}
		}
		return Value{Type: ValueBool}
	case *commonpb.AnyValue_IntValue:
		return Value{Type: ValueInt, Int: x.IntValue}
	case *commonpb.AnyValue_DoubleValue:
		return Value{Type: ValueDouble, Double: x.DoubleValue}
	case nil:
		return Value{}
	default:
		// Arrays, key-value lists, bytes and string-table indexes are
		// present but never label text.
		return Value{Type: ValueOther}
	}
}

func sameValue(a, b Value) bool {
	// Compare doubles by bits so that NaN equals NaN and -0 differs from 0.
	return a.Type == b.Type && a.Str == b.Str && a.Int == b.Int &&
		math.Float64bits(a.Double) == math.Float64bits(b.Double)
}

func checkAttrs(where string, got []KeyValue, want []*commonpb.KeyValue) error {
	if len(got) != len(want) {
		return fmt.Errorf("%s: %d attributes, want %d (%v)", where, len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Key != w.Key {
			return fmt.Errorf("%s: attribute %d key %q, want %q", where, i, got[i].Key, w.Key)
		}
		if wv := wantValue(w.Value); !sameValue(got[i].Value, wv) {
			return fmt.Errorf("%s: attribute %q = %+v, want %+v", where, w.Key, got[i].Value, wv)
		}
	}
	return nil
}

// wantIDError mirrors the id rules of the OTLP specification.
func wantIDError(s *tracepb.Span) string {
	switch {
	case len(s.TraceId) != 16:
		return "trace id must be 16 bytes"
	case len(s.SpanId) != 8:
		return "span id must be 8 bytes"
	case len(s.ParentSpanId) != 0 && len(s.ParentSpanId) != 8:
		return "parent span id must be empty or 8 bytes"
	}
	return ""
}

func checkSpan(where string, g *Span, w *tracepb.Span) error {
	if f, why := g.Fault(); f != FaultNone {
		return fmt.Errorf("%s: flagged %d (%s), want not flagged", where, f, why)
	}
	switch {
	case g.Name != w.Name:
		return fmt.Errorf("%s: name %q, want %q", where, g.Name, w.Name)
	case g.TraceState != w.TraceState:
		return fmt.Errorf("%s: trace_state %q, want %q", where, g.TraceState, w.TraceState)
	case g.Kind != SpanKind(w.Kind):
		return fmt.Errorf("%s: kind %d, want %d", where, g.Kind, w.Kind)
	case g.StatusCode != StatusCode(w.GetStatus().GetCode()):
		return fmt.Errorf("%s: status code %d, want %d", where, g.StatusCode, w.GetStatus().GetCode())
	case g.StatusMsg != w.GetStatus().GetMessage():
		return fmt.Errorf("%s: status message %q, want %q", where, g.StatusMsg, w.GetStatus().GetMessage())
	case g.Start != w.StartTimeUnixNano || g.End != w.EndTimeUnixNano:
		return fmt.Errorf("%s: times %d..%d, want %d..%d", where, g.Start, g.End, w.StartTimeUnixNano, w.EndTimeUnixNano)
	case g.HasParent() != (len(w.ParentSpanId) > 0):
		return fmt.Errorf("%s: HasParent %v with parent id %x", where, g.HasParent(), w.ParentSpanId)
	case g.IDError() != wantIDError(w):
		return fmt.Errorf("%s: IDError %q, want %q (ids %x/%x/%x)", where, g.IDError(), wantIDError(w), w.TraceId, w.SpanId, w.ParentSpanId)
	}
	// The fixed-size ids are meaningful only when their length is right
	// (otherwise IDError tells the caller to drop the span).
	if len(w.TraceId) == 16 {
		if !bytes.Equal(g.TraceID[:], w.TraceId) {
			return fmt.Errorf("%s: trace id %x, want %x", where, g.TraceID, w.TraceId)
		}
		if g.TraceIDHex() != hex.EncodeToString(w.TraceId) {
			return fmt.Errorf("%s: TraceIDHex %s", where, g.TraceIDHex())
		}
	}
	if len(w.SpanId) == 8 && !bytes.Equal(g.SpanID[:], w.SpanId) {
		return fmt.Errorf("%s: span id %x, want %x", where, g.SpanID, w.SpanId)
	}
	if len(w.ParentSpanId) == 8 && !bytes.Equal(g.ParentSpanID[:], w.ParentSpanId) {
		return fmt.Errorf("%s: parent span id %x, want %x", where, g.ParentSpanID, w.ParentSpanId)
	}
	return checkAttrs(where, g.Attributes, w.Attributes)
}

// checkBatch compares b with req, the generated decoding of the same bytes,
// where no span may be flagged. sizes, when not nil, holds the expected
// Size of every span in order; canonicalSizes(req) gives them for a request
// encoded by proto.Marshal.
func checkBatch(b *Batch, req *coltracepb.ExportTraceServiceRequest, sizes []int) error {
	return checkFlagged(b, req, sizes, nil)
}

// checkFlagged is checkBatch where faults, when not nil, holds the fault
// every span must be flagged with, in order. A flagged span is compared
// only by its fault and its Size: the receiver drops it, and its text may
// be what the reference had to replace (checkConsistent sees that what
// is left of it is UTF-8).
func checkFlagged(b *Batch, req *coltracepb.ExportTraceServiceRequest, sizes []int, faults []Fault) error {
	if len(b.Resources) != len(req.ResourceSpans) {
		return fmt.Errorf("%d resources, want %d", len(b.Resources), len(req.ResourceSpans))
	}
	total := 0
	for ri, rs := range req.ResourceSpans {
		got := &b.Resources[ri]
		if err := checkAttrs("resource", got.Attributes, rs.GetResource().GetAttributes()); err != nil {
			return fmt.Errorf("resource %d: %w", ri, err)
		}
		var want []*tracepb.Span
		for _, ss := range rs.ScopeSpans {
			want = append(want, ss.Spans...)
		}
		if len(got.Spans) != len(want) {
			return fmt.Errorf("resource %d: %d spans, want %d", ri, len(got.Spans), len(want))
		}
		for si, w := range want {
			// The context is formatted only on failure: the fuzzer runs this
			// for every input.
			if faults != nil && faults[total+si] != FaultNone {
				g := &got.Spans[si]
				if f, why := g.Fault(); f != faults[total+si] || why == "" {
					return fmt.Errorf("resource %d, span %d: flagged %d (%q), want flagged %d", ri, si, f, why, faults[total+si])
				}
			} else if err := checkSpan("span", &got.Spans[si], w); err != nil {
				return fmt.Errorf("resource %d, span %d: %w", ri, si, err)
			}
			if sizes != nil && got.Spans[si].Size != sizes[total+si] {
				return fmt.Errorf("resource %d span %d: Size %d, want %d", ri, si, got.Spans[si].Size, sizes[total+si])
			}
		}
		total += len(want)
	}
	if b.SpanCount != total {
		return fmt.Errorf("SpanCount %d, want %d", b.SpanCount, total)
	}
	return nil
}

// canonicalSizes returns the encoded size of every span of req, in batch
// order, as proto.Marshal writes them.
func canonicalSizes(req *coltracepb.ExportTraceServiceRequest) []int {
	var out []int
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				out = append(out, proto.Size(s))
			}
		}
	}
	return out
}

// checkConsistent checks what must hold for any batch, whatever the input:
// counts agree, slices do not overlap their neighbours, text is UTF-8.
func checkConsistent(b *Batch) error {
	n := 0
	for ri := range b.Resources {
		rs := &b.Resources[ri]
		n += len(rs.Spans)
		for _, a := range rs.Attributes {
			if !utf8.ValidString(a.Key) || !utf8.ValidString(a.Value.Str) {
				return fmt.Errorf("resource %d: invalid UTF-8 in attribute %q", ri, a.Key)
			}
		}
		for si := range rs.Spans {
			s := &rs.Spans[si]
			if !utf8.ValidString(s.Name) || !utf8.ValidString(s.TraceState) || !utf8.ValidString(s.StatusMsg) {
				return fmt.Errorf("resource %d span %d: invalid UTF-8", ri, si)
			}
			for _, a := range s.Attributes {
				if !utf8.ValidString(a.Key) || !utf8.ValidString(a.Value.Str) {
					return fmt.Errorf("resource %d span %d: invalid UTF-8 in attribute %q", ri, si, a.Key)
				}
			}
			if s.Size < 0 {
				return fmt.Errorf("resource %d span %d: negative size", ri, si)
			}
			if cap(s.Attributes) != len(s.Attributes) {
				// A span's attributes must not be appendable into the
				// next span's.
				return fmt.Errorf("resource %d span %d: attribute slice not capped", ri, si)
			}
		}
	}
	if n != b.SpanCount {
		return fmt.Errorf("SpanCount %d, but resources hold %d spans", b.SpanCount, n)
	}
	return nil
}

// --- the rule for flagged spans ---

// The generated decoder refuses a whole request when one of its strings
// is not UTF-8; DecodeProto flags the span instead (Fault), or every span
// of the resource. referenceDecode states the rule and leaves the decoding
// to proto.Unmarshal:
//
//   - a span is flagged FaultUTF8 when one of the strings the processors
//     read is not UTF-8: its name, trace_state or status message, or the
//     key or string value of one of its attributes;
//   - every span of a resource is, when the key or string value of one of
//     the resource's attributes is not, and the resource's attributes are
//     dropped;
//   - any other string that is not UTF-8 (scope, events, links, arrays)
//     changes nothing: the decoder never reads it.
//
// The strings that are not UTF-8 are replaced by as many '?' (so sizes
// stay), the dropped resources removed, and proto.Unmarshal decodes the
// rest; it fails only for what DecodeProto may not notice either (bad
// framing inside fields it skips) or must refuse.
func referenceDecode(data []byte) (*coltracepb.ExportTraceServiceRequest, []Fault, error) {
	var faults []Fault
	md := (&coltracepb.ExportTraceServiceRequest{}).ProtoReflect().Descriptor()
	clean, _, err := sanitizeUTF8(md, data, true, &faults)
	if err != nil {
		return nil, nil, err
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(clean, &req); err != nil {
		return nil, nil, err
	}
	return &req, faults, nil
}

// readFields are the message fields that lead to strings the processors
// read, and those strings.
var readFields = map[protoreflect.FullName]bool{
	"opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest.resource_spans": true,
	"opentelemetry.proto.trace.v1.ResourceSpans.resource":                             true,
	"opentelemetry.proto.trace.v1.ResourceSpans.scope_spans":                          true,
	"opentelemetry.proto.resource.v1.Resource.attributes":                             true,
	"opentelemetry.proto.trace.v1.ScopeSpans.spans":                                   true,
	"opentelemetry.proto.trace.v1.Span.attributes":                                    true,
	"opentelemetry.proto.trace.v1.Span.status":                                        true,
	"opentelemetry.proto.common.v1.KeyValue.value":                                    true,

	"opentelemetry.proto.trace.v1.Span.name":              true,
	"opentelemetry.proto.trace.v1.Span.trace_state":       true,
	"opentelemetry.proto.trace.v1.Status.message":         true,
	"opentelemetry.proto.common.v1.KeyValue.key":          true,
	"opentelemetry.proto.common.v1.AnyValue.string_value": true,
}

// sanitizeUTF8 rewrites the message data of type md by the rule above,
// appending the fault of every span it meets to faults. read says whether
// the processors read the message; bad whether one of the strings they
// read in it is not UTF-8.
func sanitizeUTF8(md protoreflect.MessageDescriptor, data []byte, read bool, faults *[]Fault) (out []byte, bad bool, err error) {
	var resources []byte // a ResourceSpans' resource fields, kept for last
	resourceBad := false
	firstSpan := len(*faults)
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return nil, false, protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, data[n:])
		if m < 0 {
			return nil, false, protowire.ParseError(m)
		}
		whole := data[:n+m]
		data = data[n+m:]
		fd := md.Fields().ByNumber(num)
		if fd == nil || typ != protowire.BytesType || (fd.Kind() != protoreflect.StringKind && fd.Kind() != protoreflect.MessageKind) {
			out = append(out, whole...)
			continue
		}
		v, _ := protowire.ConsumeBytes(whole[n:])
		onPath := read && readFields[fd.FullName()]
		if fd.Kind() == protoreflect.StringKind {
			if !utf8.Valid(v) {
				bad = bad || onPath
				v = bytes.Repeat([]byte("?"), len(v))
			}
			out = appendMsg(out, num, v)
			continue
		}
		sub, subBad, err := sanitizeUTF8(fd.Message(), v, onPath, faults)
		if err != nil {
			return nil, false, err
		}
		switch fd.FullName() {
		case "opentelemetry.proto.trace.v1.ScopeSpans.spans":
			f := FaultNone
			if subBad {
				f = FaultUTF8
			}
			*faults = append(*faults, f)
			out = appendMsg(out, num, sub)
		case "opentelemetry.proto.trace.v1.ResourceSpans.resource":
			resourceBad = resourceBad || subBad
			resources = appendMsg(resources, num, sub)
		default:
			bad = bad || subBad
			out = appendMsg(out, num, sub)
		}
	}
	if resourceBad {
		for i := firstSpan; i < len(*faults); i++ {
			(*faults)[i] = FaultUTF8
		}
	} else {
		out = append(out, resources...)
	}
	return out, bad, nil
}

// invalidMarker, in a test request, is replaced by invalidText (as long,
// not UTF-8) once the request is encoded: proto.Marshal refuses to write
// what the decoder must be tested with.
const invalidMarker, invalidText = "~INVALID~", "in\xc3(valid"

func corrupt(data []byte) []byte {
	return bytes.ReplaceAll(data, []byte(invalidMarker), []byte(invalidText))
}

// jsonSpanFaults reads an OTLP/JSON request with encoding/json and says,
// for every span in order, which faults of the OTLP/JSON rules it breaks:
// an id (of the span or of a link) that is not hex, a kind or status code
// name that the enum does not have.
func jsonSpanFaults(doc []byte) ([][]Fault, error) {
	var root map[string]any
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	if err := dec.Decode(&root); err != nil {
		return nil, err
	}
	notHex := func(m map[string]any, camel, snake string) bool {
		v, _ := both(m, camel, snake)
		s, ok := v.(string)
		_, err := hex.DecodeString(s)
		return ok && err != nil
	}
	unknownName := func(v any, names map[string]int32) bool {
		s, ok := v.(string)
		_, known := names[s]
		return ok && !known
	}
	var out [][]Fault
	rss, _ := both(root, "resourceSpans", "resource_spans")
	for _, rs := range objects(rss) {
		sss, _ := both(rs, "scopeSpans", "scope_spans")
		for _, ss := range objects(sss) {
			for _, span := range objects(ss["spans"]) {
				var faults []Fault
				ids := notHex(span, "traceId", "trace_id") || notHex(span, "spanId", "span_id") || notHex(span, "parentSpanId", "parent_span_id")
				for _, link := range objects(span["links"]) {
					ids = ids || notHex(link, "traceId", "trace_id") || notHex(link, "spanId", "span_id")
				}
				if ids {
					faults = append(faults, FaultID)
				}
				status, _ := span["status"].(map[string]any)
				if unknownName(span["kind"], tracepb.Span_SpanKind_value) || unknownName(status["code"], tracepb.Status_StatusCode_value) {
					faults = append(faults, FaultEnum)
				}
				out = append(out, faults)
			}
		}
	}
	return out, nil
}

// --- hand-made wire encodings ---

func appendMsg(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendFixed64(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// reverseFields re-encodes a message with its top-level fields in reverse
// order: legal protobuf that no marshaller writes. The meaning changes only
// where the order matters (repeated fields, the last of duplicates), and the
// oracle sees the same bytes.
func reverseFields(msg []byte) []byte {
	var fields [][]byte
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			panic("bad tag")
		}
		m := protowire.ConsumeFieldValue(num, typ, msg[n:])
		if m < 0 {
			panic("bad field")
		}
		fields = append(fields, msg[:n+m])
		msg = msg[n+m:]
	}
	var out []byte
	for i := len(fields) - 1; i >= 0; i-- {
		out = append(out, fields[i]...)
	}
	return out
}

// wireLayout says how encodeWith lays out a request.
type wireLayout struct {
	reverseSpans      bool // each span's fields in reverse order
	reverseScopes     bool // scope and schema_url after the spans
	resourceLast      bool // the resource field after scope_spans
	splitResource     bool // one resource field per attribute
	unknownEverywhere bool // unknown fields of every wire type at every level
}

// unknownFields is a field of each wire type under numbers no OTLP message
// of these levels uses, a group with a nested field included.
func unknownFields() []byte {
	var b []byte
	b = appendVarint(b, 1000, 1<<40)
	b = appendMsg(b, 1001, []byte("\x00\xffnot utf-8 but unknown, so fine"))
	b = appendFixed64(b, 1002, 42)
	b = protowire.AppendTag(b, 1003, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 7)
	b = protowire.AppendTag(b, 1004, protowire.StartGroupType)
	b = appendVarint(b, 1, 5)
	b = appendMsg(b, 2, []byte("inside a group"))
	b = protowire.AppendTag(b, 1004, protowire.EndGroupType)
	return b
}

// encodeWith encodes req with the given layout and returns the bytes and
// the encoded size of every span.
func encodeWith(req *coltracepb.ExportTraceServiceRequest, l wireLayout) ([]byte, []int) {
	var out []byte
	var sizes []int
	if l.unknownEverywhere {
		out = append(out, unknownFields()...)
	}
	for _, rs := range req.ResourceSpans {
		var scopes []byte
		for _, ss := range rs.ScopeSpans {
			var body []byte
			first := len(sizes)
			if ss.Scope != nil {
				body = appendMsg(body, 1, mustMarshal(ss.Scope))
			}
			for _, s := range ss.Spans {
				enc := mustMarshal(s)
				if l.unknownEverywhere {
					enc = append(enc, unknownFields()...)
				}
				if l.reverseSpans {
					enc = reverseFields(enc)
				}
				sizes = append(sizes, len(enc))
				body = appendMsg(body, 2, enc)
			}
			if l.reverseScopes {
				body = reverseFields(body)
				slices.Reverse(sizes[first:]) // the spans now come in reverse order
			}
			scopes = appendMsg(scopes, 2, body)
		}
		var res []byte
		if rs.Resource != nil {
			if l.splitResource {
				for _, a := range rs.Resource.Attributes {
					res = appendMsg(res, 1, mustMarshal(&resourcepb.Resource{Attributes: []*commonpb.KeyValue{a}}))
				}
			} else {
				res = appendMsg(res, 1, mustMarshal(rs.Resource))
			}
		}
		var body []byte
		if l.resourceLast {
			body = append(append(body, scopes...), res...)
		} else {
			body = append(append(body, res...), scopes...)
		}
		if l.unknownEverywhere {
			body = append(body, unknownFields()...)
		}
		out = appendMsg(out, 1, body)
	}
	return out, sizes
}
