package engine

import (
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/otlptest"
)

// TestTenantsCollectIndependently: a tenant whose collection lock is held
// (by its remote write, switching over while its endpoint is slow) does
// not hold back another tenant's collection.
func TestTenantsCollectIndependently(t *testing.T) {
	var log otlptest.LogBuffer
	e := newTestEngine(t, t.TempDir(), &log)
	defer e.Stop(t.Context())
	for _, tenant := range []string{"slow", "fast"} {
		if err := e.Admit(tenant); err != nil {
			t.Fatal(err)
		}
	}
	slow, fast := e.Tenant("slow"), e.Tenant("fast")
	slow.collectMu.Lock()
	done := make(chan struct{})
	go func() { e.Collect(); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for fast.LastCollection().IsZero() {
		if time.Now().After(deadline) {
			slow.collectMu.Unlock()
			t.Fatal("the fast tenant was not collected while the slow one's lock was held")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !slow.LastCollection().IsZero() {
		t.Fatal("the slow tenant was collected without its lock")
	}
	slow.collectMu.Unlock()
	<-done
	if slow.LastCollection().IsZero() {
		t.Fatal("the slow tenant was not collected once its lock was free")
	}
}
