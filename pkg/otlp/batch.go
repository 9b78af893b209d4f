// Package otlp turns OTLP trace export requests (protobuf or JSON) into a
// flat Batch that the processors read.
//
// The protobuf path scans the wire format with protowire and reads only the
// fields the processors use; strings point into the request buffer instead of
// being copied, and a Batch is reused between requests, so decoding allocates
// nothing per span once the pool is warm. The generated types of
// go.opentelemetry.io/proto/otlp stay the reference: the tests and the fuzzer
// compare both decoders on the same input.
package otlp

import (
	"encoding/hex"
	"strconv"
)

// SpanKind mirrors opentelemetry.proto.trace.v1.Span.SpanKind.
type SpanKind int32

// The span kinds, with the wire numbers of the OTLP specification.
const (
	SpanKindUnspecified SpanKind = 0
	SpanKindInternal    SpanKind = 1
	SpanKindServer      SpanKind = 2
	SpanKindClient      SpanKind = 3
	SpanKindProducer    SpanKind = 4
	SpanKindConsumer    SpanKind = 5
)

var spanKindNames = [...]string{
	"SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER",
	"SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER",
}

// String returns the proto enum name, the label value Tempo writes.
func (k SpanKind) String() string {
	if k < 0 || int(k) >= len(spanKindNames) {
		return spanKindNames[0]
	}
	return spanKindNames[k]
}

// StatusCode mirrors opentelemetry.proto.trace.v1.Status.StatusCode.
type StatusCode int32

// The status codes of the OTLP specification.
const (
	StatusUnset StatusCode = 0
	StatusOK    StatusCode = 1
	StatusError StatusCode = 2
)

var statusNames = [...]string{"STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"}

// String returns the proto enum name, the label value Tempo writes.
func (c StatusCode) String() string {
	if c < 0 || int(c) >= len(statusNames) {
		return statusNames[0]
	}
	return statusNames[c]
}

// ValueType says which field of an AnyValue is set.
type ValueType uint8

// The AnyValue variants. Arrays, key-value lists and bytes are kept only as
// "present": no processor turns them into label values.
const (
	ValueEmpty ValueType = iota
	ValueString
	ValueBool
	ValueInt
	ValueDouble
	ValueOther
)

// Value is an attribute value. Str also holds string values; Int holds
// ints and bools (0/1); Double holds doubles.
type Value struct {
	Type   ValueType
	Str    string
	Int    int64
	Double float64
}

// KeyValue is one attribute.
type KeyValue struct {
	Key   string
	Value Value
}

// Span holds the span fields the processors use.
type Span struct {
	TraceID      [16]byte
	SpanID       [8]byte
	ParentSpanID [8]byte
	Name         string
	TraceState   string
	Kind         SpanKind
	StatusCode   StatusCode
	StatusMsg    string
	Start, End   uint64 // unix nanoseconds
	Attributes   []KeyValue
	// Size is the encoded size of the span message in bytes.
	Size int

	traceIDLen, spanIDLen, parentLen uint8
	fault                            spanFault
	attrStart, attrEnd               int32
	// rawOff is where the span's message starts in the request, for
	// AppendPart; it fits what padding left of the struct.
	rawOff int32
}

// Fault says why a span that decoded must still be refused. Such a span is
// kept in the batch, flagged, so that the receiver refuses it alone with
// partial success while the request's other spans go through. Text that
// is not UTF-8 is not kept: the string stays empty, and the attributes of
// the span (or of the resource) it was in are dropped.
type Fault uint8

// The faults. Only the framing of a request (protobuf wire format, JSON
// syntax and value types) refuses it whole.
const (
	FaultNone Fault = iota
	// FaultUTF8: a string the processors read (name, trace_state, status
	// message, an attribute key or string value of the span or of its
	// resource) is not UTF-8.
	FaultUTF8
	// FaultID: an OTLP/JSON trace or span id is not hex.
	FaultID
	// FaultEnum: an OTLP/JSON enum field holds a name the enum does not
	// have.
	FaultEnum
)

// spanFault says which field was at fault, for the message a sender sees;
// one byte, so that Span does not grow.
type spanFault uint8

const (
	noFault spanFault = iota
	faultName
	faultTraceState
	faultStatusMsg
	faultAttrKey
	faultAttrValue
	faultResourceKey
	faultResourceValue
	faultTraceIDHex
	faultSpanIDHex
	faultParentIDHex
	faultLinkIDHex
	faultKindName
	faultStatusCodeName
)

var spanFaults = [...]struct {
	fault Fault
	why   string
}{
	noFault:             {FaultNone, ""},
	faultName:           {FaultUTF8, "span name is not valid UTF-8"},
	faultTraceState:     {FaultUTF8, "trace_state is not valid UTF-8"},
	faultStatusMsg:      {FaultUTF8, "status message is not valid UTF-8"},
	faultAttrKey:        {FaultUTF8, "a span attribute key is not valid UTF-8"},
	faultAttrValue:      {FaultUTF8, "a span attribute string value is not valid UTF-8"},
	faultResourceKey:    {FaultUTF8, "a resource attribute key is not valid UTF-8"},
	faultResourceValue:  {FaultUTF8, "a resource attribute string value is not valid UTF-8"},
	faultTraceIDHex:     {FaultID, "traceId is not a hex string"},
	faultSpanIDHex:      {FaultID, "spanId is not a hex string"},
	faultParentIDHex:    {FaultID, "parentSpanId is not a hex string"},
	faultLinkIDHex:      {FaultID, "a link's traceId or spanId is not a hex string"},
	faultKindName:       {FaultEnum, "kind is not a SpanKind name (OTLP/JSON wants the integer value)"},
	faultStatusCodeName: {FaultEnum, "status code is not a StatusCode name (OTLP/JSON wants the integer value)"},
}

// Fault returns why the span must be refused and what was wrong, or
// FaultNone. IDError is a separate check, which a span may fail as well.
func (s *Span) Fault() (Fault, string) {
	f := spanFaults[s.fault]
	return f.fault, f.why
}

// HasParent reports whether the span names a parent span.
func (s *Span) HasParent() bool { return s.parentLen != 0 }

// IDError returns a reason when the span's ids do not have the lengths the
// OTLP specification requires (16-byte trace id, 8-byte span ids), else "".
func (s *Span) IDError() string {
	switch {
	case s.traceIDLen != 16:
		return "trace id must be 16 bytes"
	case s.spanIDLen != 8:
		return "span id must be 8 bytes"
	case s.parentLen != 0 && s.parentLen != 8:
		return "parent span id must be empty or 8 bytes"
	}
	return ""
}

// TraceIDHex returns the trace id as 32 lowercase hex digits.
func (s *Span) TraceIDHex() string { return hex.EncodeToString(s.TraceID[:]) }

// ResourceSpans is the spans of one resource, all scopes merged.
type ResourceSpans struct {
	Attributes []KeyValue
	Spans      []Span

	attrStart, attrEnd int32
	spanStart, spanEnd int32
	// rawStart and rawEnd delimit the ResourceSpans message in the
	// request, for AppendPart.
	rawStart, rawEnd int32
}

// Batch is one decoded export request. Its strings may point into the
// request buffer: a Batch is valid until Release, and anything kept longer
// (label values of a new series, say) must be copied.
type Batch struct {
	Resources []ResourceSpans
	// SpanCount is the number of spans in Resources.
	SpanCount int

	spans []Span
	attrs []KeyValue
	raw   []byte
	// spare is a second pooled buffer, which DecodeJSON writes the binary
	// request into while raw still holds the JSON.
	spare []byte
	// jsonFaults are the faults the JSON transcoder found, by span
	// ordinal, for DecodeProto to flag; nextJSONFault is the first not
	// yet applied.
	jsonFaults    []jsonFault
	nextJSONFault int

	budget   Budget
	reserved int64
	// refused: the budget had no room for b, so its memory goes back to
	// the runtime on Release, not to the pool, where no budget counts it.
	refused bool
}

// Lookup returns the value of key among attrs.
func Lookup(attrs []KeyValue, key string) (Value, bool) {
	for i := range attrs {
		if attrs[i].Key == key {
			return attrs[i].Value, true
		}
	}
	return Value{}, false
}

// Filter keeps the spans for which keep returns true, in place, and updates
// SpanCount. It returns how many spans it removed.
func (b *Batch) Filter(keep func(rs *ResourceSpans, s *Span) bool) int {
	removed := 0
	for ri := range b.Resources {
		rs := &b.Resources[ri]
		n := 0
		for i := range rs.Spans {
			if keep(rs, &rs.Spans[i]) {
				rs.Spans[n] = rs.Spans[i]
				n++
			}
		}
		removed += len(rs.Spans) - n
		rs.Spans = rs.Spans[:n]
	}
	b.SpanCount -= removed
	return removed
}

func (b *Batch) reset() {
	b.Resources = b.Resources[:0]
	b.spans = b.spans[:0]
	b.attrs = b.attrs[:0]
	b.raw = b.raw[:0]
	b.jsonFaults, b.nextJSONFault = b.jsonFaults[:0], 0
	b.SpanCount = 0
}

// jsonFault is a fault of the span'th span of a JSON request.
type jsonFault struct {
	span  int
	fault spanFault
}

// takeJSONFault returns the transcoder's fault for the span'th span;
// spans are asked for in order.
func (b *Batch) takeJSONFault(span int) spanFault {
	if b.nextJSONFault < len(b.jsonFaults) && b.jsonFaults[b.nextJSONFault].span == span {
		b.nextJSONFault++
		return b.jsonFaults[b.nextJSONFault-1].fault
	}
	return noFault
}

// AppendText appends the value as label text: strings as they are, ints in
// decimal, doubles in the shortest form, bools as true/false, anything else
// nothing. ok is false when there is no text.
func (v Value) AppendText(dst []byte) (out []byte, ok bool) {
	switch v.Type {
	case ValueString:
		return append(dst, v.Str...), true
	case ValueInt:
		return strconv.AppendInt(dst, v.Int, 10), true
	case ValueDouble:
		return strconv.AppendFloat(dst, v.Double, 'f', -1, 64), true
	case ValueBool:
		return strconv.AppendBool(dst, v.Int != 0), true
	}
	return dst, false
}

// Text returns the value as label text (see AppendText). It allocates only
// for non-string values.
func (v Value) Text() string {
	if v.Type == ValueString {
		return v.Str
	}
	b, _ := v.AppendText(nil)
	return string(b)
}
