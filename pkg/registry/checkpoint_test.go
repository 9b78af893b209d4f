package registry

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"

	"github.com/spangraph/spangraph/pkg/budget"
)

// checkpointed registry: a counter, a histogram with a companion counter
// and an info gauge, as the processors register them.
type cpMetrics struct {
	r     *Registry
	calls *Counter
	lat   *Histogram
	info  *Gauge
}

func newCPMetrics(cfg Config) cpMetrics {
	r := New(cfg)
	return cpMetrics{
		r:     r,
		calls: r.NewCounter("edges_total", []string{"client", "server"}),
		lat:   r.NewHistogram("latency", []string{"service"}, []float64{0.1, 1}, "calls_total"),
		info:  r.NewInfoGauge("target_info"),
	}
}

// cpTime is a collection time just after the registry's coarse clock
// starts (time.Now() at New), as real collections are: a checkpoint picks
// series by that clock.
func cpTime() time.Time { return time.Now().Add(time.Second) }

// values returns the samples of one collection at now, by series, and the
// leading zeros apart.
func valuesAt(t *testing.T, r *Registry, now time.Time) (map[string]float64, map[string]bool) {
	t.Helper()
	s, _, _ := collect(t, r, newRecorder(), now)
	vals, zeros := map[string]float64{}, map[string]bool{}
	for _, x := range s {
		if x.t == now.UnixMilli() {
			vals[x.series] = x.v
		} else if x.v == 0 {
			zeros[x.series] = true
		}
	}
	return vals, zeros
}

func TestCheckpointRestore(t *testing.T) {
	t0 := cpTime()
	m := newCPMetrics(DefaultConfig())
	a := MakeLabelValues([]string{"a", "b"})
	m.calls.Add(a, 3)
	m.lat.Observe(MakeLabelValues([]string{"svc"}), 0.05, 1, nil, 0, 1)
	m.lat.Observe(MakeLabelValues([]string{"svc"}), 2, 1, nil, 0, 1)
	m.info.Set(MakeLabelValues([]string{"service", "svc", "k8s_pod", "p1"}), 1)
	stored, _ := valuesAt(t, m.r, t0) // the last collection before the crash

	// Counted after the collection: in the checkpoint, not in the store.
	m.calls.Add(a, 4)
	m.calls.Add(MakeLabelValues([]string{"a", "new"}), 5)
	m.lat.Observe(MakeLabelValues([]string{"svc"}), 0.5, 2, nil, 0, 2)
	var buf bytes.Buffer
	at := t0.Add(time.Second).UnixMilli()
	ws, err := m.r.WriteCheckpoint(&buf, at)
	if err != nil {
		t.Fatal(err)
	}
	if ws.Series != 4 {
		t.Errorf("wrote %d series, want 4 (both counters, the histogram, the info gauge)", ws.Series)
	}

	// The process dies; a new one restores the checkpoint.
	m2 := newCPMetrics(DefaultConfig())
	rs, err := m2.r.RestoreCheckpoint(bytes.NewReader(buf.Bytes()), t0.UnixMilli())
	if err != nil || rs.Stale || rs.Series != 4 || rs.Skipped != 0 {
		t.Fatalf("restore: %+v, %v", rs, err)
	}
	m2.calls.Add(a, 1) // after the restart
	after, zeros := valuesAt(t, m2.r, t0.Add(2*time.Second))
	want := map[string]float64{
		`{__name__="edges_total", client="a", server="b"}`:      8, // 3 stored + 4 checkpointed + 1
		`{__name__="edges_total", client="a", server="new"}`:    5,
		`{__name__="calls_total", service="svc"}`:               4,
		`{__name__="latency_count", service="svc"}`:             4,
		`{__name__="latency_sum", service="svc"}`:               3.05,
		`{__name__="latency_bucket", le="0.1", service="svc"}`:  1,
		`{__name__="latency_bucket", le="1", service="svc"}`:    3,
		`{__name__="latency_bucket", le="+Inf", service="svc"}`: 4,
		`{__name__="target_info", k8s_pod="p1", service="svc"}`: 1,
	}
	for k, v := range want {
		if after[k] != v {
			t.Errorf("%s = %v after the restore, want %v", k, after[k], v)
		}
	}
	// A series that was stored continues (a zero would read as a reset
	// and count its stored value again); one never collected gets its
	// leading zero, so that rate() sees its first counts.
	for k := range stored {
		if zeros[k] {
			t.Errorf("%s, already stored, got a leading zero after the restore", k)
		}
	}
	if !zeros[`{__name__="edges_total", client="a", server="new"}`] {
		t.Errorf("a series first counted after the last collection got no leading zero; zeros: %v", zeros)
	}
}

func TestCheckpointOnlyWhatChanged(t *testing.T) {
	t0 := cpTime()
	m := newCPMetrics(DefaultConfig())
	m.calls.Add(MakeLabelValues([]string{"a", "b"}), 1)
	m.calls.Add(MakeLabelValues([]string{"c", "d"}), 1)
	valuesAt(t, m.r, t0)
	m.calls.Add(MakeLabelValues([]string{"a", "b"}), 1)
	valuesAt(t, m.r, t0.Add(time.Second))
	// Nothing since: the checkpoint holds the series updated since the
	// collection before the last (a->b), not those the store has had
	// for longer (c->d).
	var buf bytes.Buffer
	ws, err := m.r.WriteCheckpoint(&buf, t0.Add(1500*time.Millisecond).UnixMilli())
	if err != nil || ws.Series != 1 {
		t.Fatalf("checkpoint: %+v, %v; want one series", ws, err)
	}
	valuesAt(t, m.r, t0.Add(2*time.Second))
	buf.Reset()
	if ws, err := m.r.WriteCheckpoint(&buf, t0.Add(2500*time.Millisecond).UnixMilli()); err != nil || ws.Series != 0 {
		t.Fatalf("checkpoint two quiet collections later: %+v, %v; want none", ws, err)
	}
}

func TestCheckpointStaleOrChanged(t *testing.T) {
	t0 := cpTime()
	m := newCPMetrics(DefaultConfig())
	m.calls.Add(MakeLabelValues([]string{"a", "b"}), 3)
	m.lat.Observe(MakeLabelValues([]string{"svc"}), 0.05, 1, nil, 0, 1)
	var buf bytes.Buffer
	at := t0.UnixMilli()
	if _, err := m.r.WriteCheckpoint(&buf, at); err != nil {
		t.Fatal(err)
	}
	cp := buf.Bytes()

	t.Run("a later collection holds it", func(t *testing.T) {
		m2 := newCPMetrics(DefaultConfig())
		rs, err := m2.r.RestoreCheckpoint(bytes.NewReader(cp), at+1)
		if err != nil || !rs.Stale || rs.Series != 0 {
			t.Fatalf("restore: %+v, %v; want stale", rs, err)
		}
		if got, _ := valuesAt(t, m2.r, t0.Add(time.Second)); len(got) != 0 {
			t.Errorf("a stale checkpoint restored %v", got)
		}
	})
	t.Run("buckets and labels changed", func(t *testing.T) {
		r := New(DefaultConfig())
		r.NewCounter("edges_total", []string{"client", "server", "connection_type"})
		r.NewHistogram("latency", []string{"service"}, []float64{0.1, 1, 10}, "calls_total")
		rs, err := r.RestoreCheckpoint(bytes.NewReader(cp), at)
		if err != nil || rs.Series != 0 || rs.Skipped != 2 {
			t.Fatalf("restore: %+v, %v; want both series skipped", rs, err)
		}
	})
	t.Run("over the memory budget", func(t *testing.T) {
		cfg := DefaultConfig()
		m2 := newCPMetrics(cfg)
		m2.r.UsePool(budget.NewPool("series", StoredSeriesBytes)) // room for the counter only
		rs, err := m2.r.RestoreCheckpoint(bytes.NewReader(cp), at)
		if err != nil || rs.Series != 1 || rs.Skipped != 1 {
			t.Fatalf("restore: %+v, %v; want the counter restored and the histogram skipped", rs, err)
		}
		if m2.r.Overflowed() != 0 {
			t.Errorf("a series that did not fit went to the overflow series (%d), which would count its history again", m2.r.Overflowed())
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		for i, bad := range [][]byte{
			nil,
			[]byte("not a checkpoint"),
			cp[:len(cp)-1],
			append(append([]byte{}, cp[:len(cp)/2]...), 0xff),
			func() []byte { b := bytes.Clone(cp); b[len(b)/2] ^= 0x40; return b }(),
		} {
			m2 := newCPMetrics(DefaultConfig())
			_, err := m2.r.RestoreCheckpoint(bytes.NewReader(bad), at)
			if !errors.Is(err, ErrCheckpointCorrupt) {
				t.Errorf("case %d: err = %v, want ErrCheckpointCorrupt", i, err)
			}
		}
	})
}

func TestCheckpointOverflow(t *testing.T) {
	t0 := cpTime()
	cfg := DefaultConfig()
	cfg.MaxActiveSeries = 1
	m := newCPMetrics(cfg)
	m.calls.Add(MakeLabelValues([]string{"a", "b"}), 1)
	m.calls.Add(MakeLabelValues([]string{"c", "d"}), 2) // overflow
	var buf bytes.Buffer
	if _, err := m.r.WriteCheckpoint(&buf, t0.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	m2 := newCPMetrics(cfg)
	if _, err := m2.r.RestoreCheckpoint(&buf, t0.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	got, _ := valuesAt(t, m2.r, t0.Add(time.Second))
	if got[`{__name__="edges_total", metric_overflow="true"}`] != 2 || got[`{__name__="edges_total", client="a", server="b"}`] != 1 {
		t.Errorf("after restore: %v", got)
	}
}

// FuzzRestoreCheckpoint: no input crashes the reader or restores series
// from a checkpoint that is not intact.
func FuzzRestoreCheckpoint(f *testing.F) {
	m := newCPMetrics(DefaultConfig())
	for i := range 3 {
		m.calls.Add(MakeLabelValues([]string{"a", fmt.Sprint(i)}), 1)
	}
	m.lat.Observe(MakeLabelValues([]string{"svc"}), 0.5, 1, nil, 0, 1)
	var buf bytes.Buffer
	if _, err := m.r.WriteCheckpoint(&buf, 1); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	// A native histogram's counts too, which the reader decodes even for
	// a metric it does not have.
	rn := New(DefaultConfig())
	hn := rn.NewHistogramWith("native", []string{"service"}, []float64{1}, HistogramOptions{Mode: Both, Native: DefaultNativeOptions()})
	for _, v := range []float64{0, 0.001, 0.5, 3} {
		hn.Observe(MakeLabelValues([]string{"svc"}), v, 1, nil, 0)
	}
	buf.Reset()
	if _, err := rn.WriteCheckpoint(&buf, 1); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(checkpointMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := newCPMetrics(DefaultConfig())
		rs, err := m.r.RestoreCheckpoint(bytes.NewReader(data), 0)
		if err != nil && (rs.Series > 0 || m.r.ActiveSeries() > 0) {
			t.Fatalf("restored %d series (%d active) from a checkpoint that failed: %v", rs.Series, m.r.ActiveSeries(), err)
		}
		if err == nil && !bytes.HasPrefix(data, []byte(checkpointMagic)) {
			t.Fatalf("accepted a checkpoint without the magic")
		}
	})
}

// TestCheckpointNative: native histograms, alone and beside classic ones,
// come back from a checkpoint with their buckets, zero bucket, count, sum
// and lowered schema, and continue as the uninterrupted registry does; a
// registry whose bucket factor is now coarser merges them down to it, and
// one whose mode changed skips them.
func TestCheckpointNative(t *testing.T) {
	t0 := cpTime()
	opts := func(mode HistogramMode, factor float64) HistogramOptions {
		return HistogramOptions{Mode: mode, Native: NativeOptions{BucketFactor: factor, MaxBucketNumber: 20}}
	}
	newReg := func(factor float64, native, both HistogramMode) (*Registry, *Histogram, *Histogram) {
		r := New(DefaultConfig())
		return r,
			r.NewHistogramWith("native", []string{"service"}, nil, opts(native, factor), "calls_total"),
			r.NewHistogramWith("both", []string{"service"}, []float64{0.1, 1}, opts(both, factor))
	}
	r, nat, both := newReg(1.1, Native, Both)
	lv := MakeLabelValues([]string{"svc"})
	observe := func(h1, h2 *Histogram, vals ...float64) {
		for _, v := range vals {
			h1.Observe(lv, v, 1, nil, 0, 1)
			h2.Observe(lv, v, 1, nil, 0)
		}
	}
	observe(nat, both, 0, 0.002, 0.004, 0.3)
	valuesAt(t, r, t0)
	// After the last collection: 30 buckets at schema 3 are over the cap
	// of 20, so the resolution is lowered before the crash.
	for i := range 30 {
		observe(nat, both, 0.001*math.Pow(1.1, float64(i)))
	}
	if nat.series.s[lv.hash%shardCount].m[lv.hash].native.schema >= 3 {
		t.Fatal("the resolution was not lowered")
	}
	var buf bytes.Buffer
	at := t0.Add(time.Second).UnixMilli()
	if ws, err := r.WriteCheckpoint(&buf, at); err != nil || ws.Series != 2 {
		t.Fatalf("checkpoint: %+v, %v; want 2 series", ws, err)
	}

	// What the uninterrupted registry writes next, and the restored one.
	t1 := t0.Add(2 * time.Second)
	want := nativeAt(t, r, t1)
	r2, _, _ := newReg(1.1, Native, Both)
	if rs, err := r2.RestoreCheckpoint(bytes.NewReader(buf.Bytes()), t0.UnixMilli()); err != nil || rs.Series != 2 {
		t.Fatalf("restore: %+v, %v", rs, err)
	}
	got := nativeAt(t, r2, t1)
	if len(got) != 2 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("restored\n%v\nuninterrupted\n%v", got, want)
	}
	wantFloats, _ := valuesAt(t, r, t1.Add(time.Second))
	gotFloats, _ := valuesAt(t, r2, t1.Add(time.Second))
	if fmt.Sprint(gotFloats) != fmt.Sprint(wantFloats) {
		t.Errorf("restored classic series and counters %v, uninterrupted %v", gotFloats, wantFloats)
	}

	// Schema 0 now (factor 2): the restored counts merge down to it.
	r3, _, _ := newReg(2, Native, Both)
	if rs, err := r3.RestoreCheckpoint(bytes.NewReader(buf.Bytes()), t0.UnixMilli()); err != nil || rs.Series != 2 {
		t.Fatalf("restore at schema 0: %+v, %v", rs, err)
	}
	for s, h := range nativeAt(t, r3, t1) {
		if h.Schema != 0 || h.Count != want[s].Count || h.Sum != want[s].Sum {
			t.Errorf("%s restored at schema 0: %v, want the counts of %v", s, h, want[s])
		}
	}

	// The modes swapped: neither series has its shape any more.
	r4, _, _ := newReg(1.1, Both, Native)
	if rs, err := r4.RestoreCheckpoint(bytes.NewReader(buf.Bytes()), t0.UnixMilli()); err != nil || rs.Series != 0 || rs.Skipped != 2 {
		t.Fatalf("restore with the modes swapped: %+v, %v; want both skipped", rs, err)
	}
}

// nativeAt collects r at now and returns its native histograms there, by
// series.
func nativeAt(t *testing.T, r *Registry, now time.Time) map[string]*histogram.Histogram {
	t.Helper()
	_, hs, _, _ := collectAll(t, r, newRecorder(), now)
	out := map[string]*histogram.Histogram{}
	for _, x := range hs {
		if x.t == now.UnixMilli() {
			out[x.series] = x.h
		}
	}
	return out
}

// TestMoveTo: a reload hands the series on: those whose metric keeps its
// shape continue (value kept, no leading zero, so no reset), the others
// end; the old registry's memory goes back to the pool first.
func TestMoveTo(t *testing.T) {
	t0 := cpTime()
	pool := budget.NewPool("series", 1<<20)
	old := New(DefaultConfig())
	old.UsePool(pool)
	calls := old.NewCounter("edges_total", []string{"client", "server"})
	lat := old.NewHistogram("latency", []string{"service"}, []float64{0.1, 1}, "calls_total")
	calls.Add(MakeLabelValues([]string{"a", "b"}), 3)
	lat.Observe(MakeLabelValues([]string{"svc"}), 0.5, 1, nil, 0, 1)
	valuesAt(t, old, t0)
	calls.Add(MakeLabelValues([]string{"a", "b"}), 1) // since the collection
	held := pool.InUse()

	dst := New(DefaultConfig())
	dst.UsePool(pool)
	dstCalls := dst.NewCounter("edges_total", []string{"client", "server"})
	dst.NewHistogram("latency", []string{"service", "http_method"}, []float64{0.1, 1}, "calls_total") // a new dimension
	st, err := old.MoveTo(dst)
	if err != nil || st.Series != 1 || st.Skipped != 1 {
		t.Fatalf("MoveTo: %+v, %v; want the counter moved and the histogram ended", st, err)
	}
	if pool.InUse() >= held {
		t.Errorf("pool holds %d after the move, %d before: the old registry's memory was not given back", pool.InUse(), held)
	}
	dstCalls.Add(MakeLabelValues([]string{"a", "b"}), 1)
	got, zeros := valuesAt(t, dst, t0.Add(time.Second))
	if v := got[`{__name__="edges_total", client="a", server="b"}`]; v != 5 {
		t.Errorf("moved counter = %v, want 5 (3 stored, 1 since, 1 after)", v)
	}
	if len(zeros) != 0 {
		t.Errorf("moved series got leading zeros (a reset): %v", zeros)
	}
}
