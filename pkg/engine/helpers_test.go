package engine

import (
	"log/slog"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// newTestEngine starts an engine on dataDir whose receiver does not
// listen and whose collection loop does not fire during the test.
func newTestEngine(t *testing.T, dataDir string, log *otlptest.LogBuffer) *Engine {
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

// exportRequest is three SERVER spans "op" of service, ending now.
func exportRequest(service string) *coltracepb.ExportTraceServiceRequest {
	now := time.Now()
	var spans []*tracepb.Span
	for i := byte(1); i <= 3; i++ {
		spans = append(spans, otlptest.Span(i, "op", tracepb.Span_SPAN_KIND_SERVER, now, time.Millisecond))
	}
	return otlptest.Request(otlptest.Service(service, spans...))
}

// consumeRequest feeds req to the default tenant, through the decoder as
// the receiver would.
func consumeRequest(t *testing.T, e *Engine, req *coltracepb.ExportTraceServiceRequest) {
	t.Helper()
	if err := e.Admit(tenant.Default); err != nil {
		t.Fatal(err)
	}
	b := otlptest.Batch(t, req)
	e.Consume(tenant.Default, b)
	b.Release()
}
