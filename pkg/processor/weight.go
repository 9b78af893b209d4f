package processor

import (
	"math"
	"strconv"
	"strings"

	"github.com/spangraph/spangraph/pkg/otlp"
)

// SamplingMultiplier returns the adjusted count of a span from its W3C
// tracestate: the "ot" member's "th" sampling threshold T (hex, up to 14
// digits, right-padded) means the span was kept with probability
// (2^56 - T) / 2^56, so it stands for the inverse of that many spans.
// It returns 1 when there is no valid threshold.
func SamplingMultiplier(tracestate string) float64 {
	for tracestate != "" {
		var member string
		member, tracestate, _ = strings.Cut(tracestate, ",")
		member = strings.TrimSpace(member)
		ot, ok := strings.CutPrefix(member, "ot=")
		if !ok {
			continue
		}
		for ot != "" {
			var kv string
			kv, ot, _ = strings.Cut(ot, ";")
			th, ok := strings.CutPrefix(kv, "th:")
			if !ok {
				continue
			}
			if th == "" || len(th) > 14 {
				return 1
			}
			t, err := strconv.ParseUint(th, 16, 64)
			if err != nil {
				return 1
			}
			t <<= 4 * (14 - len(th))
			const full = 1 << 56
			if t >= full {
				return 1
			}
			return float64(full) / float64(full-t)
		}
		return 1
	}
	return 1
}

// SpanWeight is how many spans s stands for: the numeric attribute key
// (resource first, then span) when key is set, times the tracestate
// sampling multiplier. Anything that is not a positive finite number
// counts as 1.
func SpanWeight(key string, resource []otlp.KeyValue, s *otlp.Span) float64 {
	w := 1.0
	if key != "" {
		v, ok := otlp.Lookup(resource, key)
		if !ok {
			v, ok = otlp.Lookup(s.Attributes, key)
		}
		if ok {
			switch v.Type {
			case otlp.ValueDouble:
				w = v.Double
			case otlp.ValueInt:
				w = float64(v.Int)
			}
		}
	}
	if s.TraceState != "" {
		w *= SamplingMultiplier(s.TraceState)
	}
	if w <= 0 || math.IsNaN(w) || math.IsInf(w, 0) {
		return 1
	}
	return w
}
