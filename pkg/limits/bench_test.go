package limits

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/loadgen"
	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/otlptest"
)

// shopBatch decodes a realistic request: 100 shop traces, ~20 spans each.
func shopBatch(b *testing.B) *otlp.Batch {
	gen := loadgen.NewGenerator(loadgen.Shop(10, rand.New(rand.NewPCG(1, 2))), 1)
	return otlptest.Batch(b, gen.Request(100, time.Now()))
}

func perSpan(b *testing.B, spans int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(spans), "ns/span")
}

// BenchmarkCheck: attribute count and value length limits on a realistic
// batch where nothing is over the limits (the steady state): a scan.
func BenchmarkCheck(b *testing.B) {
	batch := shopBatch(b)
	l := mustNew(b, Config{TenantLimits: TenantLimits{MaxAttributesPerSpan: 128, MaxAttributeValueLength: 4096}})
	b.ReportAllocs()
	for b.Loop() {
		l.Check("bench", batch)
	}
	perSpan(b, batch.SpanCount)
}

// BenchmarkApply: every limit on, span names known (steady state).
func BenchmarkApply(b *testing.B) {
	batch := shopBatch(b)
	l := mustNew(b, Config{TenantLimits: TenantLimits{
		SpansPerSecond: 1e12, MaxSpansPerRequest: 100_000, MaxAttributesPerSpan: 128,
		MaxAttributeValueLength: 4096, MaxSpanNames: 10_000, SpanNameClustering: true,
	}})
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := l.Apply("bench", batch); err != nil {
			b.Fatal(err)
		}
	}
	perSpan(b, batch.SpanCount)
}

func BenchmarkAllow(b *testing.B) {
	r := NewRateLimiter(func(string) (float64, int) { return 1e12, 1 << 30 })
	b.ReportAllocs()
	for b.Loop() {
		r.Allow("bench", 100)
	}
}

// BenchmarkAllowParallel: many receiver goroutines, a few tenants.
func BenchmarkAllowParallel(b *testing.B) {
	r := NewRateLimiter(func(string) (float64, int) { return 1e12, 1 << 30 })
	tenants := []string{"a", "b", "c", "d"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.Allow(tenants[i%len(tenants)], 100)
			i++
		}
	})
}

// BenchmarkSpanNamesApply: the per-span cost of the name cap, with and
// without clustering, every name known. 0 allocs/op proves that clustered
// names are looked up from the scratch buffer and interned.
func BenchmarkSpanNamesApply(b *testing.B) {
	for _, cluster := range []bool{false, true} {
		b.Run("cluster="+strconv.FormatBool(cluster), func(b *testing.B) {
			batch := shopBatch(b)
			n := NewSpanNames(func(string) (int, bool) { return 10_000, cluster }, 0)
			n.Apply("bench", batch)
			b.ReportAllocs()
			for b.Loop() {
				n.Apply("bench", batch)
			}
			perSpan(b, batch.SpanCount)
		})
	}
	b.Run("cluster=true/ids", func(b *testing.B) {
		names := make([]string, 1000)
		for i := range names {
			names[i] = "GET /users/" + strconv.Itoa(i) + "/orders/9f86d081884c7d65"
		}
		batch := batchOf(b, namedSpans(names...))
		n := NewSpanNames(func(string) (int, bool) { return 10_000, true }, 0)
		b.ReportAllocs()
		for b.Loop() {
			// Apply rewrites the names; put the raw ones back so that every
			// iteration clusters 1000 distinct names into one.
			spans := batch.Resources[0].Spans
			for i := range spans {
				spans[i].Name = names[i]
			}
			n.Apply("bench", batch)
		}
		perSpan(b, batch.SpanCount)
	})
}

// BenchmarkClusterSpanName: zero allocations when nothing changes.
func BenchmarkClusterSpanName(b *testing.B) {
	for _, tc := range []struct{ name, in string }{
		{"unchanged", "GET /api/v1/customers/{id}/orders"},
		{"changed", "GET /api/v1/customers/123/orders/550e8400-e29b-41d4-a716-446655440000"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = ClusterSpanName(tc.in)
			}
		})
	}
	b.Run("changed/append", func(b *testing.B) {
		buf := make([]byte, 0, 128)
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = AppendClustered(buf[:0], "GET /api/v1/customers/123/orders/9f86d081884c7d65")
		}
	})
}
