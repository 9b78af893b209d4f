package engine

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/store"
)

// lockedBuffer is a log destination the test reads while the engine writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newTestEngine starts an engine on dataDir whose receiver does not
// listen and whose collection loop does not fire during the test.
func newTestEngine(t *testing.T, dataDir string, log *lockedBuffer) *Engine {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dataDir
	cfg.OTLPGRPC, cfg.OTLPHTTP, cfg.HTTP = "", "", ""
	cfg.CollectionInterval = time.Hour
	e, err := New(cfg, slog.New(slog.NewTextHandler(log, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	return e
}

// consumeSpans feeds spans of service to the default tenant, through the
// decoder as a request would.
func consumeSpans(t *testing.T, e *Engine, service string, spans []*tracepb.Span) {
	t.Helper()
	raw, err := proto.Marshal(&coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
			Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: service}}}}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Admit(store.DefaultTenant); err != nil {
		t.Fatal(err)
	}
	b := otlp.GetBatch()
	if err := b.DecodeProto(raw); err != nil {
		t.Fatal(err)
	}
	e.Consume(store.DefaultTenant, b)
	b.Release()
}
