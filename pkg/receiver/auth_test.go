package receiver

import (
	"context"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/limits"
)

// TestAuthAndLimits drives the receiver's auth and limits through both
// protocols: every refusal has its protocol's code, and only the accepted
// request reaches the consumer.
func TestAuthAndLimits(t *testing.T) {
	a, err := auth.New(auth.Config{Tenants: []auth.TenantConfig{{ID: "team-a", BearerTokens: []auth.Secret{"tok"}}}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := limits.New(limits.Config{TenantLimits: limits.TenantLimits{SpansPerSecond: 1, Burst: 5, MaxSpansPerRequest: 10, MaxSpanNames: 1}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	r := startWith(t, DefaultConfig(), Access{Auth: a, Limits: l}, rec)
	now := time.Now()
	body, _ := proto.Marshal(spans(3, now))
	big, _ := proto.Marshal(spans(11, now))
	pb := map[string]string{"Content-Type": "application/x-protobuf"}
	withTok := map[string]string{"Content-Type": "application/x-protobuf", "Authorization": "Bearer tok"}

	resp, _ := post(t, r, "POST", pb, body)
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("no creds: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	wrong := map[string]string{"Content-Type": "application/x-protobuf", "Authorization": "Bearer nope"}
	if resp, _ = post(t, r, "POST", wrong, body); resp.StatusCode != 401 {
		t.Fatalf("wrong token: %d", resp.StatusCode)
	}
	otherTenant := map[string]string{"Content-Type": "application/x-protobuf", "Authorization": "Bearer tok", "X-Scope-OrgID": "team-b"}
	if resp, _ = post(t, r, "POST", otherTenant, body); resp.StatusCode != 403 {
		t.Fatalf("token of team-a naming team-b: %d", resp.StatusCode)
	}
	resp, _ = post(t, r, "POST", withTok, big)
	if resp.StatusCode != 413 {
		t.Fatalf("big: %d", resp.StatusCode)
	}
	resp, _ = post(t, r, "POST", withTok, body)
	if resp.StatusCode != 200 {
		t.Fatalf("ok: %d", resp.StatusCode)
	}
	resp, _ = post(t, r, "POST", withTok, body)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("rate: %d %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	conn := dialGRPC(t, r.GRPCAddr())
	client := coltracepb.NewTraceServiceClient(conn)
	_, err = client.Export(context.Background(), spans(1, now))
	if grpcstatus.Code(err) != codes.Unauthenticated {
		t.Fatalf("grpc no creds: %v", err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer tok")
	_, err = client.Export(ctx, spans(3, now))
	st := grpcstatus.Convert(err)
	hasRetry := false
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			hasRetry = true
		}
	}
	if st.Code() != codes.ResourceExhausted || !hasRetry {
		t.Fatalf("grpc rate: %v %v", st.Code(), st.Details())
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "x-scope-orgid", "team-b")
	_, err = client.Export(ctx, spans(1, now))
	if grpcstatus.Code(err) != codes.PermissionDenied {
		t.Fatalf("grpc forbidden: %v", err)
	}
	r.Stop(context.Background()) // drains the queue
	if rec.count("team-a") != 3 || rec.count("team-b") != 0 || rec.count("single-tenant") != 0 {
		t.Fatalf("consumer got %v, want only the 3 accepted spans of team-a", rec.spans)
	}
}
