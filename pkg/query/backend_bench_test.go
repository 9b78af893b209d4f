package query

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/tenant"
)

// BenchmarkServiceGraphBackend builds the node graph of the benchmarks'
// service graph over one hour from the embedded store and, with the same
// samples remote-written into a real Prometheus, through it as the query
// backend: what a replica pays to show the shared figures.
func BenchmarkServiceGraphBackend(b *testing.B) {
	for _, size := range []struct{ services, edges int }{{100, 300}, {1000, 10000}} {
		b.Run(fmt.Sprintf("edges=%d", size.edges), func(b *testing.B) {
			emb, st := benchStore(b, size.services, size.edges)
			p := startProm(b)
			t0 := time.Now()
			mirror(b, st, p, noSplit)
			b.Logf("remote write of the fixture: %s", time.Since(t0))
			back := backendQuerier(b, trapSource{b}, DefaultConfig(), BackendConfig{URL: p.url()})
			at := end.Add(-7 * time.Second)
			o := GraphOptions{Start: at.Add(-time.Hour), End: at}
			for name, q := range map[string]*Querier{"embedded": emb, "backend": back} {
				b.Run(name, func(b *testing.B) {
					for b.Loop() {
						g, err := q.ServiceGraph(context.Background(), tenant.Default, o)
						if err != nil {
							b.Fatal(err)
						}
						if len(g.Edges) != size.edges {
							b.Fatalf("%d edges, want %d", len(g.Edges), size.edges)
						}
					}
				})
			}
		})
	}
}
