package rolling

import (
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/spangraph/spangraph/pkg/budget"
)

// TestSealKeepsValues holds every segment encoding (constant, 1, 2 and 4
// byte offsets, raw floats) to the values it was given.
func TestSealKeepsValues(t *testing.T) {
	for name, step := range map[string]float64{"constant": 0, "byte": 3, "two bytes": 900, "four bytes": 1e6, "float": 0.123} {
		t.Run(name, func(t *testing.T) {
			st := New(1<<40, nil)
			s := st.insert(labels.FromStrings("__name__", Metrics[0]))
			var want []float64
			for g := int64(0); g < 2*segLen; g += 2 { // every other grid point
				v := 5 + step*float64(g)
				if !st.addGrid(s, g, g*1000, v) {
					t.Fatal("refused without a pool")
				}
				want = append(want, v)
			}
			st.seal(s)
			for i, w := range want {
				g := int64(2 * i)
				_, _, n, c, _ := s.gridRange(g, g)
				if n != 1 || c != w {
					t.Fatalf("grid point %d: %d samples, value %v, want %v", g, n, c, w)
				}
			}
			if first, last, n, cf, cl := s.gridRange(0, 2*segLen); first != 0 || last != 2*segLen-2 || n != segLen || cl-cf != want[len(want)-1]-want[0] {
				t.Errorf("whole range: first %d last %d n %d increase %v", first, last, n, cl-cf)
			}
		})
	}
}

// TestRefusedWindowIsNotWhole: a sample the pool has no room for makes
// every window reaching back to it read the TSDB instead.
func TestRefusedWindowIsNotWhole(t *testing.T) {
	pool := budget.NewPool("memory_limit", seriesBytes+segmentBytes+openBytes)
	st := New(1<<40, pool)
	st.from = 0
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
