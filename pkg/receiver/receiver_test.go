package receiver

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/otlptest"
)

// recorder is a Consumer that counts spans per tenant and can be made to
// block, to fill the queue.
type recorder struct {
	mu      sync.Mutex
	spans   map[string]int
	names   []string
	block   chan struct{}
	refuse  error
	started chan struct{}
}

func newRecorder() *recorder { return &recorder{spans: map[string]int{}} }

func (r *recorder) Admit(string) error { return r.refuse }

func (r *recorder) Consume(tenant string, b *otlp.Batch) {
	if r.started != nil {
		select {
		case r.started <- struct{}{}:
		default:
		}
	}
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans[tenant] += b.SpanCount
	for _, rs := range b.Resources {
		for _, s := range rs.Spans {
			// Strings of the batch die with it; copy what the test keeps.
			r.names = append(r.names, strings.Clone(s.Name))
		}
	}
}

func (r *recorder) count(tenant string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spans[tenant]
}

func start(t *testing.T, cfg Config, c Consumer) *Receiver {
	t.Helper()
	return startWith(t, cfg, Access{}, c)
}

// startWith starts a receiver that admits requests by access.
func startWith(t *testing.T, cfg Config, access Access, c Consumer) *Receiver {
	t.Helper()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	r, err := New(cfg, access, c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop(context.Background()) })
	return r
}

// spans is a request of n SERVER spans of service "svc", 1 ms each,
// ending at end.
func spans(n int, end time.Time) *coltracepb.ExportTraceServiceRequest {
	var ss []*tracepb.Span
	for i := range n {
		ss = append(ss, otlptest.Span(byte(i+1), "span", tracepb.Span_SPAN_KIND_SERVER, end, time.Millisecond))
	}
	return otlptest.Request(otlptest.Service("svc", ss...))
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func post(t *testing.T, r *Receiver, method string, headers map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+r.HTTPAddr()+"/v1/traces", bytes.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, out
}

func TestHTTP(t *testing.T) {
	now := time.Now()
	valid, _ := proto.Marshal(spans(3, now))
	validJSON, _ := otlp.MarshalJSON(spans(2, now))
	mixed := spans(4, now)
	mixed.ResourceSpans[0].ScopeSpans[0].Spans[0].TraceId = []byte{1, 2, 3}                                // bad id
	mixed.ResourceSpans[0].ScopeSpans[0].Spans[1].EndTimeUnixNano = uint64(now.Add(-time.Hour).UnixNano()) // too old
	mixedBody, _ := proto.Marshal(mixed)
	// 64 MiB of zeros compress to ~64 KiB: a zip bomb for a 1 MiB limit.
	bomb := gz(make([]byte, 64<<20))
	pbHeaders := map[string]string{"Content-Type": "application/x-protobuf"}

	tests := []struct {
		name      string
		method    string
		headers   map[string]string
		body      []byte
		code      int
		accepted  int
		rejected  int64
		msg       string
		tenant    string
		jsonReply bool
	}{
		{name: "protobuf", headers: pbHeaders, body: valid, code: 200, accepted: 3},
		{name: "json", headers: map[string]string{"Content-Type": "application/json; charset=utf-8"}, body: validJSON, code: 200, accepted: 2, jsonReply: true},
		{name: "gzip", headers: map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, body: gz(valid), code: 200, accepted: 3},
		{name: "tenant", headers: map[string]string{"Content-Type": "application/x-protobuf", "X-Scope-OrgID": "team-a"}, body: valid, code: 200, accepted: 3, tenant: "team-a"},
		{name: "partial success", headers: pbHeaders, body: mixedBody, code: 200, accepted: 2, rejected: 2, msg: "2 spans rejected: 1 with invalid ids (trace id must be 16 bytes); 1 ending more than 30s from now"},
		{name: "malformed protobuf", headers: pbHeaders, body: []byte{0x0a, 0xff}, code: 400, msg: "malformed OTLP request"},
		{name: "malformed json", headers: map[string]string{"Content-Type": "application/json"}, body: []byte(`{"resourceSpans":[`), code: 400, msg: "invalid JSON", jsonReply: true},
		{name: "bad gzip", headers: map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, body: []byte("nope"), code: 400, msg: "invalid gzip body"},
		{name: "wrong content type", headers: map[string]string{"Content-Type": "text/plain"}, body: valid, code: 415, msg: "unsupported Content-Type"},
		{name: "unknown encoding", headers: map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "br"}, body: valid, code: 415, msg: "unsupported Content-Encoding"},
		{name: "too large", headers: pbHeaders, body: make([]byte, 2<<20), code: 413, msg: "exceeds max_request_bytes"},
		{name: "zip bomb", headers: map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, body: bomb, code: 413, msg: "after decompression"},
		{name: "bad tenant", headers: map[string]string{"Content-Type": "application/x-protobuf", "X-Scope-OrgID": ".."}, body: valid, code: 400, msg: "invalid X-Scope-OrgID"},
		{name: "GET", method: http.MethodGet, code: 405, msg: "must be POST"},
	}
	cfg := DefaultConfig()
	cfg.MaxRequestBytes = 1 << 20
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			r := start(t, cfg, rec)
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			resp, body := post(t, r, method, tc.headers, tc.body)
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d; body %q", resp.StatusCode, tc.code, body)
			}
			r.Stop(context.Background()) // drains the queue
			tenant := tc.tenant
			if tenant == "" {
				tenant = "single-tenant"
			}
			if got := rec.count(tenant); got != tc.accepted {
				t.Errorf("consumer got %d spans, want %d", got, tc.accepted)
			}
			var msg string
			if tc.code == 200 {
				var out coltracepb.ExportTraceServiceResponse
				var err error
				if tc.jsonReply {
					err = protojson.Unmarshal(body, &out)
				} else {
					err = proto.Unmarshal(body, &out)
				}
				if err != nil {
					t.Fatalf("decoding response: %v", err)
				}
				if got := out.GetPartialSuccess().GetRejectedSpans(); got != tc.rejected {
					t.Errorf("rejected_spans %d, want %d", got, tc.rejected)
				}
				msg = out.GetPartialSuccess().GetErrorMessage()
			} else {
				var st status.Status
				var err error
				if tc.jsonReply {
					err = protojson.Unmarshal(body, &st)
				} else {
					err = proto.Unmarshal(body, &st)
				}
				if err != nil {
					t.Fatalf("error body is not a google.rpc.Status: %v (%q)", err, body)
				}
				msg = st.Message
			}
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q does not contain %q", msg, tc.msg)
			}
		})
	}
}

func TestHTTPCountsRejections(t *testing.T) {
	r := start(t, DefaultConfig(), newRecorder())
	before := testutil.ToFloat64(requestsRejected.WithLabelValues(protocolHTTP, ReasonMediaType))
	post(t, r, http.MethodPost, map[string]string{"Content-Type": "text/plain"}, []byte("x"))
	if got := testutil.ToFloat64(requestsRejected.WithLabelValues(protocolHTTP, ReasonMediaType)) - before; got != 1 {
		t.Errorf("rejections counted %v, want 1", got)
	}
}

func TestBackpressure(t *testing.T) {
	rec := newRecorder()
	rec.block = make(chan struct{})
	rec.started = make(chan struct{}, 1)
	cfg := DefaultConfig()
	cfg.Workers = 1
	body, _ := proto.Marshal(spans(10, time.Now()))
	// Room for about two requests: one in the worker, one queued.
	cfg.MaxRequestBytes = 2 * len(body)
	cfg.MaxQueueBytes = 2 * int(batchCostFor(t, body))
	r := start(t, cfg, rec)
	headers := map[string]string{"Content-Type": "application/x-protobuf"}

	accepted := 0
	var refused *http.Response
	for i := 0; i < 10 && refused == nil; i++ {
		resp, _ := post(t, r, http.MethodPost, headers, body)
		switch resp.StatusCode {
		case 200:
			accepted++
		case 429:
			refused = resp
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if refused == nil {
		t.Fatal("a full queue never answered 429")
	}
	if refused.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	close(rec.block)
	r.Stop(context.Background())
	// Everything answered 200 was processed; nothing else was.
	if got := rec.count("single-tenant"); got != accepted*10 {
		t.Errorf("processed %d spans, want %d (accepted requests × 10)", got, accepted*10)
	}
}

// batchCostFor reads and decodes body as the HTTP handler does, into a
// new batch, to learn what the gate charges for it.
func batchCostFor(t *testing.T, body []byte) int64 {
	b := new(otlp.Batch)
	b.Charge(&gate{limit: 1 << 40})
	defer b.Release()
	buf, err := b.ReadBody(bytes.NewReader(body), len(body), len(body))
	if err == nil {
		err = b.DecodeProto(buf)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Reserved()
}

func TestGRPC(t *testing.T) {
	rec := newRecorder()
	cfg := DefaultConfig()
	cfg.MaxRequestBytes = 1 << 16
	r := start(t, cfg, rec)
	conn := dialGRPC(t, r.GRPCAddr())
	client := coltracepb.NewTraceServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-scope-orgid", "team-b")

	if _, err := client.Export(ctx, spans(5, time.Now())); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Export(ctx, spans(5, time.Now()), grpc.UseCompressor("gzip")); err != nil {
		t.Fatalf("gzip: %v", err)
	}
	old := spans(2, time.Now().Add(-time.Hour))
	resp, err := client.Export(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetPartialSuccess().GetRejectedSpans() != 2 {
		t.Errorf("partial success %v, want 2 rejected", resp.PartialSuccess)
	}

	// A BytesValue encodes as field 1 of the request, so its payload is read
	// as a ResourceSpans: here a truncated one.
	err = conn.Invoke(ctx, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", wrapperspb.Bytes([]byte{0x0a, 0xff}), &coltracepb.ExportTraceServiceResponse{})
	if grpcstatus.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "malformed OTLP request") {
		t.Errorf("malformed request: %v, want InvalidArgument", err)
	}
	// gRPC refuses it while the handler reads the message; it is counted
	// as too large, not as malformed.
	tooLarge := requestsRejected.WithLabelValues(protocolGRPC, ReasonTooLarge)
	before := testutil.ToFloat64(tooLarge)
	big := spans(2000, time.Now())
	if _, err := client.Export(ctx, big); grpcstatus.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized request: %v, want ResourceExhausted", err)
	}
	if _, err := client.Export(ctx, big, grpc.UseCompressor("gzip")); grpcstatus.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized request after gunzip: %v, want ResourceExhausted", err)
	}
	// Under CPU load the client can see the refusal before the handler
	// that counts it has returned, so the count is waited for.
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(tooLarge)-before < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := testutil.ToFloat64(tooLarge) - before; got != 2 {
		t.Errorf("spangraph_receiver_requests_rejected_total{protocol=grpc,reason=too_large} rose by %v, want 2", got)
	}
	bad := metadata.AppendToOutgoingContext(context.Background(), "x-scope-orgid", "../etc")
	if _, err := client.Export(bad, spans(1, time.Now())); grpcstatus.Code(err) != codes.InvalidArgument {
		t.Errorf("bad tenant: %v, want InvalidArgument", err)
	}

	rec.refuse = errors.New("max_tenants reached")
	if _, err := client.Export(ctx, spans(1, time.Now())); grpcstatus.Code(err) != codes.Unavailable {
		t.Errorf("refused tenant: %v, want Unavailable", err)
	}
	r.Stop(context.Background())
	if got := rec.count("team-b"); got != 10 {
		t.Errorf("consumer got %d spans, want 10", got)
	}
}

// dialGRPC connects to a receiver's OTLP/gRPC address, closed when the
// test ends.
func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
