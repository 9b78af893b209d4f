package processor

import (
	"math"
	"strconv"
	"strings"

	"github.com/spangraph/spangraph/pkg/otlp"
)

// SpanMultiplier is how many spans s stands for, by the rule of Tempo's
// metrics-generator (GetSpanMultiplier), so that a sampled span counts
// the same in both:
//
//   - with traceState on, the W3C tracestate "ot" threshold wins when it
//     is valid (see TraceStateMultiplier);
//   - else, when key is set, the first double attribute key > 0 on the
//     span, then on the resource, is a sampling ratio and the span stands
//     for 1/ratio spans; integers, strings and ratios ≤ 0 do not count;
//   - else 1.
//
// One guard Tempo lacks: a ratio so small that its inverse overflows to
// +Inf (below about 5.6e-309) does not count either, since one such span
// would hold every series it touches at +Inf for good.
func SpanMultiplier(key string, traceState bool, resource []otlp.KeyValue, s *otlp.Span) float64 {
	if traceState && s.TraceState != "" {
		if m := TraceStateMultiplier(s.TraceState); m > 0 {
			return m
		}
	}
	if key != "" {
		if m, ok := inverseRatio(s.Attributes, key); ok {
			return m
		}
		if m, ok := inverseRatio(resource, key); ok {
			return m
		}
	}
	return 1
}

// inverseRatio returns 1/v for the first double attribute key with a
// value v > 0 whose inverse is finite.
func inverseRatio(attrs []otlp.KeyValue, key string) (float64, bool) {
	for i := range attrs {
		a := &attrs[i]
		if a.Key != key || a.Value.Type != otlp.ValueDouble || !(a.Value.Double > 0) {
			continue
		}
		if m := 1 / a.Value.Double; !math.IsInf(m, 0) {
			return m, true
		}
	}
	return 0, false
}

// maxAdjustedCount is 2^56: thresholds and randomness are 56-bit.
const maxAdjustedCount = 1 << 56

// TraceStateMultiplier returns the adjusted count of a span from its W3C
// tracestate, as Tempo reads it (through the OpenTelemetry Collector's
// pkg/sampling): the first list member that starts with "ot=" must be a
// valid OpenTelemetry tracestate (key:value pairs joined by ";", keys
// [a-z][a-z0-9]*, values [A-Za-z0-9._-]*, at most 256 bytes), its "rv",
// when present, 14 hex digits, and its "th" 1 to 14 hex digits; the
// threshold T, right-padded to 14 digits, means the span was kept with
// probability (2^56 - T) / 2^56, so it stands for the inverse of that.
// It returns 0 when there is no such threshold: the caller falls back.
func TraceStateMultiplier(tracestate string) float64 {
	ot := otMember(tracestate)
	if ot == "" || len(ot) > 256 || ot[len(ot)-1] == ';' {
		return 0
	}
	var threshold uint64
	found := false
	for ot != "" {
		var member string
		member, ot, _ = strings.Cut(ot, ";")
		key, value, ok := strings.Cut(member, ":")
		if !ok || !validOTKey(key) || !validOTValue(value) {
			return 0
		}
		switch key {
		case "th":
			if value == "" || len(value) > 14 {
				return 0
			}
			t, err := strconv.ParseUint(value, 16, 64)
			if err != nil {
				return 0
			}
			threshold, found = t<<(4*(14-len(value))), true
		case "rv":
			if len(value) != 14 {
				return 0
			}
			if _, err := strconv.ParseUint(value, 16, 64); err != nil {
				return 0
			}
		}
	}
	if !found {
		return 0
	}
	// Computed as the Collector does (1 / probability), to the last bit.
	return 1 / (float64(maxAdjustedCount-threshold) / maxAdjustedCount)
}

// otMember returns the value of the first tracestate list member that
// starts with "ot=", with the white space around members trimmed as Tempo
// trims it: the whole rest of the list at each step, so white space
// before a comma stays part of the member (and makes it invalid).
func otMember(tracestate string) string {
	for {
		tracestate = strings.TrimSpace(tracestate)
		comma := strings.IndexByte(tracestate, ',')
		if v, ok := strings.CutPrefix(tracestate, "ot="); ok {
			if comma > 0 {
				return v[:comma-3]
			}
			return v
		}
		if comma < 0 {
			return ""
		}
		tracestate = tracestate[comma+1:]
	}
}

func validOTKey(k string) bool {
	if k == "" || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	for i := 1; i < len(k); i++ {
		if c := k[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func validOTValue(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
