package receiver

import "testing"

// TestGateKeepsRoomForSmallRequests: large requests together may fill
// three quarters of the gate; the last quarter is for ordinary requests,
// so that a flood of huge ones cannot shut every exporter out.
func TestGateKeepsRoomForSmallRequests(t *testing.T) {
	g := &gate{limit: 64 << 20}
	big := int64(8 << 20)
	n := 0
	for g.Reserve(big, big) {
		n++
	}
	if n != 6 {
		t.Fatalf("%d large requests of 8 MiB got in, want 6 (48 of 64 MiB)", n)
	}
	small := int64(64 << 10)
	for i := range 200 {
		if !g.Reserve(small, small) {
			t.Fatalf("small request %d refused with %d of %d bytes used", i, g.used.Load(), g.limit)
		}
	}
	if g.Reserve(small, 2<<20) {
		t.Fatal("a request that has grown past 1 MiB got into the reserved quarter")
	}
	for range 56 {
		g.Reserve(small, small)
	}
	if g.Reserve(small, small) || g.used.Load() > g.limit {
		t.Fatalf("the gate let %d of %d bytes in", g.used.Load(), g.limit)
	}
}
