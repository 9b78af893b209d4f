package receiver

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/otlptest"
)

// bytesCodec sends []byte as the message, as pkg/cluster's forwarder does.
type bytesCodec struct{}

func (bytesCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (bytesCodec) Unmarshal(data []byte, v any) error {
	return proto.Unmarshal(data, v.(*coltracepb.ExportTraceServiceResponse))
}
func (bytesCodec) Name() string { return "proto" }

// parityRing is a two-instance ring over real receivers: the owner of a
// trace is given by its last byte's parity. Forward is a real gRPC call.
type parityRing struct {
	self    int
	addrs   [2]string
	down    [2]bool
	members map[string]bool
	mu      sync.Mutex
	sentMD  []map[string]string
}

func (p *parityRing) Owner(_ string, id [16]byte) (string, bool, error) {
	i := int(id[15] % 2)
	return p.addrs[i], i == p.self, nil
}
func (p *parityRing) IsMember(host string) bool { return p.members[host] }
func (p *parityRing) InstanceID() string        { return []string{"a", "b"}[p.self] }
func (p *parityRing) Forward(ctx context.Context, addr string, md map[string]string, body []byte) (int64, string, error) {
	p.mu.Lock()
	p.sentMD = append(p.sentMD, md)
	p.mu.Unlock()
	if p.down[0] && addr == p.addrs[0] || p.down[1] && addr == p.addrs[1] {
		return 0, "", grpcstatus.Error(codes.Unavailable, "connection refused")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	var out coltracepb.ExportTraceServiceResponse
	ctx = metadata.NewOutgoingContext(ctx, metadata.New(md))
	err = conn.Invoke(ctx, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", &body, &out, grpc.ForceCodec(bytesCodec{}))
	return out.GetPartialSuccess().GetRejectedSpans(), out.GetPartialSuccess().GetErrorMessage(), err
}

// traces is a request of n traces of a client and a server span each, in
// two services; trace i's id ends in byte i.
func traces(n int, end time.Time) *coltracepb.ExportTraceServiceRequest {
	var client, server []*tracepb.Span
	for i := range n {
		c := otlptest.Span(byte(2*i+1), "call", tracepb.Span_SPAN_KIND_CLIENT, end, 2*time.Millisecond)
		s := otlptest.Span(byte(2*i+2), "handle", tracepb.Span_SPAN_KIND_SERVER, end, time.Millisecond)
		id := otlptest.TraceID(uint64(i))
		c.TraceId, s.TraceId = id, id
		s.ParentSpanId = c.SpanId
		client, server = append(client, c), append(server, s)
	}
	return otlptest.Request(otlptest.Service("front", client...), otlptest.Service("back", server...))
}

// traceRecorder counts the spans of each trace parity a receiver got.
type traceRecorder struct {
	recorder
	parity [2]int
}

func (r *traceRecorder) Consume(tenant string, b *otlp.Batch) {
	r.mu.Lock()
	for _, rs := range b.Resources {
		for _, s := range rs.Spans {
			r.parity[s.TraceID[15]%2]++
		}
	}
	r.mu.Unlock()
	r.recorder.Consume(tenant, b)
}

func (r *traceRecorder) got() [2]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.parity
}

func pair(t *testing.T, access Access) (rings [2]*parityRing, recs [2]*traceRecorder, rcvs [2]*Receiver) {
	t.Helper()
	for i := range 2 {
		recs[i] = &traceRecorder{recorder: *newRecorder()}
		rcvs[i] = startWith(t, DefaultConfig(), access, recs[i])
	}
	for i := range 2 {
		rings[i] = &parityRing{self: i, addrs: [2]string{rcvs[0].GRPCAddr(), rcvs[1].GRPCAddr()}, members: map[string]bool{"127.0.0.1": true}}
		rcvs[i].SetRouter(rings[i])
		rcvs[i].StartRouting()
	}
	return rings, recs, rcvs
}

// Every span reaches the instance that owns its trace, whichever instance
// the sender used and however it sent it.
func TestRouteByTraceID(t *testing.T) {
	_, recs, rcvs := pair(t, Access{})
	req := traces(20, time.Now())
	resp, body := post(t, rcvs[0], http.MethodPost, map[string]string{"Content-Type": "application/x-protobuf", "X-Scope-OrgID": "team-r"}, otlptest.Marshal(t, req))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d: %s", resp.StatusCode, body)
	}
	conn := dialGRPC(t, rcvs[1].GRPCAddr())
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-scope-orgid", "team-r")
	if _, err := coltracepb.NewTraceServiceClient(conn).Export(ctx, req); err != nil {
		t.Fatal(err)
	}
	// OTLP/JSON is decoded whole, then split (planBatch rather than
	// planRaw).
	js, err := otlp.MarshalJSON(req)
	if err != nil {
		t.Fatal(err)
	}
	resp, body = post(t, rcvs[1], http.MethodPost, map[string]string{"Content-Type": "application/json", "X-Scope-OrgID": "team-r"}, js)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d: %s", resp.StatusCode, body)
	}
	// A trace's spans one after another, as a service's SDK sends them:
	// they share one ring lookup, and their part must count them all.
	var spans []*tracepb.Span
	for _, ss := range req.ResourceSpans {
		spans = append(spans, ss.ScopeSpans[0].Spans...)
	}
	sort.SliceStable(spans, func(i, j int) bool { return bytes.Compare(spans[i].TraceId, spans[j].TraceId) < 0 })
	resp, body = post(t, rcvs[0], http.MethodPost, map[string]string{"Content-Type": "application/x-protobuf", "X-Scope-OrgID": "team-r"}, otlptest.Marshal(t, otlptest.Request(otlptest.Service("both", spans...))))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d: %s", resp.StatusCode, body)
	}
	// The owner has the spans once the forward returns; its workers may
	// still be processing them.
	waitFor(t, func() bool { return recs[0].count("team-r")+recs[1].count("team-r") == 160 })
	if a, b := recs[0].got(), recs[1].got(); a != [2]int{80, 0} || b != [2]int{0, 80} {
		t.Errorf("instance a got %v spans by trace parity, b got %v; want all even traces on a, odd on b", a, b)
	}
	if got := testutil.ToFloat64(spansReceived.WithLabelValues("team-r", protocolForwarded)); got != 80 {
		t.Errorf("spans received as forwarded: %v, want 80", got)
	}
	// The senders count the spans of each part; a trace's spans come one
	// after another and share one ring lookup.
	if got := testutil.ToFloat64(spansForwarded.WithLabelValues("team-r")); got != 80 {
		t.Errorf("spans counted as forwarded by the senders: %v, want 80", got)
	}
}

// A forwarded mark from an address outside the ring is ignored: the
// request is routed like any other.
func TestForwardedMarkOnlyFromMembers(t *testing.T) {
	rings, recs, rcvs := pair(t, Access{})
	for _, members := range []map[string]bool{{"127.0.0.1": true}, {}} {
		rings[1].members = members
		before := recs[0].got()
		conn := dialGRPC(t, rcvs[1].GRPCAddr())
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-scope-orgid", "team-m", ForwardedKey, "a")
		// Only even traces: instance a owns them all.
		if _, err := coltracepb.NewTraceServiceClient(conn).Export(ctx, traces(1, time.Now())); err != nil {
			t.Fatal(err)
		}
		if members["127.0.0.1"] {
			waitFor(t, func() bool { return recs[1].count("team-m") == 2 })
			if recs[0].got() != before {
				t.Error("a request marked forwarded by a member was forwarded again")
			}
		} else {
			waitFor(t, func() bool { return recs[0].got()[0] == before[0]+2 })
		}
	}
}

// The owner sees the sender's credentials and finds the same tenant.
func TestForwardKeepsCredentials(t *testing.T) {
	a, err := auth.New(auth.Config{Tenants: []auth.TenantConfig{{ID: "team-x", BearerTokens: []auth.Secret{"s3cret"}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, recs, rcvs := pair(t, Access{Auth: a})
	resp, body := post(t, rcvs[0], http.MethodPost, map[string]string{"Content-Type": "application/x-protobuf", "Authorization": "Bearer s3cret"}, otlptest.Marshal(t, traces(4, time.Now())))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d: %s", resp.StatusCode, body)
	}
	waitFor(t, func() bool { return recs[1].count("team-x") == 4 })
}

// A part whose owner cannot be reached is refused alone (partial
// success, counted); when no part could be delivered the whole request is
// refused with a retryable answer, since nothing of it was counted.
func TestForwardFailure(t *testing.T) {
	rings, recs, rcvs := pair(t, Access{})
	rings[0].down[1] = true
	failed := spansRejected.WithLabelValues("team-f", protocolHTTP, ReasonForwardFailed)
	before := testutil.ToFloat64(failed)

	resp, body := post(t, rcvs[0], http.MethodPost, map[string]string{"Content-Type": "application/x-protobuf", "X-Scope-OrgID": "team-f"}, otlptest.Marshal(t, traces(10, time.Now())))
	var out coltracepb.ExportTraceServiceResponse
	if err := proto.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || out.GetPartialSuccess().GetRejectedSpans() != 10 || !strings.Contains(out.GetPartialSuccess().GetErrorMessage(), "could not be forwarded") {
		t.Fatalf("mixed request with one owner down: HTTP %d %s, want 200 with 10 spans rejected", resp.StatusCode, body)
	}
	waitFor(t, func() bool { return recs[0].count("team-f") == 10 })
	if got := testutil.ToFloat64(failed) - before; got != 10 {
		t.Errorf("forward_failed counted %v spans, want 10", got)
	}

	odd := traces(2, time.Now())
	odd.ResourceSpans[0].ScopeSpans[0].Spans = odd.ResourceSpans[0].ScopeSpans[0].Spans[1:]
	odd.ResourceSpans[1].ScopeSpans[0].Spans = odd.ResourceSpans[1].ScopeSpans[0].Spans[1:]
	resp, body = post(t, rcvs[0], http.MethodPost, map[string]string{"Content-Type": "application/x-protobuf", "X-Scope-OrgID": "team-f"}, otlptest.Marshal(t, odd))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("request for the unreachable owner only: HTTP %d %s, want 503 with Retry-After", resp.StatusCode, body)
	}
	if recs[1].count("team-f") != 0 {
		t.Error("the unreachable owner got spans")
	}
}

// An instance that waits for its ring refuses spans, retryably, until it
// has one.
func TestAwaitRouter(t *testing.T) {
	rec := newRecorder()
	cfg := DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	r, err := New(cfg, Access{}, rec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r.AwaitRouter()
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	defer r.Stop(context.Background())
	resp, body := post(t, r, http.MethodPost, map[string]string{"Content-Type": "application/x-protobuf"}, otlptest.Marshal(t, traces(1, time.Now())))
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "joining the ring") {
		t.Fatalf("before the ring: HTTP %d %s, want 503", resp.StatusCode, body)
	}
	// Joining: the members' forwards are taken, the senders' still not.
	r.SetRouter(&parityRing{self: 0, addrs: [2]string{r.GRPCAddr(), r.GRPCAddr()}, members: map[string]bool{"127.0.0.1": true}})
	conn := dialGRPC(t, r.GRPCAddr())
	ctx := metadata.AppendToOutgoingContext(context.Background(), ForwardedKey, "b")
	if _, err := coltracepb.NewTraceServiceClient(conn).Export(ctx, traces(1, time.Now())); err != nil {
		t.Errorf("a member's forward while joining: %v", err)
	}
	resp, body = post(t, r, http.MethodPost, map[string]string{"Content-Type": "application/x-protobuf"}, otlptest.Marshal(t, traces(1, time.Now())))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a sender while joining: HTTP %d %s, want 503", resp.StatusCode, body)
	}
	r.StartRouting()
	resp, body = post(t, r, http.MethodPost, map[string]string{"Content-Type": "application/x-protobuf"}, otlptest.Marshal(t, spans(3, time.Now())))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after the ring: HTTP %d %s", resp.StatusCode, body)
	}
	waitFor(t, func() bool { return rec.count("single-tenant") == 5 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A request whose framing breaks after spans another instance owns is
// refused as malformed, whole, like any other: nothing is forwarded.
func TestRouteMalformed(t *testing.T) {
	_, recs, rcvs := pair(t, Access{})
	good := traces(1, time.Now()) // trace 0: this instance's
	// A second resource: a span of trace 1 (the other instance's), then a
	// span field that claims 5 bytes and has 1.
	odd := traces(2, time.Now()).ResourceSpans[0].ScopeSpans[0].Spans[1]
	scope := protowire.AppendTag(nil, 2, protowire.BytesType)
	scope = protowire.AppendBytes(scope, otlptest.Marshal(t, odd))
	scope = append(scope, 0x12, 0x05, 0x0a)
	rs := protowire.AppendTag(nil, 2, protowire.BytesType)
	rs = protowire.AppendBytes(rs, scope)
	body := otlptest.Marshal(t, good)
	body = protowire.AppendTag(body, 1, protowire.BytesType)
	body = protowire.AppendBytes(body, rs)
	resp, out := post(t, rcvs[0], http.MethodPost, map[string]string{"Content-Type": "application/x-protobuf", "X-Scope-OrgID": "team-bad"}, body)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("HTTP %d %s, want 400", resp.StatusCode, out)
	}
	// Over gRPC a panic here would take the process down.
	conn := dialGRPC(t, rcvs[0].GRPCAddr())
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-scope-orgid", "team-bad")
	var reply coltracepb.ExportTraceServiceResponse
	err := conn.Invoke(ctx, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", &body, &reply, grpc.ForceCodec(bytesCodec{}))
	if grpcstatus.Code(err) != codes.InvalidArgument {
		t.Errorf("over gRPC: %v, want InvalidArgument", err)
	}
	if recs[0].count("team-bad")+recs[1].count("team-bad") != 0 {
		t.Error("spans of a malformed request were processed")
	}
}

// A draining member (leaving its ring) refuses its senders, retryably, and
// still takes what the other members forward to it.
func TestDrain(t *testing.T) {
	_, recs, rcvs := pair(t, Access{})
	rcvs[1].Drain()
	resp, body := post(t, rcvs[1], http.MethodPost, map[string]string{"Content-Type": "application/x-protobuf", "X-Scope-OrgID": "team-d"}, otlptest.Marshal(t, traces(4, time.Now())))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "shutting down") {
		t.Fatalf("a sender of a draining member: HTTP %d %s, want 503 with Retry-After", resp.StatusCode, body)
	}
	// Instance a still forwards b's traces to it.
	resp, body = post(t, rcvs[0], http.MethodPost, map[string]string{"Content-Type": "application/x-protobuf", "X-Scope-OrgID": "team-d"}, otlptest.Marshal(t, traces(4, time.Now())))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d %s", resp.StatusCode, body)
	}
	waitFor(t, func() bool { return recs[0].count("team-d") == 4 && recs[1].count("team-d") == 4 })
}
