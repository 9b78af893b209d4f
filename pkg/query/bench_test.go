package query

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/spangraph/spangraph/pkg/rolling"
	"github.com/spangraph/spangraph/pkg/store"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// benchQuerier fills a real TSDB with the series of a service graph of
// services nodes and edges edges, sampled every 15 s (the default
// collection interval) for an hour.
func benchQuerier(b *testing.B, services, edges int) *Querier {
	q, _ := benchStore(b, services, edges)
	return q
}

// benchStore is benchQuerier with its store.
func benchStore(b *testing.B, services, edges int) (*Querier, *store.Store) {
	b.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(b.TempDir(), tenant.Default, store.Options{Retention: 24 * time.Hour}, logger, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	rng := rand.New(rand.NewPCG(1, 2))
	les := []string{"0.1", "0.2", "0.4", "0.8", "1.6", "3.2", "6.4", "12.8", "+Inf"}
	type sr struct {
		l    labels.Labels
		rate float64
	}
	var all []sr
	seen := map[[2]int]bool{}
	for len(seen) < edges {
		c, s := rng.IntN(services), rng.IntN(services)
		if c == s || seen[[2]int{c, s}] {
			continue
		}
		seen[[2]int{c, s}] = true
		base := []string{"client", fmt.Sprintf("svc-%04d", c), "server", fmt.Sprintf("svc-%04d", s)}
		rate := 1 + rng.Float64()*100
		with := func(name string, extra ...string) labels.Labels {
			return labels.FromStrings(append(append([]string{"__name__", name}, base...), extra...)...)
		}
		all = append(all,
			sr{with(metricRequests), rate}, sr{with(metricFailed), rate / 100},
			sr{with(metricServerSeconds + "_sum"), rate * 0.3}, sr{with(metricServerSeconds + "_count"), rate})
		for i, le := range les {
			all = append(all, sr{with(metricServerSeconds+"_bucket", "le", le), rate * float64(i+1) / float64(len(les))})
		}
	}
	for i := 0; i < services; i++ {
		all = append(all, sr{labels.FromStrings("__name__", metricCalls, "service", fmt.Sprintf("svc-%04d", i), "span_kind", "SPAN_KIND_SERVER", "status_code", "STATUS_CODE_UNSET", "span_name", "op"), 10})
	}
	app := st.Appender(context.Background())
	refs := make([]uint64, len(all))
	for ts := end.Add(-time.Hour); !ts.After(end); ts = ts.Add(15 * time.Second) {
		x := ts.Sub(end.Add(-time.Hour)).Seconds()
		for i, s := range all {
			ref, err := app.Append(storage.SeriesRef(refs[i]), s.l, ts.UnixMilli(), s.rate*x)
			if err != nil {
				b.Fatal(err)
			}
			refs[i] = uint64(ref)
		}
	}
	if err := app.Commit(); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d series, %d samples", len(all), len(all)*241)
	return NewQuerier(stores{tenant.Default: st}, DefaultConfig(), logger, nil), st
}

// BenchmarkServiceGraph builds the node graph of 1 000 services and
// 10 000 edges over one hour.
func BenchmarkServiceGraph(b *testing.B) {
	q := benchQuerier(b, 1000, 10000)
	o := GraphOptions{Start: end.Add(-time.Hour), End: end}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g, err := q.ServiceGraph(context.Background(), tenant.Default, o)
		if err != nil {
			b.Fatal(err)
		}
		if len(g.Edges) != 10000 || len(g.Nodes) == 0 {
			b.Fatalf("%d edges, %d nodes", len(g.Edges), len(g.Nodes))
		}
	}
}

// BenchmarkRangeQuery is a dashboard panel over 10 000 series: one hour at
// a 15 s step.
func BenchmarkRangeQuery(b *testing.B) {
	q := benchQuerier(b, 1000, 10000)
	expr := "sum by (server) (rate(" + metricRequests + "[5m]))"
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := q.Range(context.Background(), tenant.Default, expr, end.Add(-time.Hour), end, 15*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		_ = res
	}
}

// BenchmarkServiceGraphRolling is BenchmarkServiceGraph read from the
// rolling window (rebuilt from the same store) instead of the TSDB.
func BenchmarkServiceGraphRolling(b *testing.B) {
	_, st := benchStore(b, 1000, 10000)
	rs := rolling.New(time.Hour.Milliseconds()+time.Minute.Milliseconds(), nil)
	if err := rs.Rebuild(context.Background(), st, end.UnixMilli()); err != nil {
		b.Fatal(err)
	}
	var opened atomic.Int64
	q := NewQuerier(rollingStores{st, rs, &opened}, DefaultConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	o := GraphOptions{Start: end.Add(-time.Hour), End: end}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g, err := q.ServiceGraph(context.Background(), tenant.Default, o)
		if err != nil {
			b.Fatal(err)
		}
		if len(g.Edges) != 10000 || len(g.Nodes) == 0 || opened.Load() != 0 {
			b.Fatalf("%d edges, %d nodes, %d TSDB queriers", len(g.Edges), len(g.Nodes), opened.Load())
		}
	}
	b.ReportMetric(float64(rs.HeldBytes())/10000, "B/edge")
}
