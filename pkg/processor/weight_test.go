package processor

import (
	"math"
	"strings"
	"testing"

	"github.com/spangraph/spangraph/pkg/otlp"
)

// TestTraceStateMultiplier holds the cases of Tempo's own test of its
// tracestate multiplier, and the Collector's parsing rules behind it.
func TestTraceStateMultiplier(t *testing.T) {
	cases := []struct {
		ts   string
		want float64
	}{
		{"", 0},
		{"ot=th:0", 1}, // threshold 0: everything kept
		{"ot=th:8", 2},
		{"ot=th:c", 4},
		{"ot=th:C", 4}, // hex digits of either case
		{"ot=th:c0", 4},
		{"ot=th:c0000000000000", 4}, // right-padded: same threshold
		{"ot=th:e", 8},
		{"ot=th:f", 16},
		{"ot=th:08", 32.0 / 31.0},
		{"ot=th:fd70a4", 1 / (float64(maxAdjustedCount-0xfd70a4<<32) / maxAdjustedCount)}, // about 1 %
		{"ot=th:ffffffffffffff", 1 << 56},
		{"ot=rv:00112233445566;th:8", 2}, // th after another sub-key
		{"ot=th:8;rv:0123456789abcd", 2},
		{"ot=th:8;xy:whatever-1.2_3", 2}, // unknown sub-keys are kept, not judged
		{"ot=th:c;th:8", 2},              // the last threshold counts
		{"vendor1=value1,ot=th:8,vendor2=value2", 2},
		{"ot=th:c,vendor=abc", 4},
		{"not=th:8, ot=th:c", 4}, // only a member that starts with ot=
		{"  ot=th:8  ", 2},       // white space around the list
		{"a=1, ot=th:8 ,b=2", 0}, // white space before the comma stays in the member
		{"ot=th:8,ot=th:c", 2},   // the first ot member
		{"xot=th:8", 0},
		{"not=th:c", 0},
		{"vendor=th:8", 0},
		{"ot=rv:00112233445566", 0}, // no threshold
		{"ot=th:", 0},
		{"ot=", 0},
		{"ot=th:xyz", 0},
		{"ot=th:0x8", 0},
		{"ot=th:+8", 0},
		{"ot=th:123456789abcdef", 0},     // 15 digits
		{"ot=th:8;rv:0123", 0},           // an invalid rv spoils the threshold
		{"ot=th:8;rv:0123456789abcg", 0}, // rv not hex
		{"ot=th:8;", 0},                  // trailing separator
		{"ot=th:8;;rv:00112233445566", 0},
		{"ot=Th:8", 0}, // keys are lower case
		{"ot=th:8;1a:b", 0},
		{"ot=th:8;a:b:c", 0},
		{"ot=th:8;a:b c", 0},
		{"ot=th:8;a", 0},
		{"ot=th:8;a:" + strings.Repeat("b", 249), 2}, // 256 bytes
		{"ot=th:8;a:" + strings.Repeat("b", 250), 0}, // over 256 bytes
		{",,,", 0},
		{"ot", 0},
	}
	for _, tc := range cases {
		if got := TraceStateMultiplier(tc.ts); got != tc.want {
			t.Errorf("TraceStateMultiplier(%q) = %v, want %v", tc.ts, got, tc.want)
		}
	}
}

func TestSpanMultiplier(t *testing.T) {
	dbl := func(k string, v float64) otlp.KeyValue {
		return otlp.KeyValue{Key: k, Value: otlp.Value{Type: otlp.ValueDouble, Double: v}}
	}
	integer := func(k string, v int64) otlp.KeyValue {
		return otlp.KeyValue{Key: k, Value: otlp.Value{Type: otlp.ValueInt, Int: v}}
	}
	str := func(k, v string) otlp.KeyValue {
		return otlp.KeyValue{Key: k, Value: otlp.Value{Type: otlp.ValueString, Str: v}}
	}
	const key = "sampling.ratio"
	for _, tc := range []struct {
		name       string
		key        string
		traceState bool
		resource   []otlp.KeyValue
		span       []otlp.KeyValue
		ts         string
		want       float64
	}{
		{name: "no key", span: []otlp.KeyValue{dbl(key, 0.25)}, want: 1},
		{name: "span ratio", key: key, span: []otlp.KeyValue{dbl(key, 0.25)}, want: 4},
		{name: "resource ratio", key: key, resource: []otlp.KeyValue{dbl(key, 0.5)}, want: 2},
		{name: "the span before the resource", key: key, resource: []otlp.KeyValue{dbl(key, 0.5)}, span: []otlp.KeyValue{dbl(key, 0.25)}, want: 4},
		{name: "an integer does not count", key: key, span: []otlp.KeyValue{integer(key, 2)}, want: 1},
		{name: "an integer on the span leaves the resource's", key: key, resource: []otlp.KeyValue{dbl(key, 0.5)}, span: []otlp.KeyValue{integer(key, 2)}, want: 2},
		{name: "a string does not count", key: key, span: []otlp.KeyValue{str(key, "0.5")}, want: 1},
		{name: "zero does not count", key: key, span: []otlp.KeyValue{dbl(key, 0)}, resource: []otlp.KeyValue{dbl(key, 0.1)}, want: 10},
		{name: "negative does not count", key: key, span: []otlp.KeyValue{dbl(key, -0.5)}, want: 1},
		{name: "NaN does not count", key: key, span: []otlp.KeyValue{dbl(key, math.NaN())}, want: 1},
		{name: "+Inf counts as Tempo counts it", key: key, span: []otlp.KeyValue{dbl(key, math.Inf(1))}, want: 0},
		{name: "a ratio whose inverse overflows does not count", key: key, span: []otlp.KeyValue{dbl(key, 1e-310)}, want: 1},
		{name: "a ratio above 1 counts for less than a span", key: key, span: []otlp.KeyValue{dbl(key, 2)}, want: 0.5},
		{name: "the first positive double of a repeated key", key: key, span: []otlp.KeyValue{integer(key, 3), dbl(key, 0.5), dbl(key, 0.25)}, want: 2},
		{name: "tracestate off", key: key, span: []otlp.KeyValue{dbl(key, 0.5)}, ts: "ot=th:c", want: 2},
		{name: "tracestate off, no key", ts: "ot=th:c", want: 1},
		{name: "tracestate wins", key: key, traceState: true, span: []otlp.KeyValue{dbl(key, 0.5)}, ts: "ot=th:c", want: 4},
		{name: "tracestate not multiplied by the ratio", key: key, traceState: true, resource: []otlp.KeyValue{dbl(key, 0.5)}, ts: "ot=th:8", want: 2},
		{name: "invalid tracestate falls back to the ratio", key: key, traceState: true, span: []otlp.KeyValue{dbl(key, 0.5)}, ts: "ot=th:zz", want: 2},
		{name: "tracestate alone", traceState: true, ts: "ot=th:e", want: 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &otlp.Span{Attributes: tc.span, TraceState: tc.ts}
			if got := SpanMultiplier(tc.key, tc.traceState, tc.resource, s); got != tc.want {
				t.Fatalf("SpanMultiplier = %v, want %v", got, tc.want)
			}
		})
	}
}
