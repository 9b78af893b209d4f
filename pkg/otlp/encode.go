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
