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
