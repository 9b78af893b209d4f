package otlp

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// DecodeJSON decodes an ExportTraceServiceRequest in the OTLP/JSON encoding
// into b, which must be empty.
//
// The JSON is transcoded token by token into the protobuf wire format, in
// the batch's spare buffer, then goes through the same decoder as binary
// requests. No generated message tree is built: earlier this path went
// through map[string]any, json.Marshal, protojson and proto.Marshal and
// allocated 26–45 times the body (TestDecodeJSONMemory has the figures). The field table comes from the generated types'
// descriptors, and the accepted forms are protojson's with
// DiscardUnknown: lowerCamelCase or snake_case names, enums by name or
// number, 64-bit integers as numbers or strings, "NaN" and "Infinity",
// base64 bytes; OTLP/JSON's one difference, hex trace and span ids, is the
// hexID fields.
//
// Where protojson would refuse the whole request for one span's value, the
// span is flagged instead (see Fault): an id that is not hex, an enum name
// the enum does not have, text that is not UTF-8 where DecodeProto flags
// it (encoding/json would hide that behind U+FFFD).
//
// With a budget (Charge), the binary buffer is charged at the size of the
// body before decoding starts (the wire form is smaller than the JSON
// one), together with jsonScratchFactor times the body for the JSON
// decoder's own buffer and tokens, which is given back when decoding ends.
func (b *Batch) DecodeJSON(data []byte) error {
	scratch := int64(len(data)) * jsonScratchFactor
	if err := b.reserve(scratch); err != nil {
		return err
	}
	defer b.free(scratch)
	out, err := b.growBytes(b.spare[:0], len(data))
	if err != nil {
		return err
	}
	b.spare = out
	t := transcoder{b: b, data: data, dec: json.NewDecoder(bytes.NewReader(data)), out: out}
	t.dec.UseNumber()
	err = t.request()
	// Keep the larger buffer for the next request either way.
	b.spare = t.out[:0]
	if err != nil {
		b.jsonFaults = b.jsonFaults[:0]
		return err
	}
	b.raw, b.spare = t.out, b.raw[:0]
	return b.DecodeProto(b.raw)
}

// jsonScratchFactor is, per byte of body, what DecodeJSON holds live
// besides the binary buffer and the decoded batch: the JSON decoder's
// buffer, at most twice the largest token, and that token's copy. Each
// token's allocation is garbage at once; TestDecodeJSONMemory logs the
// total.
const jsonScratchFactor = 3

// jsonMaxDepth is protojson's default recursion limit: AnyValue nests.
const jsonMaxDepth = 10000

// jsonField is one field of a message, as the transcoder needs it.
type jsonField struct {
	num   protowire.Number
	kind  protoreflect.Kind
	index int // bit of the field in a message's seen set
	oneof int // bit of its oneof, or -1
	list  bool
	// presence: a zero value is still written (oneof members), as
	// proto.Marshal does.
	presence bool
	hexID    bool
	// fault flags the span when the value is not hex (hexID) or not a
	// name of the enum; noFault refuses the request instead.
	fault spanFault
	enum  protoreflect.EnumValueDescriptors
	msg   *jsonMessage
}

// jsonMessage maps both JSON spellings of each field name to the field.
type jsonMessage struct {
	name   protoreflect.FullName
	fields map[string]*jsonField
	// span: the message is a Span, the unit that a fault refuses.
	span bool
}

var (
	jsonSchemaOnce sync.Once
	jsonSchema     *jsonMessage
)

func requestSchema() *jsonMessage {
	jsonSchemaOnce.Do(func() {
		jsonSchema = buildJSONMessage((&coltracepb.ExportTraceServiceRequest{}).ProtoReflect().Descriptor(), map[protoreflect.FullName]*jsonMessage{})
	})
	return jsonSchema
}

func buildJSONMessage(md protoreflect.MessageDescriptor, done map[protoreflect.FullName]*jsonMessage) *jsonMessage {
	if m, ok := done[md.FullName()]; ok {
		return m
	}
	m := &jsonMessage{name: md.FullName(), fields: map[string]*jsonField{}, span: md.FullName() == spanMessage}
	done[md.FullName()] = m
	for i := 0; i < md.Fields().Len(); i++ {
		fd := md.Fields().Get(i)
		f := &jsonField{
			num: fd.Number(), kind: fd.Kind(), index: i, oneof: -1,
			list:     fd.IsList(),
			presence: fd.ContainingOneof() != nil,
		}
		if o := fd.ContainingOneof(); o != nil {
			f.oneof = o.Index()
		}
		f.fault = spanFaultFields[fd.FullName()]
		// OTLP/JSON writes trace and span ids as hex; every other bytes
		// field is base64.
		f.hexID = fd.Kind() == protoreflect.BytesKind && f.fault != noFault
		switch fd.Kind() {
		case protoreflect.EnumKind:
			f.enum = fd.Enum().Values()
		case protoreflect.MessageKind, protoreflect.GroupKind:
			f.msg = buildJSONMessage(fd.Message(), done)
		}
		m.fields[fd.JSONName()] = f
		m.fields[string(fd.Name())] = f
	}
	return m
}

const spanMessage = "opentelemetry.proto.trace.v1.Span"

// spanFaultFields are the fields whose bad values refuse their span, not the
// request: the OTLP/JSON encoding's own rules (hex ids, enums as
// integers) are about one value, and the JSON around it is sound, so the
// sender's other spans need not be lost. Every one of them lies inside a
// Span.
var spanFaultFields = map[protoreflect.FullName]spanFault{
	spanMessage + ".trace_id":                  faultTraceIDHex,
	spanMessage + ".span_id":                   faultSpanIDHex,
	spanMessage + ".parent_span_id":            faultParentIDHex,
	spanMessage + ".Link.trace_id":             faultLinkIDHex,
	spanMessage + ".Link.span_id":              faultLinkIDHex,
	spanMessage + ".kind":                      faultKindName,
	"opentelemetry.proto.trace.v1.Status.code": faultStatusCodeName,
}

// transcoder writes the protobuf form of a JSON request into out, charging
// the batch's budget as out grows.
type transcoder struct {
	b     *Batch
	data  []byte // the JSON, which dec reads
	dec   *json.Decoder
	out   []byte
	depth int
	// tokStart is the offset in data where the last token's text begins,
	// or the separators before it.
	tokStart int64
	// spans counts the Span messages written; fault is the first fault of
	// the one being written.
	spans int
	fault spanFault
}

func (t *transcoder) request() error {
	tok, err := t.dec.Token()
	if err != nil {
		return malformed("invalid JSON: %v", err)
	}
	if tok != json.Delim('{') {
		return malformed("the request must be a JSON object")
	}
	if err := t.message(requestSchema()); err != nil {
		return err
	}
	if _, err := t.dec.Token(); err != io.EOF {
		return malformed("invalid JSON: data after the top-level value")
	}
	return nil
}

func (t *transcoder) token() (json.Token, error) {
	t.tokStart = t.dec.InputOffset()
	tok, err := t.dec.Token()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		var over *OverBudgetError
		if errors.As(err, &over) {
			return nil, err
		}
		return nil, malformed("invalid JSON: %v", err)
	}
	return tok, nil
}

// need makes room for n more bytes in out, doubling it when it grows.
func (t *transcoder) need(n int) error {
	if cap(t.out)-len(t.out) >= n {
		return nil
	}
	out, err := t.b.growBytes(t.out, max(n, cap(t.out)))
	if err != nil {
		return err
	}
	t.out = out
	return nil
}

// message transcodes the members of an object whose '{' was read, up to
// and including its '}'.
func (t *transcoder) message(m *jsonMessage) error {
	if t.depth++; t.depth > jsonMaxDepth {
		return malformed("JSON nested deeper than %d", jsonMaxDepth)
	}
	defer func() { t.depth-- }()
	var seen, oneofs uint64
	for t.dec.More() {
		tok, err := t.token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		f := m.fields[key]
		if f == nil {
			if err := t.skip(); err != nil {
				return err
			}
			continue
		}
		if seen&(1<<f.index) != 0 {
			return malformed("%s: duplicate field %q", m.name, key)
		}
		seen |= 1 << f.index
		if f.oneof >= 0 {
			if oneofs&(1<<f.oneof) != 0 {
				return malformed("%s: more than one field of a oneof is set (%q)", m.name, key)
			}
			oneofs |= 1 << f.oneof
		}
		if err := t.field(f, key); err != nil {
			return err
		}
	}
	_, err := t.token() // '}'
	return err
}

// skip reads one value of an unknown field.
func (t *transcoder) skip() error {
	depth := 0
	for {
		tok, err := t.token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

func (t *transcoder) field(f *jsonField, key string) error {
	tok, err := t.token()
	if err != nil || tok == nil {
		return err // null: the field is not set
	}
	if !f.list {
		return t.value(f, key, tok)
	}
	if tok != json.Delim('[') {
		return malformed("%s must be a list", key)
	}
	for t.dec.More() {
		if tok, err = t.token(); err != nil {
			return err
		}
		if tok == nil {
			return malformed("%s: null in a list", key)
		}
		if err := t.value(f, key, tok); err != nil {
			return err
		}
	}
	_, err = t.token() // ']'
	return err
}

func (t *transcoder) value(f *jsonField, key string, tok json.Token) error {
	if err := t.need(2 * binary.MaxVarintLen64); err != nil {
		return err
	}
	switch f.kind {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if tok != json.Delim('{') {
			return malformed("%s must be an object", key)
		}
		t.out = protowire.AppendTag(t.out, f.num, protowire.BytesType)
		t.out = append(t.out, 0)
		start := len(t.out)
		if f.msg.span {
			t.fault = noFault
		}
		if err := t.message(f.msg); err != nil {
			return err
		}
		if f.msg.span {
			if err := t.endSpan(); err != nil {
				return err
			}
		}
		return t.closeLength(start)
	case protoreflect.StringKind:
		s, ok := tok.(string)
		if !ok {
			return malformed("%s must be a string", key)
		}
		if strings.ContainsRune(s, utf8.RuneError) {
			return t.appendRawString(f)
		}
		return t.appendBytes(f, s)
	case protoreflect.BytesKind:
		s, ok := tok.(string)
		if !ok {
			if f.hexID {
				return malformed("%s must be a hex string", key)
			}
			return malformed("%s must be a base64 string", key)
		}
		return t.appendBytesValue(f, key, s)
	case protoreflect.BoolKind:
		v, ok := tok.(bool)
		if !ok {
			return malformed("%s must be true or false", key)
		}
		if v || f.presence {
			t.out = protowire.AppendTag(t.out, f.num, protowire.VarintType)
			t.out = protowire.AppendVarint(t.out, protowire.EncodeBool(v))
		}
		return nil
	case protoreflect.EnumKind:
		var n int64
		switch v := tok.(type) {
		case string:
			ev := f.enum.ByName(protoreflect.Name(v))
			if ev == nil {
				// protojson with DiscardUnknown reads an unknown name as
				// unset, which would count the span under a kind or
				// status it does not have. OTLP/JSON allows no names at
				// all; known ones are still read, as protojson does.
				if f.fault == noFault {
					return malformed("%s: %q is not a name of %s", key, v, f.enum.Get(0).Parent().FullName())
				}
				t.fault = firstFault(t.fault, f.fault)
				return nil
			}
			n = int64(ev.Number())
		case json.Number:
			var err error
			if n, err = strconv.ParseInt(string(v), 10, 32); err != nil {
				return malformed("%s: %q is not an enum number", key, v)
			}
		default:
			return malformed("%s must be an enum name or number", key)
		}
		return t.appendVarint(f, uint64(n))
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		v, err := jsonFloat(tok, f.kind == protoreflect.FloatKind)
		if err != nil {
			return malformed("%s: %v", key, err)
		}
		if v == 0 && !math.Signbit(v) && !f.presence {
			return nil
		}
		if f.kind == protoreflect.FloatKind {
			t.out = protowire.AppendTag(t.out, f.num, protowire.Fixed32Type)
			t.out = protowire.AppendFixed32(t.out, math.Float32bits(float32(v)))
			return nil
		}
		t.out = protowire.AppendTag(t.out, f.num, protowire.Fixed64Type)
		t.out = protowire.AppendFixed64(t.out, math.Float64bits(v))
		return nil
	}
	return t.integer(f, key, tok)
}

func (t *transcoder) integer(f *jsonField, key string, tok json.Token) error {
	text, err := jsonNumberText(tok)
	if err != nil {
		return malformed("%s: %v", key, err)
	}
	switch f.kind {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		bits := 64
		if f.kind == protoreflect.Int32Kind || f.kind == protoreflect.Sint32Kind || f.kind == protoreflect.Sfixed32Kind {
			bits = 32
		}
		n, err := parseJSONInt(text, bits)
		if err != nil {
			return malformed("%s: %q is not a %d-bit integer", key, text, bits)
		}
		switch f.kind {
		case protoreflect.Sint32Kind, protoreflect.Sint64Kind:
			return t.appendVarint(f, protowire.EncodeZigZag(n))
		case protoreflect.Sfixed32Kind:
			return t.appendFixed(f, uint64(uint32(n)), false)
		case protoreflect.Sfixed64Kind:
			return t.appendFixed(f, uint64(n), true)
		}
		return t.appendVarint(f, uint64(n))
	default: // unsigned
		bits := 64
		if f.kind == protoreflect.Uint32Kind || f.kind == protoreflect.Fixed32Kind {
			bits = 32
		}
		n, err := parseJSONUint(text, bits)
		if err != nil {
			return malformed("%s: %q is not an unsigned %d-bit integer", key, text, bits)
		}
		switch f.kind {
		case protoreflect.Fixed32Kind:
			return t.appendFixed(f, n, false)
		case protoreflect.Fixed64Kind:
			return t.appendFixed(f, n, true)
		}
		return t.appendVarint(f, n)
	}
}

func (t *transcoder) appendVarint(f *jsonField, v uint64) error {
	if v != 0 || f.presence {
		t.out = protowire.AppendTag(t.out, f.num, protowire.VarintType)
		t.out = protowire.AppendVarint(t.out, v)
	}
	return nil
}

func (t *transcoder) appendFixed(f *jsonField, v uint64, wide bool) error {
	switch {
	case v == 0 && !f.presence:
	case wide:
		t.out = protowire.AppendTag(t.out, f.num, protowire.Fixed64Type)
		t.out = protowire.AppendFixed64(t.out, v)
	default:
		t.out = protowire.AppendTag(t.out, f.num, protowire.Fixed32Type)
		t.out = protowire.AppendFixed32(t.out, uint32(v))
	}
	return nil
}

func (t *transcoder) appendBytes(f *jsonField, s string) error {
	if s == "" && !f.presence {
		return nil
	}
	if err := t.need(len(s)); err != nil {
		return err
	}
	t.out = protowire.AppendTag(t.out, f.num, protowire.BytesType)
	t.out = protowire.AppendString(t.out, s)
	return nil
}

func (t *transcoder) appendBytesValue(f *jsonField, key, s string) error {
	if s == "" && !f.presence {
		return nil
	}
	if err := t.need(len(s)); err != nil {
		return err
	}
	tag := len(t.out)
	t.out = protowire.AppendTag(t.out, f.num, protowire.BytesType)
	t.out = append(t.out, 0)
	start := len(t.out)
	var err error
	if f.hexID {
		t.out, err = hex.AppendDecode(t.out, []byte(s))
		if err != nil {
			// The field is left out; the span is refused for it.
			t.out = t.out[:tag]
			t.fault = firstFault(t.fault, f.fault)
			return nil
		}
	} else {
		enc := base64.StdEncoding
		if strings.ContainsAny(s, "-_") {
			enc = base64.URLEncoding
		}
		if len(s)%4 != 0 {
			enc = enc.WithPadding(base64.NoPadding)
		}
		if t.out, err = enc.AppendDecode(t.out, []byte(s)); err != nil {
			return malformed("%s %q is not base64: %v", key, s, err)
		}
	}
	return t.closeLength(start)
}

// endSpan counts the Span just written and records its fault for
// DecodeProto, which flags it.
func (t *transcoder) endSpan() error {
	if t.fault != noFault {
		if len(t.b.jsonFaults) == cap(t.b.jsonFaults) {
			var err error
			if t.b.jsonFaults, err = grow(t.b, t.b.jsonFaults); err != nil {
				return err
			}
		}
		t.b.jsonFaults = append(t.b.jsonFaults, jsonFault{span: t.spans, fault: t.fault})
	}
	t.spans++
	return nil
}

// appendRawString writes the string token just read as it is in the JSON
// text. encoding/json turns invalid UTF-8 and lone surrogate escapes into
// U+FFFD, which would hide that the sender's text is not UTF-8: with the
// original bytes (a lone surrogate as its 3-byte form, which is not UTF-8
// either), DecodeProto refuses the span as it would a binary one. Only
// strings holding U+FFFD come here.
func (t *transcoder) appendRawString(f *jsonField) error {
	end := int(t.dec.InputOffset()) - 1 // the closing quote
	open := int(t.tokStart) + bytes.IndexByte(t.data[t.tokStart:end], '"')
	raw := t.data[open+1 : end]
	// Unescaping only shortens the text.
	if err := t.need(len(raw)); err != nil {
		return err
	}
	t.out = protowire.AppendTag(t.out, f.num, protowire.BytesType)
	t.out = append(t.out, 0)
	start := len(t.out)
	t.out = appendUnescaped(t.out, raw)
	return t.closeLength(start)
}

// appendUnescaped appends the JSON string text raw, which encoding/json
// has already checked, with its escapes decoded and any other byte kept.
func appendUnescaped(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		if raw[i] != '\\' {
			dst = append(dst, raw[i])
			i++
			continue
		}
		c := raw[i+1]
		i += 2
		switch c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(raw[i:])
			i += 4
			if utf16.IsSurrogate(r) && i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
				if pair := utf16.DecodeRune(r, hex4(raw[i+2:])); pair != utf8.RuneError {
					dst = utf8.AppendRune(dst, pair)
					i += 6
					continue
				}
			}
			if utf16.IsSurrogate(r) {
				// utf8.AppendRune would write U+FFFD.
				dst = append(dst, 0xe0|byte(r>>12), 0x80|byte(r>>6)&0x3f, 0x80|byte(r)&0x3f)
				continue
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
	}
	return dst
}

// hex4 reads the four hex digits of a \u escape.
func hex4(p []byte) rune {
	var r rune
	for _, c := range p[:4] {
		r <<= 4
		switch {
		case c >= 'a':
			r |= rune(c-'a') + 10
		case c >= 'A':
			r |= rune(c-'A') + 10
		default:
			r |= rune(c - '0')
		}
	}
	return r
}

// closeLength writes the length of what follows start, where one byte was
// left for it, moving the payload when the length needs more.
func (t *transcoder) closeLength(start int) error {
	n := len(t.out) - start
	k := protowire.SizeVarint(uint64(n))
	if k > 1 {
		if err := t.need(k - 1); err != nil {
			return err
		}
		t.out = t.out[:len(t.out)+k-1]
		copy(t.out[start+k-1:], t.out[start:start+n])
	}
	protowire.AppendVarint(t.out[:start-1], uint64(n))
	return nil
}

// jsonNumberText returns the text of a number, given as a JSON number or
// as a string holding one, as protojson accepts 64-bit integers.
func jsonNumberText(tok json.Token) (string, error) {
	switch v := tok.(type) {
	case json.Number:
		return string(v), nil
	case string:
		if v == "" || strings.TrimSpace(v) != v || !json.Valid([]byte(v)) || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
			return "", fmt.Errorf("%q is not a number", v)
		}
		return v, nil
	}
	return "", errors.New("must be a number")
}

// parseJSONInt also takes exponent and fraction forms of an integer
// ("1e3", "5.0"), as protojson does.
func parseJSONInt(s string, bits int) (int64, error) {
	n, err := strconv.ParseInt(s, 10, bits)
	if err == nil || !strings.ContainsAny(s, ".eE") {
		return n, err
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) >= 1<<53 || math.Abs(f) > math.Ldexp(1, bits-1) {
		return 0, strconv.ErrRange
	}
	return int64(f), nil
}

func parseJSONUint(s string, bits int) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, bits)
	if err == nil || !strings.ContainsAny(s, ".eE") {
		return n, err
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || f < 0 || f >= 1<<53 || f >= math.Ldexp(1, bits) {
		return 0, strconv.ErrRange
	}
	return uint64(f), nil
}

func jsonFloat(tok json.Token, single bool) (float64, error) {
	if s, ok := tok.(string); ok {
		switch s {
		case "NaN":
			return math.NaN(), nil
		case "Infinity":
			return math.Inf(1), nil
		case "-Infinity":
			return math.Inf(-1), nil
		}
	}
	text, err := jsonNumberText(tok)
	if err != nil {
		return 0, err
	}
	bits := 64
	if single {
		bits = 32
	}
	f, err := strconv.ParseFloat(text, bits)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", text)
	}
	return f, nil
}

// both returns the value under the lowerCamelCase or the snake_case name.
func both(m map[string]any, camel, snake string) (any, string) {
	if v, ok := m[camel]; ok {
		return v, camel
	}
	if v, ok := m[snake]; ok {
		return v, snake
	}
	return nil, ""
}

func objects(v any) []map[string]any {
	list, _ := v.([]any)
	out := make([]map[string]any, 0, len(list))
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// rewriteIDs applies conv to every trace and span id of a request.
func rewriteIDs(root map[string]any, conv func(name, id string) (string, error)) error {
	rss, _ := both(root, "resourceSpans", "resource_spans")
	for _, rs := range objects(rss) {
		sss, _ := both(rs, "scopeSpans", "scope_spans")
		for _, ss := range objects(sss) {
			for _, span := range objects(ss["spans"]) {
				if err := rewriteSpanIDs(span, conv); err != nil {
					return err
				}
				for _, link := range objects(span["links"]) {
					if err := rewriteSpanIDs(link, conv); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

func rewriteSpanIDs(m map[string]any, conv func(name, id string) (string, error)) error {
	for _, names := range [][2]string{{"traceId", "trace_id"}, {"spanId", "span_id"}, {"parentSpanId", "parent_span_id"}} {
		v, key := both(m, names[0], names[1])
		if key == "" || v == nil {
			continue
		}
		s, ok := v.(string)
		if !ok {
			return malformed("%s must be a hex string", names[0])
		}
		out, err := conv(names[0], s)
		if err != nil {
			return err
		}
		m[key] = out
	}
	return nil
}

func base64ToHex(name, id string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(id)
	if err != nil {
		return "", fmt.Errorf("%s %q is not base64: %w", name, id, err)
	}
	return hex.EncodeToString(raw), nil
}

// MarshalJSON encodes a request in OTLP/JSON: protobuf JSON with hex ids
// and enums as integers, since OTLP/JSON forbids their names.
func MarshalJSON(req *coltracepb.ExportTraceServiceRequest) ([]byte, error) {
	canonical, err := protojson.MarshalOptions{UseEnumNumbers: true}.Marshal(req)
	if err != nil {
		return nil, err
	}
	var root map[string]any
	dec := json.NewDecoder(bytes.NewReader(canonical))
	dec.UseNumber()
	if err := dec.Decode(&root); err != nil {
		return nil, err
	}
	if err := rewriteIDs(root, base64ToHex); err != nil {
		return nil, err
	}
	return json.Marshal(root)
}

// EncodeResponse encodes an export response in the request's encoding:
// protobuf, or OTLP/JSON when json is true.
func EncodeResponse(resp *coltracepb.ExportTraceServiceResponse, asJSON bool) ([]byte, error) {
	if asJSON {
		return protojson.Marshal(resp)
	}
	return proto.Marshal(resp)
}

// PartialSuccess builds the response for a request of which rejected spans
// were refused, with reason as the message a sender sees.
func PartialSuccess(rejected int, reason string) *coltracepb.ExportTraceServiceResponse {
	if rejected == 0 {
		return &coltracepb.ExportTraceServiceResponse{}
	}
	return &coltracepb.ExportTraceServiceResponse{PartialSuccess: &coltracepb.ExportTracePartialSuccess{
		RejectedSpans: int64(rejected),
		ErrorMessage:  fmt.Sprintf("%d spans rejected: %s", rejected, reason),
	}}
}
