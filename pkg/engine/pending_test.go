package engine

import (
	"os"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// consumeCalls feeds n spans of kind from service, one per trace 1..n:
// CLIENT spans with span id 1, or SERVER spans whose parent is span 1.
func consumeCalls(t *testing.T, e *Engine, service string, kind tracepb.Span_SpanKind, n int) {
	t.Helper()
	now := time.Now()
	var spans []*tracepb.Span
	for i := byte(1); i <= byte(n); i++ {
		s := otlptest.Span(i, "op", kind, now, time.Millisecond)
		s.SpanId = []byte{1, 0, 0, 0, 0, 0, 0, 1}
		if kind == tracepb.Span_SPAN_KIND_SERVER {
			s.ParentSpanId, s.SpanId = s.SpanId, []byte{2, 0, 0, 0, 0, 0, 0, 2}
		}
		spans = append(spans, s)
	}
	consumeRequest(t, e, otlptest.Request(otlptest.Service(service, spans...)))
}

// TestPendingEdgesSurviveRestart: client spans still waiting at stop are
// saved, not settled, and pair with server spans that arrive after the
// next start.
func TestPendingEdgesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	var log otlptest.LogBuffer
	e := newTestEngine(t, dir, &log)
	consumeCalls(t, e, "fe", tracepb.Span_SPAN_KIND_CLIENT, 5)
	e.Stop(t.Context())
	if st := e.Tenant(tenant.Default).ServiceGraph.Stats(); st.Completed != 0 || st.Unpaired != 0 || st.Pending != 0 {
		t.Fatalf("after stop: %+v; want the 5 clients saved, not settled", st)
	}
	if _, err := os.Stat(e.pendingFile(tenant.Default)); err != nil {
		t.Fatalf("no saved file: %v", err)
	}
	if !strings.Contains(log.String(), "edges=5") {
		t.Errorf("the log does not say 5 half edges were saved:\n%s", log.String())
	}

	e = newTestEngine(t, dir, &log)
	defer e.Stop(t.Context())
	// Tenants open on demand; the saved half edges come back when it does.
	if err := e.Admit(tenant.Default); err != nil {
		t.Fatal(err)
	}
	sg := e.Tenant(tenant.Default).ServiceGraph
	if st := sg.Stats(); st.Pending != 5 {
		t.Fatalf("after restart: %+v; want 5 pending", st)
	}
	consumeCalls(t, e, "be", tracepb.Span_SPAN_KIND_SERVER, 5)
	if st := sg.Stats(); st.Completed != 5 || st.Pending != 0 {
		t.Errorf("after the servers: %+v; want 5 edges completed", st)
	}
}
