package engine

import (
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// TestHealth: the report says what a health check needs without opening
// the tenant, and what an open tenant does.
func TestHealth(t *testing.T) {
	var log otlptest.LogBuffer
	e := newTestEngine(t, t.TempDir(), &log)
	defer e.Stop(t.Context())
	h := e.Health(tenant.Default)
	if h.Tenant.State != TenantUnknown || h.Open != nil || !h.OK() || len(h.Receivers) != 0 {
		t.Fatalf("before any span: %+v", h)
	}
	if e.Tenant(tenant.Default) != nil {
		t.Fatal("Health opened the tenant")
	}
	consumeCalls(t, e, "be", tracepb.Span_SPAN_KIND_SERVER, 3)
	e.Collect()
	h = e.Health(tenant.Default)
	if h.Tenant.State != TenantOpen || h.Open == nil || h.Open.ActiveSeries == 0 || h.Open.LastCollection.IsZero() ||
		h.Open.EdgeStore == nil || h.Open.EdgeStore.Pending != 3 || !h.OK() {
		t.Fatalf("after spans and a collection: %+v %+v", h, h.Open)
	}
}

// TestCollected: a stream waiting for the next collection is woken by it,
// and only by it.
func TestCollected(t *testing.T) {
	var log otlptest.LogBuffer
	e := newTestEngine(t, t.TempDir(), &log)
	defer e.Stop(t.Context())
	consumeCalls(t, e, "be", tracepb.Span_SPAN_KIND_SERVER, 1)
	wait := e.Collected()
	select {
	case <-wait:
		t.Fatal("woken before a collection")
	case <-time.After(50 * time.Millisecond):
	}
	e.Collect()
	select {
	case <-wait:
	case <-time.After(5 * time.Second):
		t.Fatal("not woken by the collection")
	}
	if again := e.Collected(); again == wait {
		t.Fatal("the next wait reuses the closed channel")
	}
}
