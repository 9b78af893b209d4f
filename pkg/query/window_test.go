package query

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"

	"github.com/spangraph/spangraph/pkg/store"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// TestWindowRatesMatchPromQL holds the streaming evaluator to PromQL's
// rate() on the shapes a store holds: steady counters, resets, stale
// markers, series that start or stop inside the window, irregular
// gaps, samples on the window's edges and series too short to rate.
func TestWindowRatesMatchPromQL(t *testing.T) {
	at := func(s float64) int64 { return end.Add(time.Duration(s * float64(time.Second))).UnixMilli() }
	type sample struct {
		t int64
		v float64
	}
	steady := func(from, to, every, perSec float64) []sample {
		var out []sample
		for s := from; s <= to; s += every {
			out = append(out, sample{at(s), (s - from) * perSec})
		}
		return out
	}
	cases := map[string][]sample{
		"steady":             steady(-3600, 0, 15, 2),
		"starts in window":   steady(-1200, 0, 15, 3),
		"stops in window":    steady(-3600, -900, 15, 1),
		"reset":              append(steady(-3600, -1800, 15, 2), steady(-1785, 0, 15, 5)...),
		"stale then back":    append(append(steady(-3600, -2000, 15, 1), sample{at(-1985), math.Float64frombits(value.StaleNaN)}), steady(-1000, 0, 15, 1)...),
		"irregular":          {{at(-3500), 10}, {at(-3490), 11}, {at(-1000), 50}, {at(-7), 400}},
		"on the left edge":   steady(-3600, 0, 60, 4),
		"before the window":  steady(-7200, -3600, 15, 1),
		"one sample":         {{at(-30), 5}},
		"starts above zero":  {{at(-600), 1000}, {at(-300), 1001}, {at(0), 1002}},
		"flat":               {{at(-600), 7}, {at(-300), 7}, {at(0), 7}},
		"reset to above one": {{at(-600), 100}, {at(-300), 150}, {at(-200), 30}, {at(0), 60}},
		"small reset":        {{at(-400), 5}, {at(-300), 6}, {at(-200), 5.5}, {at(-100), 7}, {at(0), 8}},
		// 115 s from a 10m window's start, with 100 s between samples:
		// just past rate()'s 110 % threshold, so no full extrapolation.
		"past the threshold": {{at(-485), 1000}, {at(-385), 1100}, {at(-285), 1200}, {at(-185), 1300}, {at(-85), 1400}},
	}
	for _, w := range []time.Duration{time.Hour, 10 * time.Minute, time.Minute} {
		t.Run(w.String(), func(t *testing.T) {
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			st, err := store.Open(t.TempDir(), tenant.Default, store.Options{Retention: 24 * time.Hour}, logger, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			// In time order: the head refuses samples far behind its newest.
			type point struct {
				l labels.Labels
				sample
			}
			var all []point
			for name, samples := range cases {
				l := labels.FromStrings("__name__", "c_total", "client", name, "server", "s")
				for _, s := range samples {
					all = append(all, point{l, s})
				}
			}
			sort.SliceStable(all, func(i, j int) bool { return all[i].t < all[j].t })
			app := st.Appender(context.Background())
			for _, p := range all {
				if _, err := app.Append(0, p.l, p.t, p.v); err != nil {
					t.Fatal(err)
				}
			}
			if err := app.Commit(); err != nil {
				t.Fatal(err)
			}
			q := NewQuerier(stores{tenant.Default: st}, DefaultConfig(), logger, nil)

			want := map[string]float64{}
			res, err := q.Instant(context.Background(), tenant.Default, fmt.Sprintf("rate(c_total[%ds])", int(w.Seconds())), end)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range res.Value.(promql.Vector) {
				want[s.Metric.Get("client")] = s.F
			}

			got := map[string]float64{}
			job := windowJob{
				matchers: []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "c_total")},
				add:      func(l labels.Labels, _ seriesKey, r float64) { got[l.Get("client")] = r },
			}
			if err := q.window(tenant.Default, end, w).run(context.Background(), []windowJob{job}); err != nil {
				t.Fatal(err)
			}
			if len(want) < 3 {
				t.Fatalf("PromQL rated only %v: the cases do not exercise the window", want)
			}
			for name := range cases {
				w, wok := want[name]
				g, gok := got[name]
				if wok != gok || (wok && math.Abs(g-w) > 1e-12*math.Max(1, math.Abs(w))) {
					t.Errorf("%s: window rate %v (present %v), PromQL %v (present %v)", name, g, gok, w, wok)
				}
			}
		})
	}
}
