package limits

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spangraph/spangraph/pkg/otlp"
)

func TestClusterSpanName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"GET /users/123", "GET /users/<_>"},
		{"/orders/9f86d081884c7d65", "/orders/<_>"},
		{"/users/123/orders/456", "/users/<_>/orders/<_>"},
		{"/users/123/", "/users/<_>/"},
		{"/users/550e8400-e29b-41d4-a716-446655440000/profile", "/users/<_>/profile"},
		{"/users/550E8400-E29B-41D4-A716-446655440000", "/users/<_>"},
		{"/blobs/550e8400e29b41d4a716446655440000", "/blobs/<_>"}, // dash-less UUID: 32 hex
		{"/search?q=12345&page=2", "/search?q=<_>&page=<_>"},
		{"redis GET user:1234", "redis GET user:<_>"},
		{"123", "<_>"},
		{"/deadbeef", "/<_>"},        // 8 hex digits, letters only: still an id
		{"/DEADBEEF01", "/<_>"},      // upper case hex
		{"/café/123", "/café/<_>"},   // non-ASCII segments are kept
		{"/a//b/0", "/a//b/<_>"},     // empty segments are not ids
		{"/users/<_>", "/users/<_>"}, // idempotent
		// Unchanged: templates, words, short or mixed segments.
		{"/api/v1/items", "/api/v1/items"},
		{"GET /users/{id}", "GET /users/{id}"},
		{"GET /users/:id", "GET /users/:id"},
		{"HTTP GET", "HTTP GET"},
		{"/abcdef1", "/abcdef1"},                   // 7 hex digits
		{"/users/12a", "/users/12a"},               // mixed, short
		{"/user-123", "/user-123"},                 // '-' is not a delimiter
		{"/files/12345.json", "/files/12345.json"}, // nor is '.'
		{"/v2", "/v2"},
		{"/550e8400-e29b-41d4-a716-44665544000g", "/550e8400-e29b-41d4-a716-44665544000g"},
		{"/550e8400-e29b-41d4-a716_446655440000", "/550e8400-e29b-41d4-a716_446655440000"},
		{"grpc.health.v1.Health/Check", "grpc.health.v1.Health/Check"},
		{"", ""},
	} {
		if got := ClusterSpanName(tc.in); got != tc.want {
			t.Errorf("ClusterSpanName(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if again := ClusterSpanName(tc.want); again != tc.want {
			t.Errorf("not idempotent: %q → %q", tc.want, again)
		}
		buf, changed := AppendClustered([]byte("prefix:"), tc.in)
		if changed != (tc.in != tc.want) {
			t.Errorf("AppendClustered(%q) changed = %v", tc.in, changed)
		}
		if !changed && string(buf) != "prefix:" {
			t.Errorf("AppendClustered(%q) appended %q without a change", tc.in, buf)
		}
		if changed && string(buf) != "prefix:"+tc.want {
			t.Errorf("AppendClustered(%q) = %q", tc.in, buf)
		}
	}
}

func TestClusterSpanNameAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	unchanged := "GET /api/v1/users/{id}/orders"
	if n := testing.AllocsPerRun(100, func() { _ = ClusterSpanName(unchanged) }); n != 0 {
		t.Errorf("ClusterSpanName of a name without ids: %v allocations, want 0", n)
	}
	buf := make([]byte, 0, 64)
	changed := "GET /api/v1/users/123/orders"
	if n := testing.AllocsPerRun(100, func() { buf, _ = AppendClustered(buf[:0], changed) }); n != 0 {
		t.Errorf("AppendClustered into a big enough buffer: %v allocations, want 0", n)
	}
}

func newNames(limits map[string][2]int) *SpanNames {
	return NewSpanNames(func(tenant string) (int, bool) {
		v := limits[tenant]
		return v[0], v[1] != 0
	}, 0)
}

func TestSpanNamesCap(t *testing.T) {
	n := newNames(map[string][2]int{"capped": {3, 0}, "clustered": {3, 1}, "cluster-only": {0, 1}})
	for _, tc := range []struct {
		tenant     string
		in, want   []string
		overflowed int
	}{
		{"capped", []string{"a", "b", "a"}, []string{"a", "b", "a"}, 0},
		{"capped", []string{"c", "d", "a", "e", "b"}, []string{"c", OverflowSpanName, "a", OverflowSpanName, "b"}, 2},
		{"capped", []string{"d", "c"}, []string{OverflowSpanName, "c"}, 1},
		// Clustering first, then the cap: ids do not use up the set.
		{"clustered", []string{"/u/1", "/u/2", "/u/3", "/o/9f86d081884c7d65", "/x"}, []string{"/u/<_>", "/u/<_>", "/u/<_>", "/o/<_>", "/x"}, 0},
		{"clustered", []string{"/y", "/u/4"}, []string{OverflowSpanName, "/u/<_>"}, 1},
		{"cluster-only", []string{"/u/1", "/v"}, []string{"/u/<_>", "/v"}, 0},
		{"unlimited", []string{"/u/1", "x"}, []string{"/u/1", "x"}, 0},
	} {
		before := testutil.ToFloat64(spanNamesOverflowed.WithLabelValues(tc.tenant))
		b := batchOf(t, namedSpans(tc.in...))
		got := n.Apply(tc.tenant, b)
		if names := spanNames(b); got != tc.overflowed || !slices.Equal(names, tc.want) {
			t.Errorf("%s %q: names %q overflowed %d; want %q, %d", tc.tenant, tc.in, names, got, tc.want, tc.overflowed)
		}
		if d := testutil.ToFloat64(spanNamesOverflowed.WithLabelValues(tc.tenant)) - before; d != float64(tc.overflowed) {
			t.Errorf("%s: overflowed counter +%v, want +%d", tc.tenant, d, tc.overflowed)
		}
		b.Release()
	}
	for tenant, want := range map[string]int{"capped": 3, "clustered": 3, "cluster-only": 2, "unlimited": 0} {
		if got := n.Len(tenant); got != want {
			t.Errorf("Len(%s) = %d, want %d", tenant, got, want)
		}
	}
}

// TestSpanNamesAgeOut: after a burst of unique names fills the set, names
// that were not seen for the TTL make room again, while names still in use
// keep their place.
func TestSpanNamesAgeOut(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		ttl, after              time.Duration
		wantNew                 string
		wantOverflowed, wantLen int
	}{
		{"stale names make room", 15 * time.Minute, 16 * time.Minute, "fresh", 0, 2},
		{"within the ttl the set stays full", 15 * time.Minute, 14 * time.Minute, OverflowSpanName, 1, 3},
		{"no ttl keeps every name", 0, 24 * time.Hour, OverflowSpanName, 1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := time.Unix(1_700_000_000, 0)
			n := NewSpanNames(func(string) (int, bool) { return 3, false }, tc.ttl)
			n.now = func() time.Time { return clock }
			apply := func(names ...string) ([]string, int) {
				b := batchOf(t, namedSpans(names...))
				defer b.Release()
				o := n.Apply("t", b)
				return spanNames(b), o
			}
			apply("burst-1", "burst-2", "kept")
			// "kept" goes on being used; the burst's names do not.
			clock = clock.Add(tc.after / 2)
			apply("kept")
			clock = clock.Add(tc.after - tc.after/2)
			names, overflowed := apply("fresh", "kept")
			if names[0] != tc.wantNew || names[1] != "kept" || overflowed != tc.wantOverflowed {
				t.Fatalf("names %q, overflowed %d; want [%s kept], %d", names, overflowed, tc.wantNew, tc.wantOverflowed)
			}
			if got := n.Len("t"); got != tc.wantLen {
				t.Fatalf("Len = %d, want %d", got, tc.wantLen)
			}
		})
	}
}

// TestSpanNamesOwnCopies: the set must not keep strings that point into a
// request buffer, which the next request overwrites.
func TestSpanNamesOwnCopies(t *testing.T) {
	n := newNames(map[string][2]int{"t": {10, 0}})
	b := batchOf(t, namedSpans("checkout"))
	n.Apply("t", b)
	raw := b.Buffer()[:cap(b.Buffer())]
	for i := range raw {
		raw[i] = 'X'
	}
	b.Release()

	b2 := batchOf(t, namedSpans("checkout"))
	defer b2.Release()
	if got := n.Apply("t", b2); got != 0 || spanNames(b2)[0] != "checkout" || n.Len("t") != 1 {
		t.Fatalf("the stored name changed with the request buffer: overflowed %d, names %q", got, spanNames(b2))
	}
}

func TestSpanNamesLongNamesAreCut(t *testing.T) {
	n := newNames(map[string][2]int{"t": {10, 0}})
	long := strings.Repeat("é", MaxSpanNameLength) // 2 bytes a rune
	b := batchOf(t, namedSpans(long, long+"more"))
	defer b.Release()
	n.Apply("t", b)
	names := spanNames(b)
	if len(names[0]) != MaxSpanNameLength || names[0] != names[1] || n.Len("t") != 1 {
		t.Fatalf("names of %d and %d bytes, %d stored; want both cut to %d", len(names[0]), len(names[1]), n.Len("t"), MaxSpanNameLength)
	}
}

func TestSpanNamesApplyAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	n := newNames(map[string][2]int{"t": {1000, 1}})
	b := batchOf(t, namedSpans("GET /users/123", "GET /users/456", "POST /orders", "/o/9f86d081884c7d65"))
	defer b.Release()
	n.Apply("t", b) // registers the names
	if allocs := testing.AllocsPerRun(100, func() { n.Apply("t", b) }); allocs != 0 {
		t.Fatalf("Apply with known names (clustered ones included): %v allocations, want 0", allocs)
	}
}

func TestSpanNamesConcurrent(t *testing.T) {
	const maxNames = 50
	n := newNames(map[string][2]int{"t": {maxNames, 1}})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				names := make([]string, 20)
				for j := range names {
					names[j] = fmt.Sprintf("op-%d-%d/%d", g, (i*20+j)%37, j)
				}
				b := batchOf(t, namedSpans(names...))
				n.Apply("t", b)
				for _, name := range spanNames(b) {
					if strings.Contains(name, "/") && !strings.HasSuffix(name, "/<_>") {
						t.Errorf("unclustered name %q", name)
					}
				}
				b.Release()
			}
		}()
	}
	wg.Wait()
	if got := n.Len("t"); got != maxNames {
		t.Fatalf("Len = %d, want exactly the cap %d", got, maxNames)
	}
}

// TestSpanNamesMemoryBounded sends a million distinct names: the set stays
// at its cap, and the heap does not grow with the names.
func TestSpanNamesMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("a million names")
	}
	for _, tc := range []struct {
		name     string
		maxNames int
		cluster  bool
		wantLen  int
	}{
		{"max_span_names", 10_000, false, 10_000},
		{"clustering only", 0, true, internCap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := NewSpanNames(func(string) (int, bool) { return tc.maxNames, tc.cluster }, 0)
			const total, perBatch = 1_000_000, 1000
			// One batch, renamed for each round, as fresh requests would
			// be: building a million spans through the decoder only makes
			// the test slow under -race.
			spans := make([]otlp.Span, perBatch)
			b := &otlp.Batch{Resources: []otlp.ResourceSpans{{Spans: spans}}, SpanCount: perBatch}
			buf := make([]byte, 0, 64)
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			overflowed := 0
			for i := 0; i < total; i += perBatch {
				for j := range spans {
					// A distinct, realistic-length name that clustering
					// cannot fold (no id segment).
					buf = append(buf[:0], "GET /api/v1/customers/c"...)
					buf = strconv.AppendInt(buf, int64(i+j), 10)
					buf = append(buf, "x/orders"...)
					spans[j].Name = string(buf)
				}
				overflowed += n.Apply("t", b)
			}
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("%d names: set of %d, heap growth %.1f MiB", total, n.Len("t"), float64(growth)/(1<<20))
			if got := n.Len("t"); got != tc.wantLen {
				t.Errorf("Len = %d, want %d", got, tc.wantLen)
			}
			if tc.maxNames > 0 && overflowed != total-tc.maxNames {
				t.Errorf("overflowed %d, want %d", overflowed, total-tc.maxNames)
			}
			if growth > 64<<20 {
				t.Errorf("heap grew by %d MiB for a capped set", growth>>20)
			}
			runtime.KeepAlive(n)
		})
	}
}
