package otlp

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// otlpJSON is a request as the OTLP/JSON specification writes it: hex ids,
// enums as integers, 64-bit integers as strings, lowerCamelCase names, and
// fields this version does not know (which must be ignored).
const otlpJSON = `{
  "resourceSpans": [{
    "resource": {
      "attributes": [
        {"key": "service.name", "value": {"stringValue": "checkout"}},
        {"key": "process.pid", "value": {"intValue": "4242"}},
        {"key": "sampled", "value": {"boolValue": true}}
      ],
      "droppedAttributesCount": 0,
      "futureResourceField": {"nested": [1, 2, 3]}
    },
    "scopeSpans": [{
      "scope": {"name": "manual", "version": "1.0.0"},
      "spans": [{
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "eee19b7ec3c1b174",
        "parentSpanId": "eee19b7ec3c1b173",
        "traceState": "ot=th:8",
        "name": "POST /cart",
        "kind": 2,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": 1700000000123456789,
        "attributes": [
          {"key": "http.response.status_code", "value": {"intValue": 503}},
          {"key": "ratio", "value": {"doubleValue": 0.25}},
          {"key": "big", "value": {"intValue": "-9223372036854775808"}},
          {"key": "list", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}},
          {"key": "raw", "value": {"bytesValue": "AAEC"}}
        ],
        "events": [{"timeUnixNano": "1", "name": "e"}],
        "links": [{"traceId": "5b8efff798038103d269b633813fc60d", "spanId": "eee19b7ec3c1b175"}],
        "status": {"code": 2, "message": "upstream down"},
        "flags": 257,
        "someFutureField": "ignored"
      }, {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "0000000000000001",
        "name": "SELECT",
        "kind": "SPAN_KIND_CLIENT",
        "status": {"code": "STATUS_CODE_OK"}
      }]
    }],
    "schemaUrl": "https://opentelemetry.io/schemas/1.26.0"
  }]
}`

// otlpJSONWant is otlpJSON in generated types.
func otlpJSONWant() *coltracepb.ExportTraceServiceRequest {
	id := func(s string) []byte {
		b := make([]byte, len(s)/2)
		for i := range b {
			b[i] = byte(hexVal(s[2*i])<<4 | hexVal(s[2*i+1]))
		}
		return b
	}
	return request(resourceSpans(
		[]*commonpb.KeyValue{kv("service.name", strV("checkout")), kv("process.pid", intV(4242)), kv("sampled", boolV(true))},
		&tracepb.ScopeSpans{Spans: []*tracepb.Span{{
			TraceId:           id("5b8efff798038103d269b633813fc60c"),
			SpanId:            id("eee19b7ec3c1b174"),
			ParentSpanId:      id("eee19b7ec3c1b173"),
			TraceState:        "ot=th:8",
			Name:              "POST /cart",
			Kind:              tracepb.Span_SPAN_KIND_SERVER,
			StartTimeUnixNano: 1700000000000000000,
			EndTimeUnixNano:   1700000000123456789,
			Attributes: []*commonpb.KeyValue{
				kv("http.response.status_code", intV(503)),
				kv("ratio", dblV(0.25)),
				kv("big", intV(math.MinInt64)),
				kv("list", arrV(strV("a"))),
				kv("raw", bytesV([]byte{0, 1, 2})),
			},
			Events: []*tracepb.Span_Event{{TimeUnixNano: 1, Name: "e"}},
			Links:  []*tracepb.Span_Link{{TraceId: id("5b8efff798038103d269b633813fc60d"), SpanId: id("eee19b7ec3c1b175")}},
			Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "upstream down"},
			Flags:  257,
		}, {
			TraceId: id("5b8efff798038103d269b633813fc60c"),
			SpanId:  id("0000000000000001"),
			Name:    "SELECT",
			Kind:    tracepb.Span_SPAN_KIND_CLIENT,
			Status:  &tracepb.Status{Code: tracepb.Status_STATUS_CODE_OK},
		}}},
	))
}

func hexVal(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// snakeCase rewrites the lowerCamelCase field names of otlpJSON to the
// proto names, which protobuf JSON parsers accept as well.
func snakeCase(s string) string {
	return strings.NewReplacer(
		`"resourceSpans"`, `"resource_spans"`, `"scopeSpans"`, `"scope_spans"`,
		`"traceId"`, `"trace_id"`, `"spanId"`, `"span_id"`, `"parentSpanId"`, `"parent_span_id"`,
		`"traceState"`, `"trace_state"`, `"startTimeUnixNano"`, `"start_time_unix_nano"`,
		`"endTimeUnixNano"`, `"end_time_unix_nano"`, `"stringValue"`, `"string_value"`,
		`"intValue"`, `"int_value"`, `"boolValue"`, `"bool_value"`, `"doubleValue"`, `"double_value"`,
		`"arrayValue"`, `"array_value"`, `"bytesValue"`, `"bytes_value"`,
	).Replace(s)
}

func TestDecodeJSON(t *testing.T) {
	cases := []struct {
		name string
		doc  string
		want *coltracepb.ExportTraceServiceRequest
	}{
		{"OTLP/JSON as specified", otlpJSON, otlpJSONWant()},
		{"snake_case names", snakeCase(otlpJSON), otlpJSONWant()},
		{"empty object", `{}`, request()},
		{"null resourceSpans", `{"resourceSpans": null}`, request()},
		{"empty and null ids", `{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"","spanId":null,"name":"x"}]}]}]}`,
			request(&tracepb.ResourceSpans{ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{Name: "x"}}}}})},
		{"odd-sized but hex ids", `{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102","spanId":"0a0b0c0d0e0f101112"}]}]}]}`,
			request(&tracepb.ResourceSpans{ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{TraceId: []byte{1, 2}, SpanId: seqID(10, 9)}}}}})},
		{"unknown top-level field", `{"resourceSpans":[], "extension": {"a": 1}}`, request()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := GetBatch()
			defer b.Release()
			if err := b.DecodeJSON([]byte(tc.doc)); err != nil {
				t.Fatalf("DecodeJSON: %v", err)
			}
			if err := checkBatch(b, tc.want, canonicalSizes(tc.want)); err != nil {
				t.Fatal(err)
			}
			if err := checkConsistent(b); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDecodeJSONMalformed(t *testing.T) {
	span := func(fields string) string {
		return `{"resourceSpans":[{"scopeSpans":[{"spans":[{` + fields + `}]}]}]}`
	}
	cases := []struct{ name, doc string }{
		{"not JSON", `{"resourceSpans": [`},
		{"empty input", ``},
		{"array at top level", `[{"resourceSpans":[]}]`},
		{"string at top level", `"x"`},
		{"two documents", `{} {}`},
		{"trailing garbage", `{}x`},
		{"trace id a number", span(`"traceId":12345`)},
		{"trace id an object", span(`"traceId":{}`)},
		{"intValue not an integer", span(`"attributes":[{"key":"k","value":{"intValue":"12a"}}]`)},
		{"kind of the wrong type", span(`"kind":{"a":1}`)},
		{"time negative", span(`"startTimeUnixNano":"-1"`)},
		{"spans not a list", `{"resourceSpans":[{"scopeSpans":[{"spans":{}}]}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := GetBatch()
			defer b.Release()
			err := b.DecodeJSON([]byte(tc.doc))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeJSON = %v, want an error wrapping ErrMalformed", err)
			}
			if b.SpanCount != 0 || len(b.Resources) != 0 {
				t.Fatalf("failed decode left %d spans", b.SpanCount)
			}
		})
	}
}

// jsonSpan writes a span of seed in OTLP/JSON, as wantSpan has it, with
// the fields of override replaced, added, or removed when "".
func jsonSpan(seed byte, override map[string]string) string {
	fields := [][2]string{
		{"traceId", `"` + hex.EncodeToString(seqID(seed, 16)) + `"`},
		{"spanId", `"` + hex.EncodeToString(seqID(seed+100, 8)) + `"`},
		{"name", fmt.Sprintf(`"GET /api/%d"`, seed)},
		{"kind", "2"},
		{"startTimeUnixNano", `"1700000000000000000"`},
		{"endTimeUnixNano", `"1700000000001500000"`},
		{"attributes", `[{"key": "k", "value": {"stringValue": "v"}}]`},
		{"status", `{"code": 1}`},
	}
	var out []string
	for _, f := range fields {
		if v, ok := override[f[0]]; ok {
			f[1] = v
		}
		if f[1] != "" {
			out = append(out, fmt.Sprintf("%q: %s", f[0], f[1]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(override)) {
		if !slices.ContainsFunc(fields, func(f [2]string) bool { return f[0] == k }) {
			out = append(out, fmt.Sprintf("%q: %s", k, override[k]))
		}
	}
	return "{" + strings.Join(out, ", ") + "}"
}

func wantSpan(seed byte) *tracepb.Span {
	return &tracepb.Span{
		TraceId: seqID(seed, 16), SpanId: seqID(seed+100, 8), Name: fmt.Sprintf("GET /api/%d", seed),
		Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: 1700000000000000000, EndTimeUnixNano: 1700000000001500000,
		Attributes: []*commonpb.KeyValue{kv("k", strV("v"))}, Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_OK},
	}
}

// TestDecodeJSONFlagsSpans: a value that breaks a rule of OTLP/JSON but
// leaves the JSON sound (an id that is not hex, an enum name the enum
// does not have, text that is not UTF-8) flags its span, or its
// resource's spans, and the other spans decode as usual.
func TestDecodeJSONFlagsSpans(t *testing.T) {
	cases := []struct {
		name     string
		override map[string]string // of the second span of three
		service  string            // the resource's service.name in JSON
		fault    Fault
		why      string
		edit     func(*tracepb.Span) // of the second span, when not flagged
	}{
		{name: "trace id not hex", override: map[string]string{"traceId": `"zz8efff798038103d269b633813fc60c"`}, fault: FaultID, why: "traceId is not a hex string"},
		{name: "trace id with an odd number of digits", override: map[string]string{"traceId": `"5b8efff798038103d269b633813fc60"`}, fault: FaultID, why: "traceId"},
		{name: "span id base64, as protobuf JSON would write it", override: map[string]string{"spanId": `"7uGbfsPBsXQ="`}, fault: FaultID, why: "spanId is not a hex string"},
		{name: "parent span id not hex", override: map[string]string{"parentSpanId": `"g000000000000000"`}, fault: FaultID, why: "parentSpanId"},
		{name: "snake_case span id not hex", override: map[string]string{"spanId": "", "span_id": `"xyz"`}, fault: FaultID, why: "spanId"},
		{name: "link id not hex", override: map[string]string{"links": `[{"traceId": "nothex", "spanId": "0102030405060708"}]`}, fault: FaultID, why: "link"},
		{name: "unknown kind name", override: map[string]string{"kind": `"SPAN_KIND_BOGUS"`}, fault: FaultEnum, why: "kind is not a SpanKind name"},
		{name: "kind number in a string", override: map[string]string{"kind": `"2"`}, fault: FaultEnum, why: "kind"},
		{name: "unknown status code name", override: map[string]string{"status": `{"code": "STATUS_CODE_BOGUS"}`}, fault: FaultEnum, why: "status code is not a StatusCode name"},
		{name: "name with bytes that are not UTF-8", override: map[string]string{"name": "\"caf\xc3(\""}, fault: FaultUTF8, why: "span name"},
		{name: "name with a lone high surrogate", override: map[string]string{"name": `"x\ud800y"`}, fault: FaultUTF8, why: "span name"},
		{name: "name with a lone low surrogate", override: map[string]string{"name": `"\udc00"`}, fault: FaultUTF8, why: "span name"},
		{name: "name with swapped surrogates", override: map[string]string{"name": `"\ude00\ud83d"`}, fault: FaultUTF8, why: "span name"},
		{name: "attribute value ending in a high surrogate", override: map[string]string{"attributes": `[{"key": "k", "value": {"stringValue": "v\ud83d"}}]`}, fault: FaultUTF8, why: "span attribute string value"},
		{name: "attribute key not UTF-8", override: map[string]string{"attributes": "[{\"key\": \"\xff\", \"value\": {\"intValue\": 1}}]"}, fault: FaultUTF8, why: "span attribute key"},
		{name: "status message not UTF-8", override: map[string]string{"status": `{"code": 1, "message": "\udfff"}`}, fault: FaultUTF8, why: "status message"},
		{name: "resource attribute not UTF-8", service: `"\ud800"`, fault: FaultUTF8, why: "resource attribute string value"},
		{name: "an escaped U+FFFD is text like any other", override: map[string]string{"name": `"caf\ufffd"`},
			edit: func(s *tracepb.Span) { s.Name = "caf\ufffd" }},
		{name: "a raw U+FFFD is text like any other", override: map[string]string{"name": "\"caf\ufffd \\n\\u00e9\\\"\""},
			edit: func(s *tracepb.Span) { s.Name = "caf\ufffd \n\u00e9\"" }},
		{name: "a surrogate pair is one character", override: map[string]string{"name": `"\ud83d\ude00\ufffd"`},
			edit: func(s *tracepb.Span) { s.Name = "\U0001F600\ufffd" }},
		{name: "text the processors never read", override: map[string]string{"events": `[{"name": "\ud800", "attributes": [{"key": "\ud800", "value": {"stringValue": "\ud800"}}]}]`},
			edit: func(s *tracepb.Span) {}},
		{name: "known enum names", override: map[string]string{"kind": `"SPAN_KIND_CLIENT"`, "status": `{"code": "STATUS_CODE_ERROR"}`},
			edit: func(s *tracepb.Span) {
				s.Kind, s.Status.Code = tracepb.Span_SPAN_KIND_CLIENT, tracepb.Status_STATUS_CODE_ERROR
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			service := tc.service
			if service == "" {
				service = `"checkout"`
			}
			doc := `{"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": ` + service + `}}]},
				"scopeSpans": [{"spans": [` + jsonSpan(1, nil) + ", " + jsonSpan(2, tc.override) + ", " + jsonSpan(3, nil) + `]}]}]}`
			want := request(resourceSpans([]*commonpb.KeyValue{kv("service.name", strV("checkout"))},
				&tracepb.ScopeSpans{Spans: []*tracepb.Span{wantSpan(1), wantSpan(2), wantSpan(3)}}))
			faults := []Fault{FaultNone, tc.fault, FaultNone}
			switch {
			case tc.service != "":
				faults = []Fault{tc.fault, tc.fault, tc.fault}
				want.ResourceSpans[0].Resource = nil // its attributes are dropped
			case tc.edit != nil:
				tc.edit(want.ResourceSpans[0].ScopeSpans[0].Spans[1])
			}
			b := GetBatch()
			defer b.Release()
			if err := b.DecodeJSON([]byte(doc)); err != nil {
				t.Fatalf("DecodeJSON: %v\n%s", err, doc)
			}
			if err := checkFlagged(b, want, nil, faults); err != nil {
				t.Fatalf("%v\n%s", err, doc)
			}
			if err := checkConsistent(b); err != nil {
				t.Fatal(err)
			}
			if f, why := b.Resources[0].Spans[1].Fault(); f != FaultNone && !strings.Contains(why, tc.why) {
				t.Errorf("the flagged span says %q, want it to say %q", why, tc.why)
			}
		})
	}
}

// TestMarshalJSONRoundTrip: what MarshalJSON writes, DecodeJSON reads back
// to the same batch that DecodeProto makes of the binary encoding.
func TestMarshalJSONRoundTrip(t *testing.T) {
	for _, tc := range oracleCases() {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := MarshalJSON(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(doc), `"SPAN_KIND_`) || strings.Contains(string(doc), `"STATUS_CODE_`) {
				t.Fatalf("enum names in OTLP/JSON, which wants integers: %s", doc)
			}
			// The ids must be hex, as OTLP/JSON requires, not base64.
			var root map[string]any
			if err := json.Unmarshal(doc, &root); err != nil {
				t.Fatalf("MarshalJSON wrote invalid JSON: %v", err)
			}
			for _, s := range tc.req.GetResourceSpans() {
				for _, ss := range s.ScopeSpans {
					for _, sp := range ss.Spans {
						if len(sp.TraceId) > 0 && !strings.Contains(string(doc), `"`+hex.EncodeToString(sp.TraceId)+`"`) {
							t.Fatalf("trace id %x not written as hex in %s", sp.TraceId, doc)
						}
					}
				}
			}
			b := GetBatch()
			defer b.Release()
			if err := b.DecodeJSON(doc); err != nil {
				t.Fatalf("DecodeJSON(MarshalJSON(req)): %v\n%s", err, doc)
			}
			if err := checkBatch(b, tc.req, canonicalSizes(tc.req)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDecodeJSONIntoReusedBuffer: the HTTP receiver reads the body into
// Batch.Buffer and DecodeJSON then re-encodes into the same buffer. The
// JSON must be fully consumed before its bytes are overwritten.
func TestDecodeJSONIntoReusedBuffer(t *testing.T) {
	want := otlpJSONWant()
	for range 5 {
		b := GetBatch()
		body := append(b.Buffer(), otlpJSON...)
		if err := b.DecodeJSON(body); err != nil {
			t.Fatal(err)
		}
		if err := checkBatch(b, want, canonicalSizes(want)); err != nil {
			t.Fatal(err)
		}
		b.Release()
	}
}

// countingBudget is a Budget without a limit that records what it lent.
type countingBudget struct{ used int64 }

func (c *countingBudget) Reserve(n, _ int64) bool { c.used += n; return true }
func (c *countingBudget) Free(n int64)            { c.used -= n }

// TestDecodeJSONMemory: what DecodeJSON allocates in all, live or
// garbage, per byte of body, on a typical request and on the worst case,
// spans of many one-letter attributes. The old path through
// map[string]any and protojson allocated 26× and 45×; now 13× and 19×, of
// which the budget is charged 2.3×, the rest being short-lived token
// garbage (an upper bound of the uncharged peak, which jsonScratchFactor
// estimates).
func TestDecodeJSONMemory(t *testing.T) {
	tiny := realisticRequest(20, 8, 2, 7)
	for _, rs := range tiny.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				s.Attributes = nil
				for range 100 {
					s.Attributes = append(s.Attributes, kv("a", strV("b")))
				}
			}
		}
	}
	for _, tc := range []struct {
		name string
		req  *coltracepb.ExportTraceServiceRequest
	}{
		{"typical", realisticRequest(100, 8, 10, 42)},
		{"tiny attributes", tiny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := MarshalJSON(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			var budget countingBudget
			b := new(Batch)
			b.Charge(&budget)
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err = b.DecodeJSON(doc)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			alloc := int64(after.TotalAlloc - before.TotalAlloc)
			t.Logf("body %d bytes: allocated %.2f× the body, charged %.2f×, uncharged %.2f×",
				len(doc), float64(alloc)/float64(len(doc)), float64(budget.used)/float64(len(doc)),
				float64(alloc-budget.used)/float64(len(doc)))
			if !raceEnabled && alloc > 20*int64(len(doc)) {
				t.Errorf("allocated %d bytes, over 20 × the body (%d)", alloc, len(doc))
			}
			b.Release()
		})
	}
}
