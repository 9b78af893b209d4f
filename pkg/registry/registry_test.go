package registry

import (
	"encoding/hex"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/spangraph/spangraph/pkg/budget"
)

// baseTime is a collection time near the real clock, half a minute past a
// minute: updates are stamped with the registry's coarse clock, which
// starts at time.Now(), so collection times far from it would make every
// series stale at once.
func baseTime() time.Time {
	return time.Now().Truncate(time.Minute).Add(30*time.Second + 250*time.Millisecond)
}

// zeroAt is where the leading zero of a series first collected at now must
// land: one second before the minute now falls in.
func zeroAt(now time.Time) int64 {
	return now.Truncate(time.Minute).Add(-time.Second).UnixMilli()
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// defaultLatencyBuckets are the span-metrics buckets of the contract:
// 0.002 × 2^k s, k = 0..13.
func defaultLatencyBuckets() []float64 {
	b := make([]float64, 14)
	b[0] = 0.002
	for i := 1; i < len(b); i++ {
		b[i] = b[i-1] * 2
	}
	return b
}

func collect(t *testing.T, r *Registry, rec *recorder, now time.Time) ([]sample, []recordedExemplar, CollectStats) {
	t.Helper()
	s, _, e, stats := collectAll(t, r, rec, now)
	return s, e, stats
}

// collectAll is collect with the native histograms appended.
func collectAll(t *testing.T, r *Registry, rec *recorder, now time.Time) ([]sample, []histSample, []recordedExemplar, CollectStats) {
	t.Helper()
	stats, err := r.Collect(rec, now)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if len(rec.refErrors) > 0 {
		t.Fatalf("wrong series refs: %v", rec.refErrors)
	}
	h := rec.hists
	rec.hists = nil
	s, e := rec.take()
	if stats.Samples != len(s)+len(h) {
		t.Errorf("stats.Samples = %d, appended %d", stats.Samples, len(s)+len(h))
	}
	return s, h, e, stats
}

func TestCounterAcrossCollections(t *testing.T) {
	r := New(DefaultConfig())
	c := r.NewCounter("traces_spanmetrics_calls_total", []string{"service", "span_name"})
	get := MakeLabelValues([]string{"cart", "GET /cart"})
	post := MakeLabelValues([]string{"cart", "POST /cart"})
	c.Add(get, 1)
	c.Add(get, 2)
	c.Add(post, 0.5)

	rec := newRecorder()
	t0 := baseTime()
	sGet := series("traces_spanmetrics_calls_total", "service", "cart", "span_name", "GET /cart")
	sPost := series("traces_spanmetrics_calls_total", "service", "cart", "span_name", "POST /cart")
	got, _, stats := collect(t, r, rec, t0)
	// First collection: a leading zero, then the value.
	want := sortSamples([]sample{
		{sGet, zeroAt(t0), 0}, {sGet, ms(t0), 3},
		{sPost, zeroAt(t0), 0}, {sPost, ms(t0), 0.5},
	})
	if d := diffSamples(got, want); d != "" {
		t.Fatalf("first collection:\n%s", d)
	}
	if stats.ActiveSeries != 2 || r.ActiveSeries() != 2 || stats.Removed != 0 {
		t.Errorf("stats = %+v, ActiveSeries = %d", stats, r.ActiveSeries())
	}

	// Later collections: the running total, no more zeros, unchanged
	// series still reported.
	c.Add(get, 4)
	t1 := t0.Add(15 * time.Second)
	got, _, _ = collect(t, r, rec, t1)
	want = sortSamples([]sample{{sGet, ms(t1), 7}, {sPost, ms(t1), 0.5}})
	if d := diffSamples(got, want); d != "" {
		t.Fatalf("second collection:\n%s", d)
	}
	t2 := t1.Add(15 * time.Second)
	got, _, _ = collect(t, r, rec, t2)
	want = sortSamples([]sample{{sGet, ms(t2), 7}, {sPost, ms(t2), 0.5}})
	if d := diffSamples(got, want); d != "" {
		t.Fatalf("third collection:\n%s", d)
	}
}

// TestLeadingZeroTimestamp: the zero lands at the end of the previous
// minute minus a second (Tempo's convention), so that downsampling never
// merges it with the first value, and always before the first value.
func TestLeadingZeroTimestamp(t *testing.T) {
	minute := time.Now().Truncate(time.Minute)
	for _, off := range []time.Duration{
		0, // exactly on the minute: the zero is a second before
		400 * time.Microsecond,
		999 * time.Millisecond,
		time.Second,
		30*time.Second + 250*time.Millisecond,
		59*time.Second + 999*time.Millisecond,
	} {
		now := minute.Add(off)
		r := New(DefaultConfig())
		c := r.NewCounter("c_total", nil)
		h := r.NewHistogram("h", nil, []float64{1})
		g := r.NewGauge("g", nil)
		c.Add(MakeLabelValues(nil), 1)
		h.Observe(MakeLabelValues(nil), 0.5, 1, nil, 0)
		g.Set(MakeLabelValues(nil), 1)
		rec := newRecorder()
		got, _, _ := collect(t, r, rec, now)
		wantZero := minute.Add(-time.Second).UnixMilli()
		zeros := map[string]bool{}
		for _, s := range got {
			switch {
			case s.t == ms(now):
			case s.t == wantZero && s.v == 0:
				zeros[s.series] = true
			default:
				t.Errorf("now=+%v: unexpected sample %v (zero should be at %d)", off, s, wantZero)
			}
		}
		// Counters and the histogram's buckets and count get a zero; the
		// gauge and _sum do not.
		want := []string{series("c_total"), series("h_bucket", "le", "1"), series("h_bucket", "le", "+Inf"), series("h_count")}
		for _, w := range want {
			if !zeros[w] {
				t.Errorf("now=+%v: no leading zero for %s", off, w)
			}
		}
		if len(zeros) != len(want) {
			t.Errorf("now=+%v: leading zeros for %v, want exactly %v", off, zeros, want)
		}
	}
}

func TestHistogram(t *testing.T) {
	r := New(DefaultConfig())
	h := r.NewHistogram("traces_spanmetrics_latency", []string{"service", "span_kind"}, defaultLatencyBuckets())
	lv := MakeLabelValues([]string{"cart", "SPAN_KIND_SERVER"})
	for _, o := range []struct{ v, w float64 }{
		{0.001, 1},
		{0.002, 1}, // on a bound: le is inclusive
		{0.003, 4}, // a sampled span standing for 4
		{0.5, 1},
		{16.384, 1},
		{20, 2}, // above every bound
	} {
		h.Observe(lv, o.v, o.w, nil, 0)
	}
	les := []string{"0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512", "1.024", "2.048", "4.096", "8.192", "16.384", "+Inf"}
	cumulative := []float64{2, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 8, 10}
	wantSum := 0.001 + 0.002 + 4*0.003 + 0.5 + 16.384 + 2*20

	t0 := baseTime()
	rec := newRecorder()
	got, _, stats := collect(t, r, rec, t0)
	name := "traces_spanmetrics_latency"
	ls := []string{"service", "cart", "span_kind", "SPAN_KIND_SERVER"}
	var want []sample
	for i, le := range les {
		s := series(name+"_bucket", append([]string{"le", le}, ls...)...)
		want = append(want, sample{s, zeroAt(t0), 0}, sample{s, ms(t0), cumulative[i]})
	}
	want = append(want,
		sample{series(name+"_sum", ls...), ms(t0), wantSum},
		sample{series(name+"_count", ls...), zeroAt(t0), 0},
		sample{series(name+"_count", ls...), ms(t0), 10})
	if d := diffSamples(got, sortSamples(want)); d != "" {
		t.Fatalf("first collection:\n%s", d)
	}
	if stats.ActiveSeries != 1 {
		t.Errorf("a histogram counts once in ActiveSeries, got %d", stats.ActiveSeries)
	}

	// More observations accumulate; no zeros the second time.
	h.Observe(lv, 0.004, 1, nil, 0)
	t1 := t0.Add(15 * time.Second)
	got, _, _ = collect(t, r, rec, t1)
	want = want[:0]
	for i, le := range les {
		c := cumulative[i]
		if i >= 1 {
			c++
		}
		want = append(want, sample{series(name+"_bucket", append([]string{"le", le}, ls...)...), ms(t1), c})
	}
	want = append(want, sample{series(name+"_sum", ls...), ms(t1), wantSum + 0.004}, sample{series(name+"_count", ls...), ms(t1), 11})
	if d := diffSamples(got, sortSamples(want)); d != "" {
		t.Fatalf("second collection:\n%s", d)
	}
}

// TestCompanionCounters: counters named with a histogram are series of
// their own, with the histogram's labels, leading zeros and staleness,
// and count as active series of their own under the cap.
func TestCompanionCounters(t *testing.T) {
	cfg := DefaultConfig()
	cfg.StaleDuration = 15 * time.Minute
	cfg.MaxActiveSeries = 4
	r := New(cfg)
	h := r.NewHistogram("lat", []string{"service"}, []float64{0.1}, "calls_total", "size_total")
	cart, shop := MakeLabelValues([]string{"cart"}), MakeLabelValues([]string{"shop"})
	h.Observe(cart, 0.05, 1, nil, 0, 1, 300)
	h.Observe(cart, 0.5, 2, nil, 0, 2, 1000)
	// 3 active series for cart; shop's 3 more would pass the cap of 4.
	h.Observe(shop, 0.05, 1, nil, 0, 1, 10)
	if r.ActiveSeries() != 3 || r.Overflowed() != 1 {
		t.Fatalf("ActiveSeries = %d, Overflowed = %d; want 3 and 1", r.ActiveSeries(), r.Overflowed())
	}

	t0 := baseTime()
	rec := newRecorder()
	got, _, _ := collect(t, r, rec, t0)
	ls := []string{"service", "cart"}
	want := []sample{
		{series("lat_bucket", "le", "0.1", "service", "cart"), zeroAt(t0), 0},
		{series("lat_bucket", "le", "0.1", "service", "cart"), ms(t0), 1},
		{series("lat_bucket", "le", "+Inf", "service", "cart"), zeroAt(t0), 0},
		{series("lat_bucket", "le", "+Inf", "service", "cart"), ms(t0), 3},
		{series("lat_sum", ls...), ms(t0), 0.05 + 2*0.5},
		{series("lat_count", ls...), zeroAt(t0), 0},
		{series("lat_count", ls...), ms(t0), 3},
		{series("calls_total", ls...), zeroAt(t0), 0},
		{series("calls_total", ls...), ms(t0), 3},
		{series("size_total", ls...), zeroAt(t0), 0},
		{series("size_total", ls...), ms(t0), 1300},
	}
	ov := []string{OverflowLabel, "true"}
	for _, s := range []sample{
		{series("lat_bucket", append([]string{"le", "0.1"}, ov...)...), ms(t0), 1},
		{series("lat_bucket", append([]string{"le", "+Inf"}, ov...)...), ms(t0), 1},
		{series("lat_sum", ov...), ms(t0), 0.05},
		{series("lat_count", ov...), ms(t0), 1},
		{series("calls_total", ov...), ms(t0), 1},
		{series("size_total", ov...), ms(t0), 10},
	} {
		want = append(want, s)
	}
	got = withoutOverflowZeros(got)
	if d := diffSamples(got, sortSamples(want)); d != "" {
		t.Fatalf("first collection:\n%s", d)
	}

	// Sixteen minutes without updates: all six of cart's series go
	// stale and the three active series are released.
	got, _, stats := collect(t, r, rec, t0.Add(16*time.Minute))
	stale := 0
	for _, s := range got {
		if value.IsStaleNaN(s.v) {
			stale++
		}
	}
	if stale != 6 || stats.ActiveSeries != 0 {
		t.Errorf("%d staleness markers and %d active series, want 6 and 0", stale, stats.ActiveSeries)
	}
}

// withoutOverflowZeros drops the leading zeros of overflow series, which
// depend on when the overflow series was created.
func withoutOverflowZeros(in []sample) []sample {
	var out []sample
	for _, s := range in {
		if strings.Contains(s.series, OverflowLabel) && s.v == 0 {
			continue
		}
		out = append(out, s)
	}
	return out
}

// TestBucketLabels: le values are the shortest decimal form of each bound,
// which is what the contract's buckets and Prometheus clients write.
func TestBucketLabels(t *testing.T) {
	graph := make([]float64, 8)
	graph[0] = 0.1
	for i := 1; i < len(graph); i++ {
		graph[i] = graph[i-1] * 2
	}
	cases := []struct {
		bounds []float64
		want   []string
	}{
		{defaultLatencyBuckets(), []string{"0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512", "1.024", "2.048", "4.096", "8.192", "16.384", "+Inf"}},
		{graph, []string{"0.1", "0.2", "0.4", "0.8", "1.6", "3.2", "6.4", "12.8", "+Inf"}},
		{[]float64{0.005, 1, 2.5, 1e6}, []string{"0.005", "1", "2.5", "1000000", "+Inf"}},
		{nil, []string{"+Inf"}},
	}
	for _, tc := range cases {
		r := New(DefaultConfig())
		h := r.NewHistogram("h", nil, tc.bounds)
		if strings.Join(h.les, " ") != strings.Join(tc.want, " ") {
			t.Errorf("bounds %v: le = %v, want %v", tc.bounds, h.les, tc.want)
		}
		// And they reach the appender as labels.
		h.Observe(MakeLabelValues(nil), 0, 1, nil, 0)
		rec := newRecorder()
		got, _, _ := collect(t, r, rec, baseTime())
		seen := map[string]bool{}
		for _, s := range got {
			seen[s.series] = true
		}
		for _, le := range tc.want {
			if !seen[series("h_bucket", "le", le)] {
				t.Errorf("no series h_bucket{le=%q}", le)
			}
		}
	}
}

func TestEmptyValueDropsLabel(t *testing.T) {
	r := New(DefaultConfig())
	c := r.NewCounter("calls_total", []string{"service", "span_name", "status_message"})
	c.Add(MakeLabelValues([]string{"cart", "", "boom"}), 1)
	c.Add(MakeLabelValues([]string{"", "", ""}), 2)
	// The same value under different names must stay two series.
	c.Add(MakeLabelValues([]string{"x", "", ""}), 3)
	c.Add(MakeLabelValues([]string{"", "x", ""}), 4)
	h := r.NewHistogram("lat", []string{"service", "db"}, []float64{1})
	h.Observe(MakeLabelValues([]string{"cart", ""}), 0.5, 1, nil, 0)

	t0 := baseTime()
	got, _, _ := collect(t, r, newRecorder(), t0)
	values := map[string]float64{}
	for _, s := range got {
		if s.t == ms(t0) {
			values[s.series] = s.v
		}
	}
	want := map[string]float64{
		series("calls_total", "service", "cart", "status_message", "boom"): 1,
		series("calls_total"):                                 2,
		series("calls_total", "service", "x"):                 3,
		series("calls_total", "span_name", "x"):               4,
		series("lat_bucket", "le", "1", "service", "cart"):    1,
		series("lat_bucket", "le", "+Inf", "service", "cart"): 1,
		series("lat_sum", "service", "cart"):                  0.5,
		series("lat_count", "service", "cart"):                1,
	}
	if len(values) != len(want) {
		t.Errorf("got series %v, want %v", values, want)
	}
	for s, v := range want {
		if values[s] != v {
			t.Errorf("%s = %v, want %v (all: %v)", s, values[s], v, values)
		}
	}
}

func TestStaleness(t *testing.T) {
	cfg := DefaultConfig()
	cfg.StaleDuration = 15 * time.Minute
	r := New(cfg)
	c := r.NewCounter("calls_total", []string{"service"})
	h := r.NewHistogram("lat", []string{"service"}, []float64{0.1, 1})
	g := r.NewGauge("queue", []string{"service"})
	cart, shop := MakeLabelValues([]string{"cart"}), MakeLabelValues([]string{"shop"})
	c.Add(cart, 1)
	c.Add(shop, 1)
	h.Observe(cart, 0.05, 1, nil, 0)
	g.Set(cart, 7)
	rec := newRecorder()

	t0 := baseTime()
	collect(t, r, rec, t0)
	if r.ActiveSeries() != 4 {
		t.Fatalf("ActiveSeries = %d, want 4", r.ActiveSeries())
	}

	// Ten minutes on, only cart's counter is updated; six minutes later
	// everything else is 16 minutes old and goes stale.
	t1 := t0.Add(10 * time.Minute)
	collect(t, r, rec, t1)
	c.Add(cart, 1)
	t2 := t0.Add(16 * time.Minute)
	got, _, stats := collect(t, r, rec, t2)
	stale := map[string]bool{}
	for _, s := range got {
		if value.IsStaleNaN(s.v) {
			if s.t != ms(t2) {
				t.Errorf("staleness marker at %d, want %d", s.t, ms(t2))
			}
			stale[s.series] = true
		}
	}
	wantStale := []string{
		series("calls_total", "service", "shop"),
		series("lat_bucket", "le", "0.1", "service", "cart"),
		series("lat_bucket", "le", "1", "service", "cart"),
		series("lat_bucket", "le", "+Inf", "service", "cart"),
		series("lat_sum", "service", "cart"),
		series("lat_count", "service", "cart"),
		series("queue", "service", "cart"),
	}
	for _, s := range wantStale {
		if !stale[s] {
			t.Errorf("no staleness marker for %s", s)
		}
	}
	if len(stale) != len(wantStale) {
		t.Errorf("staleness markers for %v, want exactly %v", stale, wantStale)
	}
	if d := diffSamples(filter(got, func(s sample) bool { return !value.IsStaleNaN(s.v) }),
		[]sample{{series("calls_total", "service", "cart"), ms(t2), 2}}); d != "" {
		t.Errorf("live series:\n%s", d)
	}
	if stats.Removed != 3 || stats.ActiveSeries != 1 || r.ActiveSeries() != 1 {
		t.Errorf("after staleness: stats %+v, ActiveSeries %d; want 3 removed, 1 active", stats, r.ActiveSeries())
	}

	// Forgotten: the next collection says nothing of them.
	t3 := t2.Add(time.Minute)
	got, _, _ = collect(t, r, rec, t3)
	if len(got) != 1 {
		t.Errorf("after removal: %v, want only the live counter", got)
	}

	// Coming back, a series starts over: a new leading zero and its new
	// count, not the old total.
	c.Add(shop, 5)
	h.Observe(cart, 0.5, 1, nil, 0)
	t4 := t3.Add(time.Minute)
	got, _, _ = collect(t, r, rec, t4)
	want := sortSamples([]sample{
		{series("calls_total", "service", "cart"), ms(t4), 2},
		{series("calls_total", "service", "shop"), zeroAt(t4), 0},
		{series("calls_total", "service", "shop"), ms(t4), 5},
		{series("lat_bucket", "le", "0.1", "service", "cart"), zeroAt(t4), 0},
		{series("lat_bucket", "le", "0.1", "service", "cart"), ms(t4), 0},
		{series("lat_bucket", "le", "1", "service", "cart"), zeroAt(t4), 0},
		{series("lat_bucket", "le", "1", "service", "cart"), ms(t4), 1},
		{series("lat_bucket", "le", "+Inf", "service", "cart"), zeroAt(t4), 0},
		{series("lat_bucket", "le", "+Inf", "service", "cart"), ms(t4), 1},
		{series("lat_sum", "service", "cart"), ms(t4), 0.5},
		{series("lat_count", "service", "cart"), zeroAt(t4), 0},
		{series("lat_count", "service", "cart"), ms(t4), 1},
	})
	if d := diffSamples(got, want); d != "" {
		t.Errorf("revived series:\n%s", d)
	}
	if r.ActiveSeries() != 3 {
		t.Errorf("ActiveSeries = %d, want 3", r.ActiveSeries())
	}
}

func filter(s []sample, keep func(sample) bool) []sample {
	var out []sample
	for _, x := range s {
		if keep(x) {
			out = append(out, x)
		}
	}
	return out
}

func TestMaxActiveSeriesOverflow(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxActiveSeries = 3
	r := New(cfg)
	c := r.NewCounter("calls_total", []string{"service"})
	h := r.NewHistogram("lat", []string{"service"}, []float64{0.01})
	lv := func(s string) LabelValues { return MakeLabelValues([]string{s}) }

	c.Add(lv("a"), 1)
	c.Add(lv("b"), 1)
	h.Observe(lv("a"), 0.5, 1, nil, 0) // the cap is shared by all metrics
	// From here on new series overflow...
	c.Add(lv("c"), 5)
	c.Add(lv("d"), 1)
	h.Observe(lv("b"), 0.003, 2, nil, 0)
	// ...but existing ones still count normally.
	c.Add(lv("a"), 1)
	h.Observe(lv("a"), 0.5, 1, nil, 0)

	if r.ActiveSeries() != 3 {
		t.Errorf("ActiveSeries = %d, want the cap, 3", r.ActiveSeries())
	}
	if r.Overflowed() != 3 {
		t.Errorf("Overflowed = %d, want 3 (c, d, histogram b)", r.Overflowed())
	}
	t0 := baseTime()
	got, _, stats := collect(t, r, newRecorder(), t0)
	if stats.ActiveSeries != 3 {
		t.Errorf("stats.ActiveSeries = %d", stats.ActiveSeries)
	}
	values := map[string]float64{}
	for _, s := range got {
		if s.t == ms(t0) {
			values[s.series] = s.v
		}
	}
	want := map[string]float64{
		series("calls_total", "service", "a"):                     2,
		series("calls_total", "service", "b"):                     1,
		series("calls_total", OverflowLabel, "true"):              6,
		series("lat_bucket", "le", "0.01", "service", "a"):        0,
		series("lat_bucket", "le", "+Inf", "service", "a"):        2,
		series("lat_sum", "service", "a"):                         1,
		series("lat_count", "service", "a"):                       2,
		series("lat_bucket", "le", "0.01", OverflowLabel, "true"): 2,
		series("lat_bucket", "le", "+Inf", OverflowLabel, "true"): 2,
		series("lat_sum", OverflowLabel, "true"):                  0.006,
		series("lat_count", OverflowLabel, "true"):                2,
	}
	for s, v := range want {
		if got, ok := values[s]; !ok || math.Abs(got-v) > 1e-12 {
			t.Errorf("%s = %v (present %v), want %v", s, got, ok, v)
		}
	}
	if len(values) != len(want) {
		t.Errorf("series %v, want %v", values, want)
	}
	// The overflow counter is a counter too: it starts with a zero.
	zero := false
	for _, s := range got {
		zero = zero || (s.series == series("calls_total", OverflowLabel, "true") && s.t == zeroAt(t0) && s.v == 0)
	}
	if !zero {
		t.Error("the overflow counter has no leading zero")
	}

	// Once series go stale, the room they free admits new series again.
	far := t0.Add(time.Hour)
	collect(t, r, newRecorder(), far)
	if r.ActiveSeries() != 0 {
		t.Fatalf("ActiveSeries after staleness = %d", r.ActiveSeries())
	}
	c.Add(lv("e"), 1)
	if r.ActiveSeries() != 1 || r.Overflowed() != 3 {
		t.Errorf("a new series after staleness: ActiveSeries %d, Overflowed %d", r.ActiveSeries(), r.Overflowed())
	}
}

// TestLabelLengthLimits: longer label names and values are truncated, and a
// series with a truncated value must still be one series: updating it
// twice adds up, and no two series with one label set reach the store (a
// TSDB keeps one of the samples appended at one timestamp and drops the
// rest silently).
func TestLabelLengthLimits(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxLabelNameLength = 8
	cfg.MaxLabelValueLength = 5

	t.Run("a truncated value stays one series", func(t *testing.T) {
		r := New(cfg)
		c := r.NewCounter("calls_total", []string{"service_name", "op"})
		c.Add(MakeLabelValues([]string{"checkout", "a"}), 1)
		c.Add(MakeLabelValues([]string{"checkout", "a"}), 1)
		c.Add(MakeLabelValues([]string{"checkin", "a"}), 1) // same first five bytes
		c.Add(MakeLabelValues([]string{"cart", "a"}), 1)    // short enough
		values := currentValues(t, r)
		want := map[string]float64{
			series("calls_total", "service_", "check", "op", "a"): 3,
			series("calls_total", "service_", "cart", "op", "a"):  1,
		}
		checkCurrent(t, values, want)
		if n := r.ActiveSeries(); n != 2 {
			t.Errorf("ActiveSeries = %d, want 2", n)
		}
	})

	t.Run("info gauge names follow the name limit", func(t *testing.T) {
		r := New(cfg)
		g := r.NewInfoGauge("target_info")
		g.Set(MakeLabelValues([]string{"very_long_attribute", "value-long", "job", "j"}), 1)
		checkCurrent(t, currentValues(t, r), map[string]float64{
			series("target_info", "very_lon", "value", "job", "j"): 1,
		})
	})
}

// currentValues collects r and returns the samples at the collection
// time, per series.
func currentValues(t *testing.T, r *Registry) map[string][]float64 {
	t0 := baseTime()
	got, _, _ := collect(t, r, newRecorder(), t0)
	values := map[string][]float64{}
	for _, s := range got {
		if s.t == ms(t0) {
			values[s.series] = append(values[s.series], s.v)
		}
	}
	return values
}

func checkCurrent(t *testing.T, values map[string][]float64, want map[string]float64) {
	t.Helper()
	for s, vs := range values {
		if len(vs) > 1 {
			t.Errorf("%s appended %d times at one timestamp: %v", s, len(vs), vs)
		}
	}
	for s, v := range want {
		if vs := values[s]; len(vs) == 0 || vs[0] != v {
			t.Errorf("%s = %v, want [%v]", s, vs, v)
		}
	}
	if len(values) != len(want) {
		t.Errorf("collected %v, want %v", values, want)
	}
}

func TestExemplars(t *testing.T) {
	r := New(DefaultConfig())
	h := r.NewHistogram("lat", []string{"service"}, defaultLatencyBuckets())
	lv := MakeLabelValues([]string{"cart"})
	trace := func(b byte) *[16]byte {
		var id [16]byte
		for i := range id {
			id[i] = b + byte(i)
		}
		return &id
	}
	rec := newRecorder()
	t0 := baseTime()

	cases := []struct {
		name    string
		observe func()
		le      string
		traceID *[16]byte
		value   float64
		ts      int64
	}{
		{"the latest exemplar wins; a span without trace id does not replace it", func() {
			h.Observe(lv, 0.003, 1, trace(1), 1000)
			h.Observe(lv, 0.3, 1, trace(2), 2000)
			h.Observe(lv, 0.01, 1, nil, 3000)
		}, "0.512", trace(2), 0.3, 2000},
		{"on a bound", func() { h.Observe(lv, 0.002, 1, trace(3), 4000) }, "0.002", trace(3), 0.002, 4000},
		{"above every bound", func() { h.Observe(lv, 100, 1, trace(4), 5000) }, "+Inf", trace(4), 100, 5000},
		{"no exemplar when nothing carried a trace id", func() { h.Observe(lv, 1, 1, nil, 6000) }, "", nil, 0, 0},
	}
	for i, tc := range cases {
		tc.observe()
		_, ex, _ := collect(t, r, rec, t0.Add(time.Duration(i)*15*time.Second))
		if tc.traceID == nil {
			if len(ex) != 0 {
				t.Errorf("%s: exemplars %v", tc.name, ex)
			}
			continue
		}
		if len(ex) != 1 {
			t.Fatalf("%s: %d exemplars, want 1: %v", tc.name, len(ex), ex)
		}
		e := ex[0]
		if want := series("lat_bucket", "le", tc.le, "service", "cart"); e.series != want {
			t.Errorf("%s: exemplar on %s, want %s", tc.name, e.series, want)
		}
		if got := e.e.Labels.Get("trace_id"); got != hex.EncodeToString(tc.traceID[:]) || e.e.Labels.Len() != 1 {
			t.Errorf("%s: exemplar labels %v, want trace_id=%x", tc.name, e.e.Labels, tc.traceID[:])
		}
		if e.e.Value != tc.value || e.e.Ts != tc.ts || !e.e.HasTs {
			t.Errorf("%s: exemplar %+v, want value %v at %d", tc.name, e.e, tc.value, tc.ts)
		}
	}
}

func TestInfoGaugeAndGauge(t *testing.T) {
	r := New(DefaultConfig())
	info := r.NewInfoGauge("traces_target_info")
	pairs := []string{"job", "shop/cart", "instance", "i-1", "k8s_pod_name", "", "zone", "eu-1"}
	info.Set(MakeLabelValues(pairs), 1)
	info.Set(MakeLabelValues(append([]string(nil), pairs...)), 1) // same series again
	g := r.NewGauge("queue_length", []string{"queue"})
	g.Set(MakeLabelValues([]string{"q"}), 5)
	g.Set(MakeLabelValues([]string{"q"}), 3) // set, not added

	t0 := baseTime()
	got, _, _ := collect(t, r, newRecorder(), t0)
	// Gauges get no leading zero.
	want := sortSamples([]sample{
		{series("traces_target_info", "instance", "i-1", "job", "shop/cart", "zone", "eu-1"), ms(t0), 1},
		{series("queue_length", "queue", "q"), ms(t0), 3},
	})
	if d := diffSamples(got, want); d != "" {
		t.Fatal(d)
	}
}

// TestConcurrentUpdates runs updates from many goroutines against a
// collection loop; run it with -race. Totals must be exact: no update may
// be lost or counted twice, and racing creations of one series must end in
// one series.
func TestConcurrentUpdates(t *testing.T) {
	r := New(DefaultConfig())
	c := r.NewCounter("calls_total", []string{"service", "span_name"})
	h := r.NewHistogram("lat", []string{"service", "span_name"}, []float64{0.1, 1, 2})
	const workers, perWorker, nSeries = 8, 4000, 16
	lvs := make([]LabelValues, nSeries)
	for i := range lvs {
		lvs[i] = MakeLabelValues([]string{"svc", strings.Repeat("x", i+1)})
	}
	// Binary fractions, so that float sums are exact in any order.
	obs := []float64{0.0625, 0.5, 1.5, 4}

	var stop atomic.Bool
	collected := make(chan int)
	go func() {
		n := 0
		for !stop.Load() {
			if _, err := r.Collect(nopAppender{}, time.Now()); err != nil {
				t.Error(err)
			}
			n++
		}
		collected <- n
	}()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var id [16]byte
			id[0] = byte(w)
			for i := range perWorker {
				lv := lvs[(i+w)%nSeries]
				c.Add(lv, 1)
				h.Observe(lv, obs[i%len(obs)], 1, &id, int64(i))
			}
		})
	}
	wg.Wait()
	stop.Store(true)
	if n := <-collected; n == 0 {
		t.Log("no collection overlapped the updates")
	}

	t0 := time.Now()
	got, _, _ := collect(t, r, newRecorder(), t0)
	perSeries := float64(workers * perWorker / nSeries)
	values := map[string]float64{}
	for _, s := range got {
		if s.t == ms(t0) {
			values[s.series] = s.v
		}
	}
	for i := range nSeries {
		ls := []string{"service", "svc", "span_name", strings.Repeat("x", i+1)}
		checks := map[string]float64{
			series("calls_total", ls...):                                   perSeries,
			series("lat_count", ls...):                                     perSeries,
			series("lat_bucket", append([]string{"le", "0.1"}, ls...)...):  perSeries / 4,
			series("lat_bucket", append([]string{"le", "1"}, ls...)...):    perSeries / 2,
			series("lat_bucket", append([]string{"le", "2"}, ls...)...):    perSeries * 3 / 4,
			series("lat_bucket", append([]string{"le", "+Inf"}, ls...)...): perSeries,
			series("lat_sum", ls...):                                       perSeries / 4 * (0.0625 + 0.5 + 1.5 + 4),
		}
		for s, v := range checks {
			if values[s] != v {
				t.Errorf("%s = %v, want %v", s, values[s], v)
			}
		}
	}
	if n := r.ActiveSeries(); n != 2*nSeries {
		t.Errorf("ActiveSeries = %d, want %d", n, 2*nSeries)
	}
}

// TestCollectAppendErrors: a leading zero the store refuses is expendable
// (it may land before samples a revived series already has); a refused
// current sample fails the collection so that the caller rolls back.
func TestCollectAppendErrors(t *testing.T) {
	r := New(DefaultConfig())
	c := r.NewCounter("calls_total", nil)
	c.Add(MakeLabelValues(nil), 1)
	t0 := baseTime()
	rec := newRecorder()
	rec.fail = func(_ string, ts int64, _ float64) error {
		if ts != ms(t0) {
			return errOutOfOrder
		}
		return nil
	}
	got, _, _ := collect(t, r, rec, t0)
	if d := diffSamples(got, []sample{{series("calls_total"), ms(t0), 1}}); d != "" {
		t.Errorf("refused zero:\n%s", d)
	}

	rec.fail = func(string, int64, float64) error { return errOutOfOrder }
	if _, err := r.Collect(rec, t0.Add(15*time.Second)); err != errOutOfOrder {
		t.Errorf("Collect with a refused sample = %v, want the appender's error", err)
	}
}

type appendError string

func (e appendError) Error() string { return string(e) }

const errOutOfOrder = appendError("out of order sample")

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	if err := good.Validate("registry"); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	cases := []struct {
		mod func(*Config)
		key string
	}{
		{func(c *Config) { c.StaleDuration = 500 * time.Millisecond }, "registry.stale_duration"},
		{func(c *Config) { c.MaxActiveSeries = -1 }, "registry.max_active_series"},
		{func(c *Config) { c.MaxLabelNameLength = -1 }, "registry.max_label_name_length"},
		{func(c *Config) { c.MaxLabelValueLength = -1 }, "registry.max_label_value_length"},
	}
	for _, tc := range cases {
		c := DefaultConfig()
		tc.mod(&c)
		if err := c.Validate("registry"); err == nil || !strings.HasPrefix(err.Error(), tc.key+":") {
			t.Errorf("Validate = %v, want an error naming %s", err, tc.key)
		}
	}
}

func TestMakeLabelValues(t *testing.T) {
	// The separator keeps the boundaries between values in the hash.
	pairs := [][2][]string{
		{{"ab", "c"}, {"a", "bc"}},
		{{"a", ""}, {"", "a"}},
		{{"a"}, {"a", ""}},
	}
	for _, p := range pairs {
		if MakeLabelValues(p[0]).hash == MakeLabelValues(p[1]).hash {
			t.Errorf("%q and %q hash alike", p[0], p[1])
		}
	}
	v := []string{"x", "y"}
	if lv := MakeLabelValues(v); !sort.StringsAreSorted(lv.Values()) || len(lv.Values()) != 2 || MakeLabelValues(v).hash != lv.hash {
		t.Errorf("Values/hash not stable: %v", lv.Values())
	}
}

// TestSharedPool: registries that share a memory pool stop creating
// series when it is used up (their updates fold into overflow series),
// and a series gone stale or a closed registry gives its memory back.
func TestSharedPool(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxActiveSeries = 0
	// Room for exactly two histogram sets of 1 bound: 2 buckets, _sum,
	// _count and one companion counter = 5 stored series each.
	pool := budget.NewPool("memory_limit", 2*5*StoredSeriesBytes)
	a, b := New(cfg), New(cfg)
	a.UsePool(pool)
	b.UsePool(pool)
	ha := a.NewHistogram("lat", []string{"service"}, []float64{0.1}, "calls_total")
	hb := b.NewHistogram("lat", []string{"service"}, []float64{0.1}, "calls_total")
	lv := func(s string) LabelValues { return MakeLabelValues([]string{s}) }

	ha.Observe(lv("cart"), 0.05, 1, nil, 0, 1)
	hb.Observe(lv("shop"), 0.05, 1, nil, 0, 1)
	hb.Observe(lv("shop"), 0.05, 1, nil, 0, 1) // an existing series takes nothing
	ha.Observe(lv("pay"), 0.05, 1, nil, 0, 1)  // the pool is used up
	c := a.NewCounter("edges_total", []string{"client"})
	c.Add(lv("x"), 1) // a counter's one stored series does not fit either
	if pool.InUse() != pool.Size() || a.ActiveSeries() != 2 || b.ActiveSeries() != 2 || a.Overflowed() != 2 {
		t.Fatalf("in use %d of %d, active %d and %d, overflowed %d; want the pool full, 2 and 2, 2 overflowed",
			pool.InUse(), pool.Size(), a.ActiveSeries(), b.ActiveSeries(), a.Overflowed())
	}

	// b's series goes stale: its memory goes back, and a new series of a
	// fits again.
	t0 := baseTime()
	collect(t, b, newRecorder(), t0)
	collect(t, b, newRecorder(), t0.Add(cfg.StaleDuration+time.Minute))
	if b.ActiveSeries() != 0 || pool.InUse() != 5*StoredSeriesBytes {
		t.Fatalf("after staleness: b active %d, pool in use %d; want 0 and %d", b.ActiveSeries(), pool.InUse(), 5*StoredSeriesBytes)
	}
	c.Add(lv("y"), 1)
	if a.ActiveSeries() != 3 {
		t.Fatalf("a counter series did not fit after b's series went stale: active %d", a.ActiveSeries())
	}
	a.Close()
	if pool.InUse() != 0 {
		t.Fatalf("after Close: pool in use %d, want 0", pool.InUse())
	}
}

// TestLeadingZeroFloor: after a restart the zero must land after the
// newest sample the store already has, or the store refuses it and the
// counter's reset is lost; with no room left before the collection, the
// new series goes without a zero rather than with one out of order.
func TestLeadingZeroFloor(t *testing.T) {
	now := time.Now().Truncate(time.Minute).Add(30 * time.Second)
	tempo := now.Truncate(time.Minute).Add(-time.Second).UnixMilli()
	for _, tc := range []struct {
		name     string
		floor    int64
		wantZero int64 // 0: no zero
	}{
		{"floor before the minute: Tempo's place", tempo - 5000, tempo},
		{"floor after it: just after the floor", ms(now) - 10_000, ms(now) - 9_999},
		{"floor one ms before the collection: no room", ms(now) - 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(DefaultConfig())
			r.SetZeroFloor(tc.floor)
			r.SetZeroFloor(tc.floor - 100) // a lower floor never moves it back
			r.NewCounter("c_total", nil).Add(MakeLabelValues(nil), 1)
			got, _, _ := collect(t, r, newRecorder(), now)
			var zero int64
			for _, s := range got {
				if s.t != ms(now) {
					zero = s.t
				}
			}
			if zero != tc.wantZero || len(got) != map[bool]int{true: 2, false: 1}[tc.wantZero != 0] {
				t.Fatalf("samples %v; want the zero at %d", got, tc.wantZero)
			}
		})
	}
}

// Every series, overflow series included, carries the constant labels: in
// a ring that is each instance's __metrics_gen_instance.
func TestConstLabels(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxActiveSeries = 2
	cfg.ConstLabels = labels.FromStrings("__metrics_gen_instance", "node-1")
	r := New(cfg)
	c := r.NewCounter("calls_total", []string{"service"})
	h := r.NewHistogram("lat", []string{"service"}, []float64{0.01})
	lv := func(s string) LabelValues { return MakeLabelValues([]string{s}) }
	c.Add(lv("a"), 1)
	h.Observe(lv("a"), 0.5, 1, nil, 0)
	c.Add(lv("b"), 1) // overflows
	got, _, _ := collect(t, r, newRecorder(), baseTime())
	seen := map[string]bool{}
	for _, s := range got {
		seen[s.series] = true
	}
	for _, want := range []string{
		series("calls_total", "__metrics_gen_instance", "node-1", "service", "a"),
		series("calls_total", "__metrics_gen_instance", "node-1", OverflowLabel, "true"),
		series("lat_bucket", "__metrics_gen_instance", "node-1", "le", "0.01", "service", "a"),
		series("lat_count", "__metrics_gen_instance", "node-1", "service", "a"),
	} {
		if !seen[want] {
			t.Errorf("no series %s among %v", want, seen)
		}
	}
	for s := range seen {
		if !strings.Contains(s, "node-1") {
			t.Errorf("series %s lacks the constant label", s)
		}
	}
}
