package query

import (
	"context"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"

	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/store"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// TestNativeHistogramPromQL writes the registry's histograms in each mode
// into a tenant store, as collections do, and reads them with PromQL: the
// native series answers histogram_quantile, histogram_avg, _count and _sum
// (over rate(), which the leading zero makes count from the first span);
// the classic series answer as before. It is the case: 1 ms calls
// with the service graph's classic buckets (first bound 0.1 s) show a p90
// of 90 ms, the native histogram one within its 9 % bucket of 1 ms.
func TestNativeHistogramPromQL(t *testing.T) {
	const (
		perCollection = 30 // calls of 1 ms, and 10 of 4 ms, every 15 s
		window        = "[5m]"
	)
	for _, tc := range []struct {
		mode registry.HistogramMode
		// PromQL and the value each must give; NaN: no result.
		want map[string]float64
	}{
		{registry.Classic, map[string]float64{
			`histogram_quantile(0.9, sum by (le) (rate(lat_bucket` + window + `)))`: 0.09,
			`sum(rate(lat_count` + window + `))`:                                    40.0 / 15,
			`sum(rate(lat_sum` + window + `)) / sum(rate(lat_count` + window + `))`: (30*0.001 + 10*0.004) / 40,
			`histogram_count(sum(rate(lat` + window + `)))`:                         math.NaN(),
		}},
		{registry.Native, map[string]float64{
			`histogram_count(sum(rate(lat` + window + `)))`: 40.0 / 15,
			`histogram_sum(sum(rate(lat` + window + `)))`:   (30*0.001 + 10*0.004) / 15,
			`histogram_avg(sum(rate(lat` + window + `)))`:   (30*0.001 + 10*0.004) / 40,
			// 3/4 of the calls take 1 ms: p50 lies in 1 ms's bucket
			// (2^(-80/8), 2^(-79/8)] = (0.000977, 0.001065], p90 in
			// 4 ms's, (2^(-64/8), 2^(-63/8)], interpolated exponentially
			// within them.
			`histogram_quantile(0.5, sum(rate(lat` + window + `)))`: math.Exp2(-80.0/8 + 1.0/8*(0.5*40/30)),
			`histogram_quantile(0.9, sum(rate(lat` + window + `)))`: math.Exp2(-64.0/8 + 1.0/8*((0.9*40-30)/10)),
			`sum(rate(lat_count` + window + `))`:                    math.NaN(),
		}},
		{registry.Both, map[string]float64{
			`histogram_quantile(0.9, sum by (le) (rate(lat_bucket` + window + `)))`: 0.09,
			`histogram_count(sum(rate(lat` + window + `)))`:                         40.0 / 15,
			`histogram_avg(sum(rate(lat` + window + `)))`:                           (30*0.001 + 10*0.004) / 40,
		}},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			st, err := store.Open(t.TempDir(), tenant.Default, store.Options{Retention: time.Hour, MaxExemplars: 100}, logger, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			reg := registry.New(registry.DefaultConfig())
			h := reg.NewHistogramWith("lat", []string{"client", "server"}, []float64{0.1, 0.2, 0.4},
				registry.HistogramOptions{Mode: tc.mode, Native: registry.DefaultNativeOptions()})
			lv := registry.MakeLabelValues([]string{"frontend", "checkout"})
			trace := [16]byte{1}
			start := time.Now().Truncate(15 * time.Second)
			var at time.Time
			for i := range 21 { // five minutes of collections
				at = start.Add(time.Duration(i) * 15 * time.Second)
				for range perCollection {
					h.Observe(lv, 0.001, 1, &trace, at.UnixMilli())
				}
				for range 10 {
					h.Observe(lv, 0.004, 1, nil, 0)
				}
				app := st.Appender(context.Background())
				if _, err := reg.Collect(app, at); err != nil {
					t.Fatal(err)
				}
				if err := app.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			q := NewQuerier(stores{tenant.Default: st}, DefaultConfig(), logger, nil)
			for expr, want := range tc.want {
				res, err := q.Instant(context.Background(), tenant.Default, expr, at)
				if err != nil {
					t.Fatalf("%s: %v", expr, err)
				}
				vec, _ := res.Value.(promql.Vector)
				if math.IsNaN(want) {
					if len(vec) != 0 {
						t.Errorf("%s = %v, want no result", expr, vec)
					}
					continue
				}
				if len(vec) != 1 || !near(vec[0].F, want) {
					t.Errorf("%s = %v, want %v", expr, vec, want)
				}
			}
			// The exemplar of a native histogram is on its own series.
			if tc.mode != registry.Classic {
				eq, err := st.ExemplarQuerier(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				res, err := eq.Select(start.UnixMilli(), at.UnixMilli(), []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "lat")})
				if err != nil || len(res) != 1 || len(res[0].Exemplars) == 0 {
					t.Errorf("exemplars of the native series: %v, %v", res, err)
				}
			}
		})
	}
}

// nativeStores is stores that says the processors write native latency
// histograms (query.NativeSource).
type nativeStores struct {
	stores
	spanMetrics, serviceGraph bool
}

func (s nativeStores) NativeLatency(string) (bool, bool) { return s.spanMetrics, s.serviceGraph }

// TestNodeGraphAndREDPickNative: with generate_native_histograms both, the
// node graph's and the RED table's latencies come from the native series
// (1 ms calls read as 1 ms), not from the classic buckets (a p90 "under
// 100 ms" with the service graph's buckets); without the setting the
// node graph's classic figures stand.
func TestNodeGraphAndREDPickNative(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.TempDir(), tenant.Default, store.Options{Retention: time.Hour}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	both := registry.HistogramOptions{Mode: registry.Both, Native: registry.DefaultNativeOptions()}
	reg := registry.New(registry.DefaultConfig())
	edgeLabels := []string{"client", "server", "connection_type"}
	requests := reg.NewCounter(metricRequests, edgeLabels)
	srv := reg.NewHistogramWith(metricServerSeconds, edgeLabels, []float64{0.1, 0.5, 1}, both)
	cli := reg.NewHistogramWith(metricClientSeconds, edgeLabels, []float64{0.1, 0.5, 1}, both)
	spanLabels := []string{"service", "span_name", "span_kind", "status_code"}
	lat := reg.NewHistogramWith(metricLatency, spanLabels, []float64{0.1, 0.5, 1}, both, metricCalls)
	edgeLV := registry.MakeLabelValues([]string{"frontend", "checkout", ""})
	spanLV := registry.MakeLabelValues([]string{"checkout", "GET /", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET"})
	start := time.Now().Truncate(15 * time.Second)
	var at time.Time
	for i := range 21 {
		at = start.Add(time.Duration(i) * 15 * time.Second)
		for range 30 {
			requests.Add(edgeLV, 1)
			srv.Observe(edgeLV, 0.001, 1, nil, 0)
			cli.Observe(edgeLV, 0.0012, 1, nil, 0)
			lat.Observe(spanLV, 0.001, 1, nil, 0, 1)
		}
		app := st.Appender(context.Background())
		if _, err := reg.Collect(app, at); err != nil {
			t.Fatal(err)
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for _, native := range []bool{false, true} {
		q := NewQuerier(nativeStores{stores{tenant.Default: st}, native, native}, DefaultConfig(), logger, nil)
		g, err := q.ServiceGraph(context.Background(), tenant.Default, GraphOptions{Start: at.Add(-5 * time.Minute), End: at})
		if err != nil || len(g.Edges) != 1 {
			t.Fatalf("native %v: graph %+v, %v", native, g, err)
		}
		e := g.Edges[0]
		var node Node
		for _, n := range g.Nodes {
			if n.ID == "checkout" {
				node = n
			}
		}
		rows, err := q.REDTable(context.Background(), tenant.Default, REDOptions{Start: at.Add(-5 * time.Minute), End: at})
		if err != nil || len(rows) != 1 {
			t.Fatalf("native %v: RED %+v, %v", native, rows, err)
		}
		// Native: within the 9 % bucket of 1 ms. Classic: the first
		// bound, 100 ms, marked "under".
		inBucket := func(ms float64) bool { return ms > 0.95 && ms < 1.1 }
		if native {
			if !inBucket(e.P90Ms) || e.P90Under || !inBucket(node.P90Ms) || node.P90Under || !inBucket(rows[0].P90Ms) || !near(e.AvgMs, 1) {
				t.Errorf("native: edge avg %v p90 %v (under %v), node p90 %v (under %v), RED p90 %v; want about 1 ms",
					e.AvgMs, e.P90Ms, e.P90Under, node.P90Ms, node.P90Under, rows[0].P90Ms)
			}
			continue
		}
		// The node graph reads the native series only when told they are
		// written; the RED table's PromQL prefers them wherever they are.
		if e.P90Ms != 100 || !e.P90Under || node.P90Ms != 100 || !inBucket(rows[0].P90Ms) {
			t.Errorf("classic: edge p90 %v (under %v), node p90 %v, RED p90 %v; want the classic graph and a native RED p90", e.P90Ms, e.P90Under, node.P90Ms, rows[0].P90Ms)
		}
	}
}
