package otlp

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// DecodeJSON decodes an ExportTraceServiceRequest in the OTLP/JSON encoding
// into b, which must be empty.
//
// OTLP/JSON differs from the canonical protobuf JSON mapping in one way that
// matters: trace and span ids are hex, not base64. protojson already accepts
// the rest (enums as numbers, int64 as strings, both field-name spellings),
// so the ids are rewritten and the request goes through protojson, then
// through the same protobuf decoder as binary requests. JSON is the slow
// path; exporters that care about speed send protobuf.
func (b *Batch) DecodeJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return malformed("invalid JSON: %v", err)
	}
	if dec.More() {
		return malformed("invalid JSON: data after the top-level value")
	}
	root, ok := doc.(map[string]any)
	if !ok {
		return malformed("the request must be a JSON object")
	}
	if err := rewriteIDs(root, hexToBase64); err != nil {
		return err
	}
	canonical, err := json.Marshal(root)
	if err != nil {
		return malformed("re-encoding JSON: %v", err)
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(canonical, &req); err != nil {
		return malformed("%v", err)
	}
	buf, err := proto.MarshalOptions{}.MarshalAppend(b.Buffer(), &req)
	if err != nil {
		return malformed("%v", err)
	}
	return b.DecodeProto(buf)
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

func hexToBase64(name, id string) (string, error) {
	raw, err := hex.DecodeString(id)
	if err != nil {
		return "", malformed("%s %q is not hex: %v", name, id, err)
	}
	return base64.StdEncoding.EncodeToString(raw), nil
}

func base64ToHex(name, id string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(id)
	if err != nil {
		return "", fmt.Errorf("%s %q is not base64: %w", name, id, err)
	}
	return hex.EncodeToString(raw), nil
}

// MarshalJSON encodes a request in OTLP/JSON: protobuf JSON with hex ids.
func MarshalJSON(req *coltracepb.ExportTraceServiceRequest) ([]byte, error) {
	canonical, err := protojson.Marshal(req)
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
