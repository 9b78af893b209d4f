package rolling

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/spangraph/spangraph/pkg/budget"
)

// TestPackKeepsValues holds every packing (equal values, rises of 1, 2
// and 4 bytes, raw floats, and a segment widened as it fills) to the
// values it was given, at every grid point and over every range, read
// from the first value, the mark or the newest, with some points absent
// or all present; and the bytes charged to what the segments hold.
func TestPackKeepsValues(t *testing.T) {
	for _, step := range []func(g int64) int64{
		func(g int64) int64 { return 1 + g%3 },
		func(int64) int64 { return 1 },
	} {
		testPackKeepsValues(t, step)
	}
}

func testPackKeepsValues(t *testing.T, step func(g int64) int64) {
	for name, rise := range map[string]func(g int64) float64{
		"equal":      func(int64) float64 { return 0 },
		"byte":       func(g int64) float64 { return float64(g % 7) },
		"two bytes":  func(int64) float64 { return 900 },
		"four bytes": func(int64) float64 { return 1e6 },
		"float":      func(int64) float64 { return 0.123 },
		// Rises widen within a segment: bytes, then two bytes, then a
		// float, then bytes again in the next segment.
		"widening": func(g int64) float64 {
			switch {
			case g%segLen < 20:
				return 3
			case g%segLen < 40:
				return 700
			case g%segLen == 50:
				return 0.5
			}
			return 1
		},
	} {
		t.Run(name, func(t *testing.T) {
			pool := budget.NewPool("memory_limit", 1<<20)
			st := New(1<<40, pool)
			s := st.insert(labels.FromStrings("__name__", Metrics[0]))
			st.take(seriesBytes)
			want := map[int64]float64{}
			v := 5.0
			for g := int64(0); g < 3*segLen+10; g += step(g) {
				v += rise(g)
				if !st.addGrid(s, g, g*1000, v) {
					t.Fatal("refused")
				}
				want[g] = v
			}
			for ga := int64(0); ga < 3*segLen+10; ga++ {
				for gb := ga; gb < 3*segLen+10; gb += 7 {
					var n int
					first, last := int64(-1), int64(-1)
					for g := ga; g <= gb; g++ {
						if _, ok := want[g]; ok {
							if first < 0 {
								first = g
							}
							last, n = g, n+1
						}
					}
					f, l, gotN, cf, cl := s.gridRange(ga, gb)
					if f != first || l != last || gotN != n || (n > 0 && (cf != want[first] || cl != want[last])) {
						t.Fatalf("[%d, %d]: first %d (%v) last %d (%v) n %d; want %d (%v) %d (%v) %d", ga, gb, f, cf, l, cl, gotN, first, want[first], last, want[last], n)
					}
				}
			}
			for i, sg := range s.segs {
				if sg.n() > markRank && sg.width != 8 && (!sg.marked || sg.first+float64(sg.mark) != sg.value(markRank)) {
					t.Errorf("segment %d: mark %v (%d), want the value of rank %d, %v", i, sg.marked, sg.mark, markRank, sg.value(markRank))
				}
			}
			held := int64(seriesBytes)
			for i := range s.segs {
				held += s.segs[i].cost()
			}
			if st.HeldBytes() != held || pool.InUse() != held {
				t.Errorf("%d bytes charged (%d in the pool), the segments hold %d", st.HeldBytes(), pool.InUse(), held)
			}
		})
	}
}

// TestMemoDerivedOnce: a series' memo is derived on its first read
// only, and readers reading at once all get it.
func TestMemoDerivedOnce(t *testing.T) {
	st := New(1<<40, nil)
	st.from, st.filled = 0, true
	l := func(v string) labels.Labels { return labels.FromStrings("__name__", Metrics[0], "client", v) }
	st.apply(1000, []pendingSample{{l("a"), 1000, 1}, {l("bb"), 1000, 1}})
	var derived atomic.Int64
	derive := func(l labels.Labels) Memo {
		derived.Add(1)
		return Memo{uint64(len(l.Get("client")))}
	}
	read := func() {
		r, ok := st.Read(0, 2000)
		if !ok {
			t.Error("the window is not whole")
			return
		}
		defer r.Close()
		r.Each([]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, Metrics[0])}, func(x Series, _ Span) {
			if got := x.Memo(derive); got[0] != uint64(len(x.Labels().Get("client"))) {
				t.Errorf("%s: memo %v", x.Labels(), got)
			}
		})
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(read)
	}
	wg.Wait()
	n := derived.Load()
	if n < 2 || n > 8 {
		t.Fatalf("derived %d times over 2 series read by 4 readers", n)
	}
	read()
	if derived.Load() != n {
		t.Errorf("derived again on a later read: %d times, then %d", n, derived.Load())
	}
}

// TestRefusedWindowIsNotWhole: a sample the pool has no room for makes
// every window reaching back to it read the TSDB instead.
func TestRefusedWindowIsNotWhole(t *testing.T) {
	pool := budget.NewPool("memory_limit", seriesBytes+segmentBytes)
	st := New(1<<40, pool)
	st.from, st.filled = 0, true
	l := func(v string) labels.Labels { return labels.FromStrings("__name__", Metrics[0], "client", v) }
	st.apply(1000, []pendingSample{{l("a"), 1000, 1}, {l("b"), 1000, 1}})
	if st.Refused() != 1 {
		t.Fatalf("%d refused, want 1", st.Refused())
	}
	if _, ok := st.Read(0, 2000); ok {
		t.Error("a window holding a refused sample reads from memory")
	}
	if r, ok := st.Read(1000, 2000); !ok {
		t.Error("a window after the refused sample does not read from memory")
	} else {
		r.Close()
	}
	st.Close()
	if pool.InUse() != 0 {
		t.Errorf("%d bytes still taken after Close", pool.InUse())
	}
}

// TestLabelValues: the values of a label on the series that match, the
// bucket bounds read from the index as any other label is read from the
// series, with and without matchers that leave some bounds out.
func TestLabelValues(t *testing.T) {
	st := New(1<<40, nil)
	st.from, st.filled = 0, true
	bucket := "traces_spanmetrics_latency_bucket"
	l := func(service, le string) labels.Labels {
		return labels.FromStrings("__name__", bucket, "le", le, "service", service)
	}
	st.apply(1000, []pendingSample{
		{l("a", "0.1"), 1000, 1}, {l("a", "+Inf"), 1000, 1},
		{l("b", "0.1"), 1000, 1}, {l("b", "1.0"), 1000, 1}, {l("b", "+Inf"), 1000, 1},
		{labels.FromStrings("__name__", bucket, "service", "c"), 1000, 1},
	})
	r, ok := st.Read(0, 2000)
	if !ok {
		t.Fatal("the window is not whole")
	}
	defer r.Close()
	name := labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, bucket)
	for _, tc := range []struct {
		label string
		ms    []*labels.Matcher
		want  string
	}{
		{"le", []*labels.Matcher{name}, "+Inf 0.1 1.0"},
		{"le", []*labels.Matcher{name, labels.MustNewMatcher(labels.MatchEqual, "service", "a")}, "+Inf 0.1"},
		{"le", []*labels.Matcher{name, labels.MustNewMatcher(labels.MatchEqual, "service", "c")}, ""},
		{"le", []*labels.Matcher{name, labels.MustNewMatcher(labels.MatchNotEqual, "le", "+Inf")}, "0.1 1.0"},
		{"le", []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "nothing")}, ""},
		{"service", []*labels.Matcher{name}, "a b c"},
		{"service", []*labels.Matcher{name, labels.MustNewMatcher(labels.MatchEqual, "le", "1.0")}, "b"},
	} {
		if got := strings.Join(r.LabelValues(tc.label, tc.ms), " "); got != tc.want {
			t.Errorf("LabelValues(%s, %v) = %q, want %q", tc.label, tc.ms, got, tc.want)
		}
	}
}
