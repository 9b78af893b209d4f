package cluster

import (
	"context"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// exportMethod is OTLP's trace export RPC, which every member serves on its
// OTLP gRPC listener.
const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// rawBody carries an already-encoded ExportTraceServiceRequest through
// rawClientCodec, so forwarding sends the bytes the receiver split out
// without decoding and re-encoding them.
type rawBody struct{ b []byte }

// rawClientCodec sends *rawBody as is and uses the protobuf codec for
// everything else (the response). Its name is "proto", so the request is an
// ordinary application/grpc+proto call any OTLP server accepts.
type rawClientCodec struct{ proto encoding.CodecV2 }

func (c rawClientCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*rawBody); ok {
		return mem.BufferSlice{mem.SliceBuffer(r.b)}, nil
	}
	return c.proto.Marshal(v)
}

func (c rawClientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return c.proto.Unmarshal(data, v)
}

func (rawClientCodec) Name() string { return proto.Name }

// Forward sends one encoded OTLP ExportTraceServiceRequest (body) to the
// member at addr, with md as the outgoing gRPC metadata (the caller passes
// the client's authorization, x-scope-orgid and its forwarded marker;
// nothing else of ctx's metadata is sent). It returns the owner's
// partial_success (rejected span count and message), or the gRPC error as
// is, status code preserved. Each call is bounded by forward_timeout; one
// connection per member is kept and closed when the member leaves.
func (c *Cluster) Forward(ctx context.Context, addr string, md map[string]string, body []byte) (rejected int64, msg string, err error) {
	start := time.Now()
	cc, err := c.conn(addr)
	if err != nil {
		c.metrics.observeForward(status.Code(err).String(), 0, time.Since(start))
		return 0, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ForwardTimeout)
	defer cancel()
	ctx = metadata.NewOutgoingContext(ctx, metadata.New(md))

	var resp collectortrace.ExportTraceServiceResponse
	err = cc.Invoke(ctx, exportMethod, &rawBody{body}, &resp)
	took := time.Since(start)
	if err != nil {
		c.metrics.observeForward(status.Code(err).String(), len(body), took)
		return 0, "", err
	}
	ps := resp.GetPartialSuccess()
	rejected, msg = ps.GetRejectedSpans(), ps.GetErrorMessage()
	outcome := outcomeSuccess
	if rejected > 0 || msg != "" {
		outcome = outcomePartialSuccess
	}
	c.metrics.observeForward(outcome, len(body), took)
	return rejected, msg, nil
}

// conn returns the connection to addr, dialing it (lazily: grpc.NewClient
// connects on first use) when there is none.
func (c *Cluster) conn(addr string) (*grpc.ClientConn, error) {
	c.connsMu.Lock()
	defer c.connsMu.Unlock()
	if c.closed {
		return nil, status.Error(codes.Unavailable, "cluster: stopped, not forwarding")
	}
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawClientCodec{proto: encoding.GetCodecV2(proto.Name)})),
		grpc.WithUserAgent("spangraph-cluster-forward"),
		// A forwarded part in one write rather than 32 KiB pieces.
		grpc.WithWriteBufferSize(1<<20),
		// gRPC's default reconnect backoff grows to two minutes: a member
		// that restarts after a crash would be refused the spans of its
		// traces that long after it is back in the ring.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second,
		}, MinConnectTimeout: time.Second}),
	)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "cluster: dial %s: %v", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}
