package registry

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/prometheus/storage"
)

// spanMetricsLabels are the label names of traces_spanmetrics_* without
// dimensions.
var spanMetricsLabels = []string{"service", "span_name", "span_kind", "status_code"}

func spanLabelValues(i int) LabelValues {
	return MakeLabelValues([]string{
		fmt.Sprintf("service-%02d", i%20),
		fmt.Sprintf("GET /api/v1/resource/%d", i),
		"SPAN_KIND_SERVER",
		"STATUS_CODE_UNSET",
	})
}

// TestUpdateZeroAlloc: updating a series that exists allocates nothing
// (design §6), with or without an exemplar.
func TestUpdateZeroAlloc(t *testing.T) {
	r := New(DefaultConfig())
	c := r.NewCounter("calls_total", spanMetricsLabels)
	h := r.NewHistogram("latency", spanMetricsLabels, defaultLatencyBuckets())
	both := r.NewHistogramWith("latency_both", spanMetricsLabels, defaultLatencyBuckets(), HistogramOptions{Mode: Both, Native: DefaultNativeOptions()})
	lv := spanLabelValues(1)
	var trace [16]byte
	c.Add(lv, 1)
	h.Observe(lv, 0.1, 1, nil, 0)
	both.Observe(lv, 0.1, 1, nil, 0)
	for name, f := range map[string]func(){
		"Counter.Add":                     func() { c.Add(lv, 1) },
		"Histogram.Observe":               func() { h.Observe(lv, 0.1, 1, nil, 0) },
		"Histogram.Observe with exemplar": func() { h.Observe(lv, 0.1, 1, &trace, 5) },
		// A native bucket seen before: an index into the series' counts.
		"Histogram.Observe, both": func() { both.Observe(lv, 0.1, 1, &trace, 5) },
		"MakeLabelValues":         func() { lv = MakeLabelValues(lv.values) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocs per call, want 0", name, n)
		}
	}
}

func BenchmarkCounterAdd(b *testing.B) {
	r := New(DefaultConfig())
	c := r.NewCounter("calls_total", spanMetricsLabels)
	lv := spanLabelValues(1)
	c.Add(lv, 1)
	b.ReportAllocs()
	for b.Loop() {
		c.Add(lv, 1)
	}
}

// BenchmarkHistogramObserve observes values that walk over every bucket,
// per mode: classic, native, both.
func BenchmarkHistogramObserve(b *testing.B) {
	for _, bc := range []struct {
		mode         HistogramMode
		withExemplar bool
	}{{Classic, false}, {Classic, true}, {Native, false}, {Native, true}, {Both, true}} {
		b.Run(fmt.Sprintf("mode=%v/exemplar=%v", bc.mode, bc.withExemplar), func(b *testing.B) {
			withExemplar := bc.withExemplar
			r := New(DefaultConfig())
			h := r.NewHistogramWith("latency", spanMetricsLabels, defaultLatencyBuckets(), HistogramOptions{Mode: bc.mode, Native: DefaultNativeOptions()})
			lv := spanLabelValues(1)
			var trace *[16]byte
			if withExemplar {
				trace = new([16]byte)
			}
			h.Observe(lv, 0.1, 1, trace, 0)
			b.ReportAllocs()
			v := 0.0
			for b.Loop() {
				v += 0.001 // walk over the buckets
				if v > 20 {
					v = 0
				}
				h.Observe(lv, v, 1, trace, 0)
			}
		})
	}
}

// BenchmarkObserveParallel updates 1000 existing series from every core, as
// the span-metrics processor does under load.
func BenchmarkObserveParallel(b *testing.B) {
	r := New(DefaultConfig())
	c := r.NewCounter("calls_total", spanMetricsLabels)
	h := r.NewHistogram("latency", spanMetricsLabels, defaultLatencyBuckets())
	lvs := make([]LabelValues, 1000)
	for i := range lvs {
		lvs[i] = spanLabelValues(i)
		c.Add(lvs[i], 1)
		h.Observe(lvs[i], 0.01, 1, nil, 0)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			lv := lvs[i%len(lvs)]
			c.Add(lv, 1)
			h.Observe(lv, 0.05, 1, nil, 0)
			i += 7
		}
	})
}

func BenchmarkMakeLabelValues(b *testing.B) {
	values := []string{"checkout-service", "POST /api/v1/cart/{id}/items", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR", "prod", "eu-west-1"}
	b.ReportAllocs()
	var sink LabelValues
	for b.Loop() {
		sink = MakeLabelValues(values)
	}
	_ = sink
}

// BenchmarkCollect100k collects 100 000 counter series, and separately
// 100 000 histogram series of 15 buckets (17 output series each), into an
// appender that discards everything (the registry's own cost) and into a
// real TSDB head appender with a commit per collection (the cost paid
// every collection interval).
func BenchmarkCollect100k(b *testing.B) {
	const n = 100_000
	kinds := []struct {
		name  string
		build func(r *Registry)
	}{
		{"counters", func(r *Registry) {
			c := r.NewCounter("calls_total", spanMetricsLabels)
			for i := range n {
				c.Add(spanLabelValues(i), 1)
			}
		}},
		{"histograms", func(r *Registry) {
			h := r.NewHistogram("latency", spanMetricsLabels, defaultLatencyBuckets())
			for i := range n {
				h.Observe(spanLabelValues(i), float64(i%1000)/100, 1, nil, 0)
			}
		}},
	}
	for _, kind := range kinds {
		for _, store := range []string{"nop", "tsdb"} {
			b.Run(kind.name+"/"+store, func(b *testing.B) {
				cfg := DefaultConfig()
				cfg.StaleDuration = 1000 * time.Hour // timestamps advance below
				r := New(cfg)
				kind.build(r)
				var newApp func() storage.Appender
				if store == "nop" {
					newApp = func() storage.Appender { return nopAppender{} }
				} else {
					db := openTSDB(b)
					newApp = func() storage.Appender { return db.Appender(context.Background()) }
				}
				now := time.Now()
				collectOnce := func() {
					app := newApp()
					if _, err := r.Collect(app, now); err != nil {
						b.Fatal(err)
					}
					if err := app.Commit(); err != nil {
						b.Fatal(err)
					}
					now = now.Add(15 * time.Second)
				}
				// The first collection creates the series in the store and
				// writes the leading zeros; measure the steady state.
				collectOnce()
				b.ReportAllocs()
				for b.Loop() {
					collectOnce()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/series")
			})
		}
	}
}

// BenchmarkCollect1M is one collection of a million counter series into a
// real TSDB head, the cost paid every collection interval at that scale.
// It also reports the memory a series costs, registry and store together:
// heap growth from an empty process to a million series collected twice,
// divided by a million.
func BenchmarkCollect1M(b *testing.B) {
	const n = 1_000_000
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	cfg := DefaultConfig()
	cfg.MaxActiveSeries = 0
	cfg.StaleDuration = 1000 * time.Hour
	r := New(cfg)
	c := r.NewCounter("calls_total", spanMetricsLabels)
	for i := range n {
		c.Add(spanLabelValues(i), 1)
	}
	db := openTSDB(b)
	now := time.Now()
	collectOnce := func() {
		app := db.Appender(context.Background())
		if _, err := r.Collect(app, now); err != nil {
			b.Fatal(err)
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
		now = now.Add(15 * time.Second)
	}
	collectOnce()
	collectOnce()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ResetTimer()
	for b.Loop() {
		collectOnce()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/collection")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heapB/series")
	runtime.KeepAlive(r)
}

// BenchmarkWriteCheckpoint: a checkpoint of 10 000 span-metrics label
// sets (latency histogram with the default 14 buckets, calls and size
// companions), all updated since the last collection: what a busy tenant
// writes every checkpoint_interval.
func BenchmarkWriteCheckpoint(b *testing.B) {
	r := New(DefaultConfig())
	h := r.NewHistogram("traces_spanmetrics_latency", spanMetricsLabels, defaultLatencyBuckets(),
		"traces_spanmetrics_calls_total", "traces_spanmetrics_size_total")
	const sets = 10_000
	for i := range sets {
		h.Observe(spanLabelValues(i), 0.1, 1, nil, 0, 1, 100)
	}
	var w countingWriter
	b.ReportAllocs()
	for b.Loop() {
		w = 0
		if _, err := r.WriteCheckpoint(&w, 1); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(w), "bytes")
	b.ReportMetric(float64(w)/sets, "bytes/set")
}

type countingWriter int64

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}
