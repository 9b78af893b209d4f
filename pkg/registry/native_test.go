package registry

import (
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
)

func TestParseHistogramMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want HistogramMode
		err  bool
	}{
		{"", Classic, false},
		{"classic", Classic, false},
		{"native", Native, false},
		{"both", Both, false},
		{"Native", Classic, true},
		{"sparse", Classic, true},
	} {
		got, err := ParseHistogramMode(tc.in)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("ParseHistogramMode(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
		if err == nil && tc.in != "" && got.String() != tc.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
}

func TestNativeOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		o    NativeOptions
		want string // "" for valid, else a part of the error
	}{
		{DefaultNativeOptions(), ""},
		{NativeOptions{BucketFactor: 1.0001}, ""},
		{NativeOptions{BucketFactor: 1}, "x.native_histogram_bucket_factor: must be greater than 1"},
		{NativeOptions{BucketFactor: math.NaN()}, "x.native_histogram_bucket_factor"},
		{NativeOptions{BucketFactor: math.Inf(1)}, "x.native_histogram_bucket_factor"},
		{NativeOptions{BucketFactor: 2, MinResetDuration: -time.Second}, "x.native_histogram_min_reset_duration: must not be negative"},
	} {
		err := tc.o.Validate("x")
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: Validate() = %v, want %q", tc.o, err, tc.want)
		}
	}
}

// TestSchemaFor: the schema is the highest whose bucket factor
// 2^(2^-schema) does not exceed the configured one, within -4..8.
func TestSchemaFor(t *testing.T) {
	for _, tc := range []struct {
		factor float64
		want   int32
	}{
		{1.1, 3},      // Tempo's default: 2^(1/8) = 1.0905
		{1.09, 4},     // 2^(1/16) = 1.044 ≤ 1.09 < 1.0905
		{1.0001, 8},   // finer than schema 8 can be
		{1.5, 1},      // 2^(1/2) = 1.414
		{2, 0},        // exactly 2
		{4, -1},       // exactly 4
		{1e9, -4},     // coarser than schema -4 can be
		{65536.5, -4}, // 2^16 is schema -4
	} {
		if got := schemaFor(tc.factor); got != tc.want {
			t.Errorf("schemaFor(%v) = %d, want %d", tc.factor, got, tc.want)
		}
	}
}

// nativeFromDTO is client_golang's native histogram as Prometheus' type.
func nativeFromDTO(h *dto.Histogram) *histogram.Histogram {
	out := &histogram.Histogram{
		Schema:          h.GetSchema(),
		ZeroThreshold:   h.GetZeroThreshold(),
		ZeroCount:       h.GetZeroCount(),
		Count:           h.GetSampleCount(),
		Sum:             h.GetSampleSum(),
		PositiveBuckets: h.GetPositiveDelta(),
	}
	for _, s := range h.GetPositiveSpan() {
		out.PositiveSpans = append(out.PositiveSpans, histogram.Span{Offset: s.GetOffset(), Length: s.GetLength()})
	}
	return out
}

// TestNativeMatchesClientGolang holds the native counts to client_golang's
// histogram, which Tempo writes: the same buckets (values on bounds
// included), zero bucket, count and sum at each schema, and the same
// encoding of spans and deltas.
func TestNativeMatchesClientGolang(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	// Within 2^32 of each other (1 µs to 1 000 s), the widest spread
	// schema 8 keeps at full resolution (maxDenseBuckets).
	values := []float64{0, 1, 2, 0.5, 0.25, 0.001, 1e-40, math.Exp2(3.0 / 8), math.Exp2(-5.0 / 16), 1000}
	for range 2000 {
		// Latencies from 1 µs to 100 s, log-uniform.
		values = append(values, math.Pow(10, -6+8*rnd.Float64()))
	}
	for _, factor := range []float64{1.0001, 1.01, 1.1, 1.5, 2, 4, 300, 1e9} {
		t.Run(fmt.Sprint(factor), func(t *testing.T) {
			ref := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ref", NativeHistogramBucketFactor: factor})
			c := &nativeCounts{schema: schemaFor(factor)}
			o := NativeOptions{BucketFactor: factor}
			for i, v := range values {
				n := uint64(1 + i%3)
				for range n {
					ref.Observe(v)
				}
				c.observe(v, n, &o, 0)
			}
			var m dto.Metric
			if err := ref.Write(&m); err != nil {
				t.Fatal(err)
			}
			want, got := nativeFromDTO(m.GetHistogram()), c.histogram()
			// client_golang adds float64s in another order.
			if math.Abs(got.Sum-want.Sum) > 1e-9*want.Sum {
				t.Errorf("sum %v, client_golang %v", got.Sum, want.Sum)
			}
			got.Sum = want.Sum
			if !got.Equals(want) {
				t.Errorf("native histogram\n%v\nclient_golang\n%v", got, want)
			}
			if err := got.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestNativeLimit: beyond native_histogram_max_bucket_number the
// resolution halves until the populated buckets fit, giving exactly the
// counts observed at the lower schema; the series resets to its own schema
// at the first collection min_reset_duration after its last reset, after
// that collection has written its counts.
func TestNativeLimit(t *testing.T) {
	r := New(DefaultConfig())
	h := r.NewHistogramWith("lat", []string{"service"}, nil, HistogramOptions{
		Mode:   Native,
		Native: NativeOptions{BucketFactor: 1.1, MaxBucketNumber: 3, MinResetDuration: time.Minute},
	})
	lv := MakeLabelValues([]string{"cart"})
	values := []float64{1, 2, 4, 8, 16, 32, 3}
	for _, v := range values {
		h.Observe(lv, v, 1, nil, 0)
	}
	// Schema 3 puts 2^i in key 8i: seven buckets. Halving to schema -1
	// leaves 1 | 2, 3, 4 | 8, 16 | 32 (keys 0..3), still four; schema -2
	// leaves 1 | 2, 3, 4, 8, 16 | 32: three.
	want := &nativeCounts{schema: -2}
	for _, v := range values {
		want.observe(v, 1, &NativeOptions{}, 0)
	}
	rec := newRecorder()
	t0 := baseTime()
	_, hs, _, _ := collectAll(t, r, rec, t0)
	if len(hs) != 2 || !hs[1].h.Equals(want.histogram()) {
		t.Fatalf("collected %v, want the leading zero and %v", hs, want.histogram())
	}
	// The reset is due a minute after the series was created (its last
	// reset), by the registry's clock, within 30 s of t0: not yet at
	// t0 + 15 s, and then at the first collection from t0 + 90 s on,
	// which still writes the counts before the reset.
	h.Observe(lv, 0.5, 1, nil, 0)
	want.observe(0.5, 1, &NativeOptions{}, 0)
	_, hs, _, _ = collectAll(t, r, rec, t0.Add(15*time.Second))
	if len(hs) != 1 || !hs[0].h.Equals(want.histogram()) {
		t.Fatalf("collected %v, want %v", hs, want.histogram())
	}
	_, hs, _, _ = collectAll(t, r, rec, t0.Add(2*time.Minute))
	if len(hs) != 1 || !hs[0].h.Equals(want.histogram()) {
		t.Fatalf("collected %v before the reset, want %v", hs, want.histogram())
	}
	h.Observe(lv, 0.001, 1, nil, 0)
	fresh := &nativeCounts{schema: 3}
	fresh.observe(0.001, 1, &NativeOptions{}, 0)
	_, hs, _, _ = collectAll(t, r, rec, t0.Add(2*time.Minute+15*time.Second))
	if len(hs) != 1 || !hs[0].h.Equals(fresh.histogram()) {
		t.Fatalf("collected %v after the reset, want %v", hs, fresh.histogram())
	}
}

// TestNativeHalveMerges: halving maps schema s's buckets 2k-1 and 2k to
// schema s-1's bucket k, for keys on both sides of zero.
func TestNativeHalveMerges(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	for schema := int32(maxSchema); schema > minSchema; schema-- {
		fine := &nativeCounts{schema: schema}
		coarse := &nativeCounts{schema: schema - 1}
		for range 500 {
			v := math.Pow(10, -4+7*rnd.Float64())
			fine.observe(v, 1, &NativeOptions{}, 0)
			coarse.observe(v, 1, &NativeOptions{}, 0)
		}
		fine.halve()
		if got, want := fine.histogram(), coarse.histogram(); !got.Equals(want) || fine.populated != coarse.populated {
			t.Errorf("schema %d halved:\n%v (%d populated)\nobserved at %d:\n%v (%d populated)", schema, got, fine.populated, schema-1, want, coarse.populated)
		}
	}
}

// TestNativeSeries: the series of each mode, their leading zeros,
// exemplars, companion counters and staleness markers.
func TestNativeSeries(t *testing.T) {
	trace := [16]byte{15: 0xab}
	t0 := baseTime()
	zero := &histogram.Histogram{Schema: 3, ZeroThreshold: nativeZeroThreshold}
	// 0 in the zero bucket; 0.001 in key ceil(8·log2 0.001) = -79, 0.0011
	// in -78, 0.25 on the bound of -16, three times (weight 2.5).
	native := &histogram.Histogram{
		Schema: 3, ZeroThreshold: nativeZeroThreshold, ZeroCount: 1, Count: 6, Sum: 0.001 + 0.0011 + 3*0.25,
		PositiveSpans:   []histogram.Span{{Offset: -79, Length: 2}, {Offset: 61, Length: 1}},
		PositiveBuckets: []int64{1, 0, 2},
	}
	ls := []string{"service", "cart"}
	bucket := func(le string) string { return series("lat_bucket", "le", le, "service", "cart") }
	classic := []sample{
		{bucket("0.1"), zeroAt(t0), 0}, {bucket("0.1"), ms(t0), 3},
		{bucket("+Inf"), zeroAt(t0), 0}, {bucket("+Inf"), ms(t0), 5.5},
		{series("lat_count", ls...), zeroAt(t0), 0}, {series("lat_count", ls...), ms(t0), 5.5},
		{series("lat_sum", ls...), ms(t0), 0.001 + 0.0011 + 2.5*0.25},
	}
	calls := []sample{{series("calls_total", ls...), zeroAt(t0), 0}, {series("calls_total", ls...), ms(t0), 4}}
	hists := []histSample{{series("lat", ls...), zeroAt(t0), zero}, {series("lat", ls...), ms(t0), native}}
	for _, tc := range []struct {
		mode       HistogramMode
		samples    []sample
		hists      []histSample
		exemplarOn string
	}{
		{Classic, append(append([]sample(nil), classic...), calls...), nil, bucket("+Inf")},
		{Native, calls, hists, series("lat", ls...)},
		{Both, append(append([]sample(nil), classic...), calls...), hists, ""},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			r := New(DefaultConfig())
			h := r.NewHistogramWith("lat", []string{"service"}, []float64{0.1}, HistogramOptions{Mode: tc.mode, Native: DefaultNativeOptions()}, "calls_total")
			lv := MakeLabelValues([]string{"cart"})
			h.Observe(lv, 0, 1, nil, 0, 1)
			h.Observe(lv, 0.001, 1, nil, 0, 1)
			h.Observe(lv, 0.0011, 1, nil, 0, 1)
			h.Observe(lv, 0.25, 2.5, &trace, ms(t0)-100, 1)
			rec := newRecorder()
			s, hs, ex, _ := collectAll(t, r, rec, t0)
			if d := diffSamples(s, sortSamples(tc.samples)); d != "" {
				t.Error(d)
			}
			if fmt.Sprint(hs) != fmt.Sprint(tc.hists) {
				t.Errorf("native histograms\n%v\nwant\n%v", hs, tc.hists)
			}
			for i := range min(len(hs), len(tc.hists)) {
				if !hs[i].h.Equals(tc.hists[i].h) {
					t.Errorf("native histogram %v, want %v", hs[i], tc.hists[i])
				}
			}
			// One exemplar per written histogram: the classic one on
			// its bucket, the native one on the native series.
			var on []string
			for _, e := range ex {
				on = append(on, e.series)
				if e.e.Labels.Get("trace_id") != hex.EncodeToString(trace[:]) || e.e.Value != 0.25 || e.e.Ts != ms(t0)-100 {
					t.Errorf("exemplar %+v", e)
				}
			}
			wantOn := []string{tc.exemplarOn}
			if tc.mode == Both {
				wantOn = []string{bucket("+Inf"), series("lat", ls...)}
			}
			if fmt.Sprint(on) != fmt.Sprint(wantOn) {
				t.Errorf("exemplars on %v, want %v", on, wantOn)
			}

			// Sixteen minutes on, every series gets its staleness
			// marker: a float one, or a histogram with a stale NaN sum.
			t1 := t0.Add(16 * time.Minute)
			s, hs, _, st := collectAll(t, r, rec, t1)
			if st.Removed != 1 || r.ActiveSeries() != 0 {
				t.Errorf("removed %d, %d active; want 1, 0", st.Removed, r.ActiveSeries())
			}
			for _, x := range s {
				if x.t != ms(t1) || !value.IsStaleNaN(x.v) {
					t.Errorf("%v: want a staleness marker", x)
				}
			}
			if len(hs) != len(tc.hists)/2 {
				t.Errorf("%d native staleness markers, want %d", len(hs), len(tc.hists)/2)
			}
			for _, x := range hs {
				if x.t != ms(t1) || !value.IsStaleNaN(x.h.Sum) {
					t.Errorf("%v: want a staleness marker", x)
				}
			}
		})
	}
}

// TestNativeSeriesCost: a native histogram takes NativeSeriesCost stored
// series from the pool, beside the classic ones in both mode; at the cap,
// its updates fold into the overflow series, which is native too.
func TestNativeSeriesCost(t *testing.T) {
	for _, tc := range []struct {
		mode HistogramMode
		want int64
	}{
		{Classic, 2 + 2 + 1},                 // buckets 1 and +Inf, _sum, _count, a counter
		{Native, NativeSeriesCost + 1},       // the native series, a counter
		{Both, 2 + 2 + NativeSeriesCost + 1}, // all of it
	} {
		r := New(Config{MaxActiveSeries: 2})
		h := r.NewHistogramWith("lat", []string{"service"}, []float64{1}, HistogramOptions{Mode: tc.mode, Native: DefaultNativeOptions()}, "calls_total")
		if got := h.storedPerSet(); got != tc.want {
			t.Errorf("%v: %d stored series per label set, want %d", tc.mode, got, tc.want)
		}
		h.Observe(MakeLabelValues([]string{"a"}), 0.5, 1, nil, 0, 1)
		h.Observe(MakeLabelValues([]string{"b"}), 0.5, 1, nil, 0, 1) // over the cap: overflow
		if r.Overflowed() != 1 {
			t.Errorf("%v: %d overflowed updates, want 1", tc.mode, r.Overflowed())
		}
		rec := newRecorder()
		_, hs, _, _ := collectAll(t, r, rec, baseTime())
		var overflow int
		for _, x := range hs {
			if strings.Contains(x.series, OverflowLabel) && x.h.Count == 1 {
				overflow++
			}
		}
		if want := map[bool]int{true: 1}[tc.mode.native()]; overflow != want {
			t.Errorf("%v: native overflow samples %d, want %d: %v", tc.mode, overflow, want, hs)
		}
	}
}

// TestNativeWeights: a sampled span counts as ceil(multiplier)
// observations in a native histogram, as Tempo observes it.
func TestNativeWeights(t *testing.T) {
	for _, tc := range []struct {
		w    float64
		want uint64
	}{{1, 1}, {4, 4}, {1 / 0.3, 4}, {0.5, 1}, {0, 0}, {-1, 0}, {math.NaN(), 0}, {math.Inf(1), 1 << 53}} {
		if got := observations(tc.w); got != tc.want {
			t.Errorf("observations(%v) = %d, want %d", tc.w, got, tc.want)
		}
	}
}

// TestNativeDenseRange: at schema 8 a spread from 1 ns to 10 000 s would
// need 11 000 dense buckets a series; the range is held under
// maxDenseBuckets by halving, even without a bucket cap.
func TestNativeDenseRange(t *testing.T) {
	o := NativeOptions{BucketFactor: 1.001}
	c := &nativeCounts{schema: schemaFor(o.BucketFactor)}
	for _, v := range []float64{1e-9, 1e4, 1e-3, 1} {
		c.observe(v, 1, &o, 0)
	}
	if len(c.buckets) > maxDenseBuckets || c.schema != 7 || c.populated != 4 || c.count != 4 {
		t.Errorf("schema %d, %d dense buckets, %d populated, count %d; want schema 7 within %d", c.schema, len(c.buckets), c.populated, c.count, maxDenseBuckets)
	}
}
