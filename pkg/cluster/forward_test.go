package cluster

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// exportServer is a minimal OTLP trace server on loopback that records the
// raw request bytes and metadata of every call and answers with answer.
type exportServer struct {
	addr string

	mu     sync.Mutex
	bodies [][]byte
	mds    []metadata.MD
	answer func(ctx context.Context) (*collectortrace.ExportTraceServiceResponse, error)
}

// rawServerCodec hands the request bytes to the handler undecoded.
type rawServerCodec struct{ proto encoding.CodecV2 }

func (c rawServerCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }
func (c rawServerCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if b, ok := v.(*[]byte); ok {
		*b = data.Materialize()
		return nil
	}
	return c.proto.Unmarshal(data, v)
}
func (rawServerCodec) Name() string { return grpcproto.Name }

func startExportServer(t *testing.T) *exportServer {
	t.Helper()
	s := &exportServer{answer: func(context.Context) (*collectortrace.ExportTraceServiceResponse, error) {
		return &collectortrace.ExportTraceServiceResponse{}, nil
	}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = lis.Addr().String()
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawServerCodec{encoding.GetCodecV2(grpcproto.Name)}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Export",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				var body []byte
				if err := dec(&body); err != nil {
					return nil, err
				}
				md, _ := metadata.FromIncomingContext(ctx)
				s.mu.Lock()
				s.bodies = append(s.bodies, body)
				s.mds = append(s.mds, md)
				answer := s.answer
				s.mu.Unlock()
				return answer(ctx)
			},
		}},
	}, nil)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return s
}

func (s *exportServer) setAnswer(f func(ctx context.Context) (*collectortrace.ExportTraceServiceResponse, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer = f
}

func (s *exportServer) last() ([]byte, metadata.MD, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.bodies) == 0 {
		return nil, nil, 0
	}
	return s.bodies[len(s.bodies)-1], s.mds[len(s.mds)-1], len(s.bodies)
}

// testRequest encodes a request with resources × scopes × spans spans.
func testRequest(t testing.TB, resources, scopes, spans int) []byte {
	t.Helper()
	req := &collectortrace.ExportTraceServiceRequest{}
	for r := 0; r < resources; r++ {
		rs := &tracepb.ResourceSpans{SchemaUrl: "https://example.com/r"}
		for s := 0; s < scopes; s++ {
			ss := &tracepb.ScopeSpans{SchemaUrl: "s"}
			for i := 0; i < spans; i++ {
				ss.Spans = append(ss.Spans, &tracepb.Span{
					TraceId: bytes.Repeat([]byte{byte(r + 1)}, 16), SpanId: bytes.Repeat([]byte{byte(i + 1)}, 8),
					Name: "op-" + strconv.Itoa(i), Kind: tracepb.Span_SPAN_KIND_SERVER,
				})
			}
			rs.ScopeSpans = append(rs.ScopeSpans, ss)
		}
		req.ResourceSpans = append(req.ResourceSpans, rs)
	}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forwarder returns a Cluster that is not started: Forward needs no ring.
func forwarder(t *testing.T, timeout time.Duration) (*Cluster, *prometheus.Registry) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Join = []string{"127.0.0.1:1"}
	cfg.Listen = "127.0.0.1:0"
	cfg.InstanceID = "forwarder"
	cfg.ForwardTimeout = timeout
	reg := prometheus.NewRegistry()
	c, err := New(cfg, "127.0.0.1:4317", testLogger(), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return c, reg
}

func TestForward(t *testing.T) {
	srv := startExportServer(t)
	const timeout = 300 * time.Millisecond
	c, reg := forwarder(t, timeout)
	body := testRequest(t, 2, 2, 3) // 12 spans
	md := map[string]string{"authorization": "Bearer s3cret", "x-scope-orgid": "tenant-a", "x-spangraph-forwarded": "member-0"}

	// Metadata already in the caller's context must not travel along.
	ctx := metadata.AppendToOutgoingContext(context.Background(), "leak", "yes")

	for _, tc := range []struct {
		name         string
		addr         string
		answer       func(ctx context.Context) (*collectortrace.ExportTraceServiceResponse, error)
		wantRejected int64
		wantMsg      string
		wantCode     codes.Code
		wantErrMsg   string
	}{
		{name: "accepted", wantCode: codes.OK},
		{
			name: "partial success",
			answer: func(context.Context) (*collectortrace.ExportTraceServiceResponse, error) {
				return &collectortrace.ExportTraceServiceResponse{PartialSuccess: &collectortrace.ExportTracePartialSuccess{RejectedSpans: 2, ErrorMessage: "2 spans outside ingestion_slack"}}, nil
			},
			wantRejected: 2, wantMsg: "2 spans outside ingestion_slack", wantCode: codes.OK,
		},
		{
			name: "unavailable",
			answer: func(context.Context) (*collectortrace.ExportTraceServiceResponse, error) {
				return nil, status.Error(codes.Unavailable, "shutting down")
			},
			wantCode: codes.Unavailable, wantErrMsg: "shutting down",
		},
		{
			name: "resource exhausted",
			answer: func(context.Context) (*collectortrace.ExportTraceServiceResponse, error) {
				return nil, status.Error(codes.ResourceExhausted, "memory budget full, retry later")
			},
			wantCode: codes.ResourceExhausted, wantErrMsg: "memory budget full, retry later",
		},
		{
			name: "owner too slow: forward_timeout",
			answer: func(ctx context.Context) (*collectortrace.ExportTraceServiceResponse, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
			wantCode: codes.DeadlineExceeded,
		},
		{name: "owner down", addr: "127.0.0.1:" + strconv.Itoa(freePort(t)), wantCode: codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := srv.addr
			if tc.addr != "" {
				addr = tc.addr
			}
			if tc.answer != nil {
				srv.setAnswer(tc.answer)
			}
			_, _, callsBefore := srv.last()
			start := time.Now()
			rejected, msg, err := c.Forward(ctx, addr, md, body)
			took := time.Since(start)
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("Forward error %v (code %s), want code %s", err, got, tc.wantCode)
			}
			if tc.wantErrMsg != "" && status.Convert(err).Message() != tc.wantErrMsg {
				t.Errorf("error message %q, want %q", status.Convert(err).Message(), tc.wantErrMsg)
			}
			if rejected != tc.wantRejected || msg != tc.wantMsg {
				t.Errorf("Forward = %d, %q; want %d, %q", rejected, msg, tc.wantRejected, tc.wantMsg)
			}
			if took > timeout+time.Second {
				t.Errorf("Forward took %s, want it bounded by forward_timeout %s", took, timeout)
			}
			if tc.addr != "" {
				return
			}
			got, gotMD, calls := srv.last()
			if calls != callsBefore+1 {
				t.Fatalf("server saw %d calls, want %d", calls, callsBefore+1)
			}
			if !bytes.Equal(got, body) {
				t.Errorf("server got %d bytes that differ from the %d sent", len(got), len(body))
			}
			for k, v := range md {
				if g := gotMD.Get(k); len(g) != 1 || g[0] != v {
					t.Errorf("metadata %s = %q, want %q", k, g, v)
				}
			}
			if g := gotMD.Get("leak"); len(g) != 0 {
				t.Errorf("caller's outgoing metadata leaked: leak=%q", g)
			}
			srv.setAnswer(func(context.Context) (*collectortrace.ExportTraceServiceResponse, error) {
				return &collectortrace.ExportTraceServiceResponse{}, nil
			})
		})
	}

	for _, w := range []struct {
		metric, outcome string
		want            float64
	}{
		{"spangraph_cluster_forward_requests_total", "success", 1},
		{"spangraph_cluster_forward_requests_total", "partial_success", 1},
		{"spangraph_cluster_forward_requests_total", "Unavailable", 2},
		{"spangraph_cluster_forward_requests_total", "ResourceExhausted", 1},
		{"spangraph_cluster_forward_requests_total", "DeadlineExceeded", 1},
	} {
		if got := metricValue(t, reg, w.metric, "outcome", w.outcome); got != w.want {
			t.Errorf("%s{outcome=%q} = %v, want %v", w.metric, w.outcome, got, w.want)
		}
	}
}

// Concurrent forwards to one member share one connection.
func TestForwardReusesOneConnectionPerMember(t *testing.T) {
	srv := startExportServer(t)
	c, _ := forwarder(t, 5*time.Second)
	body := testRequest(t, 1, 1, 1)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := c.Forward(context.Background(), srv.addr, nil, body); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	c.connsMu.Lock()
	n := len(c.conns)
	c.connsMu.Unlock()
	if n != 1 {
		t.Errorf("%d connections after 20 forwards to one member, want 1", n)
	}
}
