package spanmetrics

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/loadgen"
	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/registry"
)

// benchBatch decodes a realistic request: 100 shop traces, ~20 spans each.
func benchBatch(b *testing.B) *otlp.Batch {
	gen := loadgen.NewGenerator(loadgen.Shop(10, rand.New(rand.NewPCG(1, 2))), 1)
	return otlptest.Batch(b, gen.Request(100, time.Now()))
}

// BenchmarkPush measures the processor per span in steady state: every
// series exists, so this is hashing, lookup and updates.
func BenchmarkPush(b *testing.B) {
	for _, dims := range []struct {
		name string
		dims []string
	}{{"default", nil}, {"2dims", []string{"deployment.environment", "http.route"}}} {
		b.Run(dims.name, func(b *testing.B) {
			batch := benchBatch(b)
			cfg := DefaultConfig()
			cfg.Dimensions = dims.dims
			p, err := New(cfg, registry.New(registry.DefaultConfig()))
			if err != nil {
				b.Fatal(err)
			}
			p.Push(batch)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.Push(batch)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch.SpanCount), "ns/span")
		})
	}
}

// BenchmarkPushParallel is BenchmarkPush on every core at once, as the
// receiver's workers run it.
func BenchmarkPushParallel(b *testing.B) {
	batch := benchBatch(b)
	p, err := New(DefaultConfig(), registry.New(registry.DefaultConfig()))
	if err != nil {
		b.Fatal(err)
	}
	p.Push(batch)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.Push(batch)
		}
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch.SpanCount), "ns/span")
}
