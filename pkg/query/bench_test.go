package query

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"syscall"
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
	st := emptyStore(b)
	all := benchSeries(services, edges)
	app := st.Appender(context.Background())
	refs := make([]uint64, len(all))
	err := eachCollection(all, func(ts int64) {}, func(i int, s benchSample, ts int64, v float64) error {
		ref, err := app.Append(storage.SeriesRef(refs[i]), s.l, ts, v)
		refs[i] = uint64(ref)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d series, %d samples", len(all), len(all)*241)
	return NewQuerier(stores{tenant.Default: st}, DefaultConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil), st
}

func emptyStore(b *testing.B) *store.Store {
	b.Helper()
	st, err := store.Open(b.TempDir(), tenant.Default, store.Options{Retention: 24 * time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// benchSample is one series of the benchmark graph, a counter growing at
// rate per second: by whole numbers, as counts of spans do, unless frac
// (a latency sum).
type benchSample struct {
	l    labels.Labels
	rate float64
	frac bool
}

// benchSeries returns the series of a service graph of services nodes
// and edges edges (13 series an edge), and a calls series per service.
func benchSeries(services, edges int) []benchSample {
	rng := rand.New(rand.NewPCG(1, 2))
	les := []string{"0.1", "0.2", "0.4", "0.8", "1.6", "3.2", "6.4", "12.8", "+Inf"}
	var all []benchSample
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
			benchSample{with(metricRequests), rate, false}, benchSample{with(metricFailed), rate / 100, false},
			benchSample{with(metricServerSeconds + "_sum"), rate * 0.3, true}, benchSample{with(metricServerSeconds + "_count"), rate, false})
		for i, le := range les {
			all = append(all, benchSample{with(metricServerSeconds+"_bucket", "le", le), rate * float64(i+1) / float64(len(les)), false})
		}
	}
	for i := 0; i < services; i++ {
		all = append(all, benchSample{labels.FromStrings("__name__", metricCalls, "service", fmt.Sprintf("svc-%04d", i), "span_kind", "SPAN_KIND_SERVER", "status_code", "STATUS_CODE_UNSET", "span_name", "op"), 10, false})
	}
	return all
}

// eachCollection calls put with every series' value at every collection,
// every 15 s (the default collection interval) for the hour up to end,
// calling begin before each collection.
func eachCollection(all []benchSample, begin func(ts int64), put func(i int, s benchSample, ts int64, v float64) error) error {
	for ts := end.Add(-time.Hour); !ts.After(end); ts = ts.Add(15 * time.Second) {
		begin(ts.UnixMilli())
		x := ts.Sub(end.Add(-time.Hour)).Seconds()
		for i, s := range all {
			v := s.rate * x
			if !s.frac {
				v = math.Floor(v)
			}
			if err := put(i, s, ts.UnixMilli(), v); err != nil {
				return err
			}
		}
	}
	return nil
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

// discard is an appender that keeps nothing: the rolling window's tee in
// front of it is the one under test.
type discard struct{ storage.Appender }

func (discard) Append(ref storage.SeriesRef, _ labels.Labels, _ int64, _ float64) (storage.SeriesRef, error) {
	return ref, nil
}
func (discard) Commit() error   { return nil }
func (discard) Rollback() error { return nil }

// benchRolling fills a rolling window, collection by collection as the
// engine does, with the series of benchSeries (or those given), and
// returns a querier that reads it and counts the TSDB queriers it opens.
func benchRolling(b *testing.B, all []benchSample) (*Querier, *rolling.Store, *atomic.Int64) {
	b.Helper()
	st := emptyStore(b)
	rs := rolling.New(time.Hour.Milliseconds()+time.Minute.Milliseconds(), nil)
	b.Cleanup(rs.Close)
	// A tenant without history: the window is whole from its start.
	if err := rs.Rebuild(context.Background(), st, end.Add(-time.Hour-time.Second).UnixMilli()); err != nil {
		b.Fatal(err)
	}
	var app storage.Appender
	commit := func() {
		if app != nil {
			if err := app.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	}
	err := eachCollection(all, func(ts int64) {
		commit()
		app = rs.Appender(discard{}, ts)
	}, func(_ int, s benchSample, ts int64, v float64) error {
		_, err := app.Append(0, s.l, ts, v)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	commit()
	var opened atomic.Int64
	return NewQuerier(rollingStores{st, rs, &opened}, DefaultConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil), rs, &opened
}

// cpuTime is the CPU time the process has used, all threads together.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per operation since from: what a live
// panel's refresh costs the machine, whatever the cores it ran on.
func reportCPU(b *testing.B, from time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-from)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

// BenchmarkServiceGraphRolling is BenchmarkServiceGraph read from the
// rolling window instead of the TSDB, as a live panel refreshes it after
// each collection.
func BenchmarkServiceGraphRolling(b *testing.B) {
	for _, size := range []struct{ services, edges int }{{1000, 10000}, {100, 300}} {
		b.Run(fmt.Sprintf("edges=%d", size.edges), func(b *testing.B) {
			q, rs, opened := benchRolling(b, benchSeries(size.services, size.edges))
			o := GraphOptions{Start: end.Add(-time.Hour), End: end}
			b.ResetTimer()
			cpu := cpuTime(b)
			for i := 0; i < b.N; i++ {
				g, err := q.ServiceGraph(context.Background(), tenant.Default, o)
				if err != nil {
					b.Fatal(err)
				}
				if len(g.Edges) != size.edges || len(g.Nodes) == 0 || opened.Load() != 0 {
					b.Fatalf("%d edges, %d nodes, %d TSDB queriers", len(g.Edges), len(g.Nodes), opened.Load())
				}
			}
			reportCPU(b, cpu)
			b.ReportMetric(float64(rs.HeldBytes())/float64(size.edges), "B/edge")
		})
	}
}

// redSeries returns the span metrics of services services with spans
// span names each, both with and without errors: calls series and a
// latency histogram of the default 15 buckets each.
func redSeries(services, spans int) []benchSample {
	les := []string{"0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512", "1.024", "2.048", "4.096", "8.192", "16.384", "+Inf"}
	var all []benchSample
	for s := 0; s < services; s++ {
		for o := 0; o < spans; o++ {
			for _, status := range []string{"STATUS_CODE_UNSET", "STATUS_CODE_ERROR"} {
				rate := float64(1 + (s*spans+o)%50)
				if status == "STATUS_CODE_ERROR" {
					rate /= 20
				}
				base := []string{"service", fmt.Sprintf("svc-%04d", s), "span_name", fmt.Sprintf("op-%d", o), "span_kind", "SPAN_KIND_SERVER", "status_code", status}
				all = append(all, benchSample{labels.FromStrings(append([]string{"__name__", metricCalls}, base...)...), rate, false})
				for i, le := range les {
					l := labels.FromStrings(append([]string{"__name__", metricLatency + "_bucket", "le", le}, base...)...)
					all = append(all, benchSample{l, rate * float64(i+1) / float64(len(les)), false})
				}
			}
		}
	}
	return all
}

// BenchmarkREDTableRolling is the RED table by span name over 10 000
// calls series (1 000 services, 5 span names, with and without errors)
// and their 150 000 bucket series, one hour, from the rolling window.
func BenchmarkREDTableRolling(b *testing.B) {
	q, rs, opened := benchRolling(b, redSeries(1000, 5))
	o := REDOptions{Start: end.Add(-time.Hour), End: end, GroupBy: "span_name"}
	b.ResetTimer()
	cpu := cpuTime(b)
	for i := 0; i < b.N; i++ {
		rows, err := q.REDTable(context.Background(), tenant.Default, o)
		if err != nil {
			b.Fatal(err)
		}
		if len(rows) != 5000 || opened.Load() != 0 {
			b.Fatalf("%d rows, %d TSDB queriers", len(rows), opened.Load())
		}
	}
	reportCPU(b, cpu)
	b.ReportMetric(float64(rs.HeldBytes())/5000, "B/row")
}

// BenchmarkRollingRebuild fills the rolling window of a tenant that
// opens with an hour of the 10 000-edge graph in its store.
func BenchmarkRollingRebuild(b *testing.B) {
	_, st := benchStore(b, 1000, 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rs := rolling.New(time.Hour.Milliseconds()+time.Minute.Milliseconds(), nil)
		if err := rs.Rebuild(context.Background(), st, end.UnixMilli()); err != nil {
			b.Fatal(err)
		}
		rs.Close()
	}
}
