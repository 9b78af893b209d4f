package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/otlptest"
)

// invalidMarker stands for text that is not UTF-8, which no generated
// encoder writes: it is replaced in the encoded request, by as many bytes
// in protobuf and by a lone surrogate escape in JSON.
const invalidMarker = "~INVALID~"

var (
	invalidProto = []byte("in\xc3(valid")
	invalidJSON  = []byte(`in\ud800valid`)
)

// namedSpan is a SERVER span of 1 ms ending at end, with an http.route
// and ids made from its name.
func namedSpan(name string, end time.Time) *tracepb.Span {
	s := otlptest.Span(byte(len(name))+name[len(name)-1], name, tracepb.Span_SPAN_KIND_SERVER, end, time.Millisecond,
		otlptest.Str("http.route", "/"+name))
	s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_OK}
	return s
}

// TestRefusesOnlyTheBadSpans sends, over each transport, three spans of
// which the second is wrong in one way (or a second resource that is):
// only what is wrong is refused, with partial success, and counted under
// its reason.
func TestRefusesOnlyTheBadSpans(t *testing.T) {
	now := time.Now()
	const httpProto, httpJSON, grpcProto = "http-protobuf", "http-json", "grpc"
	cases := []struct {
		name string
		edit func(*tracepb.Span) // of span-1
		// jsonEdit, when set, edits span-1 in the OTLP/JSON form, and the
		// case is sent as JSON only.
		jsonEdit func(span map[string]any)
		// badService adds a resource of two spans with this service.name.
		badService string
		accepted   []string
		rejected   int64
		reason     string
		msg        string
	}{
		{name: "start time 0", edit: func(s *tracepb.Span) { s.StartTimeUnixNano = 0 },
			accepted: []string{"span-0", "span-2"}, rejected: 1, reason: ReasonNoStartTime,
			msg: "1 spans rejected: 1 without a start time (start_time_unix_nano is 0)"},
		// Tempo and the Collector take such a span with a latency of 0.
		{name: "end before start", edit: func(s *tracepb.Span) { s.StartTimeUnixNano = s.EndTimeUnixNano + 1 },
			accepted: []string{"span-0", "span-1", "span-2"}},
		{name: "name not UTF-8", edit: func(s *tracepb.Span) { s.Name = "span-1 " + invalidMarker },
			accepted: []string{"span-0", "span-2"}, rejected: 1, reason: ReasonInvalidUTF8,
			msg: "1 spans rejected: 1 with text that is not UTF-8 (span name is not valid UTF-8)"},
		{name: "attribute value not UTF-8", edit: func(s *tracepb.Span) {
			s.Attributes[0].Value.Value = &commonpb.AnyValue_StringValue{StringValue: invalidMarker}
		},
			accepted: []string{"span-0", "span-2"}, rejected: 1, reason: ReasonInvalidUTF8,
			msg: "(a span attribute string value is not valid UTF-8)"},
		{name: "service.name not UTF-8", badService: "svc " + invalidMarker,
			accepted: []string{"span-0", "span-1", "span-2"}, rejected: 2, reason: ReasonInvalidUTF8,
			msg: "2 spans rejected: 2 with text that is not UTF-8 (a resource attribute string value is not valid UTF-8)"},
		{name: "span id not hex", jsonEdit: func(s map[string]any) { s["spanId"] = "zz" + s["spanId"].(string)[2:] },
			accepted: []string{"span-0", "span-2"}, rejected: 1, reason: ReasonInvalidID,
			msg: "1 spans rejected: 1 with invalid ids (spanId is not a hex string)"},
		{name: "unknown kind name", jsonEdit: func(s map[string]any) { s["kind"] = "SPAN_KIND_BOGUS" },
			accepted: []string{"span-0", "span-2"}, rejected: 1, reason: ReasonInvalidEnum,
			msg: "1 spans rejected: 1 with an enum name that OTLP/JSON does not define (kind is not a SpanKind name (OTLP/JSON wants the integer value))"},
		{name: "unknown status code name", jsonEdit: func(s map[string]any) { s["status"] = map[string]any{"code": "STATUS_CODE_BOGUS"} },
			accepted: []string{"span-0", "span-2"}, rejected: 1, reason: ReasonInvalidEnum,
			msg: "(status code is not a StatusCode name"},
		{name: "known kind name", jsonEdit: func(s map[string]any) { s["kind"] = "SPAN_KIND_CLIENT" },
			accepted: []string{"span-0", "span-1", "span-2"}},
	}
	for _, tc := range cases {
		req := otlptest.Request(otlptest.Service("svc", namedSpan("span-0", now), namedSpan("span-1", now), namedSpan("span-2", now)))
		if tc.edit != nil {
			tc.edit(req.ResourceSpans[0].ScopeSpans[0].Spans[1])
		}
		if tc.badService != "" {
			req.ResourceSpans = append(req.ResourceSpans, otlptest.Service(tc.badService, namedSpan("bad-0", now), namedSpan("bad-1", now)))
		}
		transports := []string{httpProto, httpJSON, grpcProto}
		if tc.jsonEdit != nil {
			transports = []string{httpJSON}
		}
		for _, transport := range transports {
			t.Run(tc.name+"/"+transport, func(t *testing.T) {
				rec := newRecorder()
				r := start(t, DefaultConfig(), rec)
				protocol := protocolHTTP
				if transport == grpcProto {
					protocol = protocolGRPC
				}
				counted := func() float64 {
					if tc.reason == "" {
						return 0
					}
					return testutil.ToFloat64(spansRejected.WithLabelValues("single-tenant", protocol, tc.reason))
				}
				before := counted()

				resp := &coltracepb.ExportTraceServiceResponse{}
				switch transport {
				case httpProto, grpcProto:
					body, err := proto.Marshal(req)
					if err != nil {
						t.Fatal(err)
					}
					body = bytes.ReplaceAll(body, []byte(invalidMarker), invalidProto)
					if transport == grpcProto {
						resp = exportRaw(t, r, body)
						break
					}
					httpResp, out := post(t, r, http.MethodPost, map[string]string{"Content-Type": "application/x-protobuf"}, body)
					if httpResp.StatusCode != http.StatusOK {
						t.Fatalf("status %d: %q", httpResp.StatusCode, out)
					}
					if err := proto.Unmarshal(out, resp); err != nil {
						t.Fatal(err)
					}
				case httpJSON:
					body, err := otlp.MarshalJSON(req)
					if err != nil {
						t.Fatal(err)
					}
					if tc.jsonEdit != nil {
						body = editJSONSpan(t, body, tc.jsonEdit)
					}
					body = bytes.ReplaceAll(body, []byte(invalidMarker), invalidJSON)
					httpResp, out := post(t, r, http.MethodPost, map[string]string{"Content-Type": "application/json"}, body)
					if httpResp.StatusCode != http.StatusOK {
						t.Fatalf("status %d: %q\n%s", httpResp.StatusCode, out, body)
					}
					if err := protojson.Unmarshal(out, resp); err != nil {
						t.Fatal(err)
					}
				}
				r.Stop(context.Background()) // drains the queue

				if got := resp.GetPartialSuccess().GetRejectedSpans(); got != tc.rejected {
					t.Errorf("rejected_spans %d, want %d (%q)", got, tc.rejected, resp.GetPartialSuccess().GetErrorMessage())
				}
				if msg := resp.GetPartialSuccess().GetErrorMessage(); !strings.Contains(msg, tc.msg) {
					t.Errorf("message %q does not contain %q", msg, tc.msg)
				}
				rec.mu.Lock()
				names := slices.Sorted(slices.Values(rec.names))
				rec.mu.Unlock()
				if !slices.Equal(names, tc.accepted) {
					t.Errorf("processed %q, want %q", names, tc.accepted)
				}
				if got := counted() - before; got != float64(tc.rejected) {
					t.Errorf("spangraph_receiver_spans_rejected_total{protocol=%q,reason=%q} rose by %v, want %d", protocol, tc.reason, got, tc.rejected)
				}
			})
		}
	}
}

// exportRaw sends body as an OTLP/gRPC export request.
func exportRaw(t *testing.T, r *Receiver, body []byte) *coltracepb.ExportTraceServiceResponse {
	t.Helper()
	conn := dialGRPC(t, r.GRPCAddr())
	resp := &coltracepb.ExportTraceServiceResponse{}
	msg := rawBytes(body) // proto.Marshal would refuse to write it
	if err := conn.Invoke(context.Background(), "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
		&msg, resp, grpc.ForceCodecV2(rawClientCodec{})); err != nil {
		t.Fatal(err)
	}
	return resp
}

// editJSONSpan applies edit to the second span of an OTLP/JSON request.
func editJSONSpan(t *testing.T, doc []byte, edit func(map[string]any)) []byte {
	t.Helper()
	var root map[string]any
	if err := json.Unmarshal(doc, &root); err != nil {
		t.Fatal(err)
	}
	span := root["resourceSpans"].([]any)[0].(map[string]any)["scopeSpans"].([]any)[0].(map[string]any)["spans"].([]any)[1].(map[string]any)
	edit(span)
	out, err := json.Marshal(root)
	if err != nil {
		t.Fatal(fmt.Errorf("re-encoding the edited request: %w", err))
	}
	return out
}
