package limits

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/spangraph/spangraph/pkg/otlp"
)

// CheckRequest refuses a request with more spans than the tenant's
// max_spans_per_request with an *Error (ErrTooManySpans); see Error for
// the status codes.
func (l *Limits) CheckRequest(tenant string, spans int) error {
	maxSpans := l.For(tenant).MaxSpansPerRequest
	if maxSpans <= 0 || spans <= maxSpans {
		return nil
	}
	rejectedSpans.WithLabelValues(tenant, ReasonTooManySpans).Add(float64(spans))
	return &Error{
		kind:   ErrTooManySpans,
		Reason: ReasonTooManySpans,
		msg: fmt.Sprintf("the request has %d spans, more than the %d of limits.max_spans_per_request for tenant %q; send smaller batches",
			spans, maxSpans, tenant),
	}
}

// Check applies the per-span limits to b, in place:
//   - spans with more than max_attributes_per_span attributes are removed
//     (b.Filter) and counted in rejected, with reason describing them for
//     the OTLP partial_success answer;
//   - string values of span and resource attributes longer than
//     max_attribute_value_length are truncated, which is not a rejection:
//     the span is kept and counted as accepted.
//
// The request-level limits are CheckRequest and Allow.
func (l *Limits) Check(tenant string, b *otlp.Batch) (rejected int, reason string) {
	tl := l.For(tenant)
	maxAttrs, maxLen := tl.MaxAttributesPerSpan, tl.MaxAttributeValueLength
	if maxAttrs <= 0 && maxLen <= 0 {
		return 0, ""
	}
	truncated := 0
	if maxLen > 0 {
		// Resource attributes once per resource: they are shared by its
		// spans and become dimension labels just the same.
		for ri := range b.Resources {
			truncated += truncateValues(b.Resources[ri].Attributes, maxLen)
		}
	}
	tooMany := 0
	if maxAttrs > 0 {
		b.Filter(func(_ *otlp.ResourceSpans, s *otlp.Span) bool {
			if len(s.Attributes) > maxAttrs {
				tooMany++
				return false
			}
			if maxLen > 0 {
				truncated += truncateValues(s.Attributes, maxLen)
			}
			return true
		})
	} else {
		// No span can be refused: skip Filter's copying.
		for ri := range b.Resources {
			spans := b.Resources[ri].Spans
			for i := range spans {
				truncated += truncateValues(spans[i].Attributes, maxLen)
			}
		}
	}
	if truncated > 0 {
		truncatedValues.WithLabelValues(tenant).Add(float64(truncated))
	}
	if tooMany == 0 {
		return 0, ""
	}
	rejectedSpans.WithLabelValues(tenant, ReasonTooManyAttributes).Add(float64(tooMany))
	return tooMany, fmt.Sprintf("%d spans with more than %d attributes (limits.max_attributes_per_span)", tooMany, maxAttrs)
}

// truncateValues cuts string values longer than maxLen bytes and returns
// how many it cut.
//
// Value.Str points into the request buffer the batch owns (the decoder
// does not copy strings), so truncating is reslicing: no allocation and no
// copy on the hot path, and the bytes past the cut simply stay unused in
// the buffer until the batch is released. Never write into the string's
// bytes instead: other strings (a span name, another value) may share them.
func truncateValues(attrs []otlp.KeyValue, maxLen int) int {
	n := 0
	for i := range attrs {
		v := &attrs[i].Value
		if v.Type == otlp.ValueString && len(v.Str) > maxLen {
			v.Str = truncateUTF8(v.Str, maxLen)
			n++
		}
	}
	return n
}

// truncateUTF8 returns the longest prefix of s of at most maxLen bytes that
// ends on a rune boundary: the decoder guarantees valid UTF-8 and label
// values must stay valid. The result may be up to 3 bytes shorter than
// maxLen.
func truncateUTF8(s string, maxLen int) string {
	if len(s) <= maxLen {
		return s
	}
	cut := maxLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// JoinReasons joins the non-empty partial_success reasons, for a caller
// that combines its own rejections with those of Check.
func JoinReasons(parts ...string) string {
	out := parts[:0:0]
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "; ")
}
