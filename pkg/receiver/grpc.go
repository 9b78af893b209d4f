package receiver

import (
	"context"
	"crypto/tls"
	"errors"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip" // OTLP exporters may gzip requests.
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/otlp"
)

// rawRequest receives the undecoded request bytes from rawCodec, so that
// gRPC requests go through the same fast decoder as HTTP ones instead of
// being unmarshalled into generated types first. Decoding happens in the
// handler: gRPC turns any codec error into Internal, but a malformed
// request is the sender's InvalidArgument.
type rawRequest struct {
	batch *otlp.Batch
	body  []byte
	// err is the gate's refusal, kept for the handler to answer: an error
	// returned by the codec would reach the sender as Internal.
	err error
}

// rawCodec copies request bytes into a pooled batch buffer for
// *rawRequest, charged to the gate first, and uses the protobuf codec for
// everything else.
type rawCodec struct {
	proto encoding.CodecV2
	gate  *gate
}

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	raw, ok := v.(*rawRequest)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	// data is freed when Unmarshal returns, so copy it into the pooled
	// batch's buffer.
	raw.batch = otlp.GetBatch()
	raw.batch.Charge(c.gate)
	if raw.body, raw.err = raw.batch.BufferFor(data.Len()); raw.err != nil {
		return nil
	}
	for _, part := range data {
		raw.body = append(raw.body, part.ReadOnlyData()...)
	}
	return nil
}

func (rawCodec) Name() string { return proto.Name }

// traceServiceDesc is opentelemetry.proto.collector.trace.v1.TraceService,
// written by hand to hand rawRequest to the handler.
var traceServiceDesc = grpc.ServiceDesc{
	ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Export",
		// The interceptor (authentication) must be called here: a
		// hand-written handler that ignores it is never authenticated.
		// The request is decoded inside export, after the interceptor, so
		// an unauthenticated body is never copied or decoded.
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			export := func(ctx context.Context, _ any) (any, error) { return srv.(*Receiver).export(ctx, dec) }
			if interceptor == nil {
				return export(ctx, nil)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/opentelemetry.proto.collector.trace.v1.TraceService/Export"}
			return interceptor(ctx, nil, info, export)
		},
	}},
	Metadata: "opentelemetry/proto/collector/trace/v1/trace_service.proto",
}

func (r *Receiver) newGRPCServer(tlsCfg *tls.Config) *grpc.Server {
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(rawCodec{proto: encoding.GetCodecV2(proto.Name), gate: r.gate}),
		// Idle, dead and everlasting connections are closed; with the
		// stream cap, they bound what one client can hold.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     r.cfg.GRPCMaxConnectionIdle,
			MaxConnectionAge:      r.cfg.GRPCMaxConnectionAge,
			MaxConnectionAgeGrace: r.cfg.GRPCMaxConnectionAgeGrace,
			Time:                  r.cfg.GRPCKeepaliveTime,
			Timeout:               r.cfg.GRPCKeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             r.cfg.GRPCKeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.MaxConcurrentStreams(uint32(r.cfg.GRPCMaxConcurrentStreams)),
		// gRPC applies this limit after decompression too, which keeps zip
		// bombs out; the refusal is ResourceExhausted, from dec in export.
		grpc.MaxRecvMsgSize(r.cfg.MaxRequestBytes),
		// Windows that take a typical export (a ring member's forwarded
		// part is hundreds of kilobytes) without waiting for a window
		// update, instead of 64 KiB growing by estimates: the ring's CPU
		// per span fell 10 % (BENCHMARKS.md). They also bound what one
		// connection has in flight, 2 MiB, where the estimates let it
		// grow to 16 MiB.
		grpc.InitialWindowSize(1 << 20), grpc.InitialConnWindowSize(2 << 20),
		// Always installed: with auth off (nil) it still puts the
		// X-Scope-OrgID tenant in the context.
		grpc.UnaryInterceptor(r.access.Auth.UnaryServerInterceptor(func(reason string) {
			requestsRejected.WithLabelValues(protocolGRPC, reason).Inc()
		})),
	}
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	s := grpc.NewServer(opts...)
	s.RegisterService(&traceServiceDesc, r)
	return s
}

func (r *Receiver) export(ctx context.Context, dec func(any) error) (*coltracepb.ExportTraceServiceResponse, error) {
	tenant, ok := auth.TenantFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no tenant: the auth interceptor did not run")
	}
	// The transport reads a whole message before the codec can charge it:
	// when the gate is already full, refuse without reading.
	if r.gate.full() {
		return nil, r.refuseFull(protocolGRPC, 0).GRPCStatus().Err()
	}
	var raw rawRequest
	if err := dec(&raw); err != nil {
		// gRPC reads the message here, so its max_request_bytes refusal
		// (before or after decompression) arrives as ResourceExhausted.
		reason := ReasonMalformed
		if status.Code(err) == codes.ResourceExhausted {
			reason = ReasonTooLarge
		}
		requestsRejected.WithLabelValues(protocolGRPC, reason).Inc()
		return nil, err
	}
	o := r.grpcOrigin(ctx)
	err := raw.err
	var pl *plan
	if err == nil {
		rt, _ := r.routerOf(o) // a refusal is accept's to give
		raw.batch, pl, err = r.planRaw(rt, o, tenant, protocolGRPC, raw.batch, raw.body)
		if err == nil && pl == nil {
			err = raw.batch.DecodeProto(raw.body)
		}
	}
	if err != nil {
		raw.batch.Release()
		var rf Refusal
		if errors.As(err, &rf) {
			return nil, rf.GRPCStatus().Err()
		}
		if me := r.refuseMemory(protocolGRPC, err); me != nil {
			return nil, me.GRPCStatus().Err()
		}
		requestsRejected.WithLabelValues(protocolGRPC, ReasonMalformed).Inc()
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	rejected, reason, err := r.accept(o, tenant, protocolGRPC, raw.batch, pl)
	if err != nil {
		raw.batch.Release()
		var le Refusal
		if errors.As(err, &le) {
			// The refusal's own code: ResourceExhausted, with RetryInfo
			// when a retry can succeed.
			return nil, le.GRPCStatus().Err()
		}
		// Unavailable is what OTLP exporters retry without RetryInfo.
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return otlp.PartialSuccess(rejected, reason), nil
}
