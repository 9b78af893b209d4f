package otlp

import "google.golang.org/protobuf/encoding/protowire"

// AppendPart appends to dst an ExportTraceServiceRequest, in protobuf wire
// format, holding the spans of b whose entry in parts equals part. parts
// has one entry per span of b, in the order of b.Resources and their
// Spans (the order Filter visits them in).
//
// Spans are copied byte for byte from the request b was decoded from, so
// the instance that receives the part decodes the same spans, with the
// same Size, and counts the same figures as b's would. Each resource's
// resource field is copied with its spans; its scopes are merged into one
// ScopeSpans without a scope, which no processor reads. What only the
// JSON transcoder saw (an enum name, an id that is not hex) is not in the
// binary form: remove the spans with a Fault first, as the receiver does.
func (b *Batch) AppendPart(dst []byte, parts []uint16, part uint16) []byte {
	k := 0
	for ri := range b.Resources {
		rs := &b.Resources[ri]
		first := k
		scopeLen := 0
		for i := range rs.Spans {
			if parts[k] == part {
				scopeLen += protowire.SizeBytes(rs.Spans[i].Size) + 1
			}
			k++
		}
		if scopeLen == 0 {
			continue
		}
		resource := b.raw[rs.rawStart:rs.rawEnd]
		resLen := 0
		eachResourceField(resource, func(f []byte) { resLen += len(f) })
		rsLen := resLen + 1 + protowire.SizeBytes(scopeLen)

		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(rsLen))
		eachResourceField(resource, func(f []byte) { dst = append(dst, f...) })
		dst = protowire.AppendTag(dst, 2, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(scopeLen))
		for i := range rs.Spans {
			if parts[first+i] != part {
				continue
			}
			s := &rs.Spans[i]
			dst = protowire.AppendTag(dst, 2, protowire.BytesType)
			dst = protowire.AppendVarint(dst, uint64(s.Size))
			dst = append(dst, b.raw[s.rawOff:int(s.rawOff)+s.Size]...)
		}
	}
	return dst
}

// eachResourceField calls f with every resource field of a ResourceSpans
// message, tag included: the field may occur more than once, and the
// decoder merged them all. The message decoded once already, so it cannot
// be malformed.
func eachResourceField(msg []byte, f func([]byte)) {
	for len(msg) > 0 {
		num, typ, _, _, next, err := field(msg)
		if err != nil {
			return
		}
		if num == 1 && typ == protowire.BytesType {
			f(msg[:len(msg)-len(next)])
		}
		msg = next
	}
}

// SplitRequest splits an ExportTraceServiceRequest in protobuf wire format
// by the part owner gives each span's trace id, appending part i to
// parts[i], without decoding anything else: a ring member routes a request
// at a fraction of the cost of decoding it, and only the owner of a span
// decodes it. Spans are copied byte for byte, under a copy of their
// resource's resource field, as AppendPart does. owner's argument is the
// span's trace_id field as sent (any length; the owner validates it).
// parts grows to the highest part owner returns, reusing the buffers it
// holds beyond its length (their contents are discarded); scratch is
// reused between calls. Framing is checked down to the spans' fields; a
// request that fails returns an error: decoding it says what is wrong.
func SplitRequest(data []byte, owner func(traceID []byte) int, parts [][]byte, scratch *[]SplitSpan) ([][]byte, error) {
	out := parts
	for rest := data; len(rest) > 0; {
		num, typ, rs, _, next, err := field(rest)
		if err != nil {
			return out, err
		}
		rest = next
		if num != 1 || typ != protowire.BytesType {
			continue
		}
		spans, err := spansOf(rs, (*scratch)[:0], owner)
		*scratch = spans
		if err != nil {
			return out, err
		}
		for _, sp := range spans {
			for int(sp.part) >= len(out) {
				if len(out) < cap(out) {
					out = out[:len(out)+1]
					out[len(out)-1] = out[len(out)-1][:0]
				} else {
					out = append(out, nil)
				}
			}
		}
		resLen := 0
		eachResourceField(rs, func(f []byte) { resLen += len(f) })
		for p := range out {
			scopeLen := 0
			for _, sp := range spans {
				if sp.part == int32(p) {
					scopeLen += 1 + protowire.SizeBytes(len(sp.msg))
				}
			}
			if scopeLen == 0 {
				continue
			}
			dst := out[p]
			dst = protowire.AppendTag(dst, 1, protowire.BytesType)
			dst = protowire.AppendVarint(dst, uint64(resLen+1+protowire.SizeBytes(scopeLen)))
			eachResourceField(rs, func(f []byte) { dst = append(dst, f...) })
			dst = protowire.AppendTag(dst, 2, protowire.BytesType)
			dst = protowire.AppendVarint(dst, uint64(scopeLen))
			for _, sp := range spans {
				if sp.part == int32(p) {
					dst = protowire.AppendTag(dst, 2, protowire.BytesType)
					dst = protowire.AppendBytes(dst, sp.msg)
				}
			}
			out[p] = dst
		}
	}
	return out, nil
}

// spanTraceID returns the last trace_id field of an encoded Span (as
// decoding keeps the last), checking the framing of its fields. It walks
// the fields with single-byte tags and lengths inline, as nearly all of a
// span's are: through field() this walk was four fifths of what splitting
// a request cost.
func spanTraceID(span []byte) ([]byte, error) {
	var id []byte
	for f := span; len(f) > 0; {
		tag := f[0]
		switch typ := protowire.Type(tag & 7); {
		case tag >= 0x80 || tag < 8 || typ == protowire.StartGroupType || typ == protowire.EndGroupType || typ > protowire.Fixed32Type:
			// Long tags, groups and invalid types: fieldSlow takes
			// them as decoding does.
			num, typ, v, _, next, err := fieldSlow(f)
			if err != nil {
				return nil, err
			}
			if num == 1 && typ == protowire.BytesType {
				id = v
			}
			f = next
		case typ == protowire.BytesType:
			l, n := uint64(0), 0
			if len(f) > 1 && f[1] < 0x80 {
				l, n = uint64(f[1]), 1
			} else if l, n = protowire.ConsumeVarint(f[1:]); n < 0 {
				return nil, malformed("field %d: %v", tag>>3, protowire.ParseError(n))
			}
			f = f[1+n:]
			if l > uint64(len(f)) {
				return nil, malformed("field %d: %v", tag>>3, protowire.ParseError(-1))
			}
			if tag == 1<<3|byte(protowire.BytesType) {
				id = f[:l]
			}
			f = f[l:]
		case typ == protowire.Fixed64Type:
			if len(f) < 9 {
				return nil, malformed("field %d: %v", tag>>3, protowire.ParseError(-1))
			}
			f = f[9:]
		case typ == protowire.Fixed32Type:
			if len(f) < 5 {
				return nil, malformed("field %d: %v", tag>>3, protowire.ParseError(-1))
			}
			f = f[5:]
		default: // varint
			n := protowire.ConsumeFieldValue(protowire.Number(tag>>3), protowire.VarintType, f[1:])
			if n < 0 {
				return nil, malformed("field %d: %v", tag>>3, protowire.ParseError(n))
			}
			f = f[1+n:]
		}
	}
	return id, nil
}

// SplitSpan is one span of a resource as SplitRequest routes it.
type SplitSpan struct {
	msg  []byte
	part int32
}

// spansOf appends the spans of a ResourceSpans message to dst, each with
// the part owner gives its trace id (the last trace_id field, as decoding
// keeps), checking the framing of the scopes, the spans and their fields.
func spansOf(rs []byte, dst []SplitSpan, owner func([]byte) int) ([]SplitSpan, error) {
	for rest := rs; len(rest) > 0; {
		num, typ, ss, _, next, err := field(rest)
		if err != nil {
			return dst, err
		}
		rest = next
		if num != 2 || typ != protowire.BytesType {
			continue
		}
		for r := ss; len(r) > 0; {
			num, typ, span, _, next, err := field(r)
			if err != nil {
				return dst, err
			}
			r = next
			if num != 2 || typ != protowire.BytesType {
				continue
			}
			id, err := spanTraceID(span)
			if err != nil {
				return dst, err
			}
			dst = append(dst, SplitSpan{msg: span, part: int32(owner(id))})
		}
	}
	return dst, nil
}
