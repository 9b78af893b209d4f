package query

import (
	"math"
	"testing"

	"github.com/prometheus/prometheus/promql"
)

// TestQuantileUnderFirstBucket: a quantile in the first bucket is not
// made up by interpolating from zero; it is reported as "below the bound".
func TestQuantileUnderFirstBucket(t *testing.T) {
	inf := math.Inf(1)
	buckets := func(counts ...float64) promql.Buckets {
		bounds := []float64{0.1, 0.2, 0.4, inf}
		out := make(promql.Buckets, len(counts))
		for i, c := range counts {
			out[i] = promql.Bucket{UpperBound: bounds[i], Count: c}
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		b     promql.Buckets
		ms    float64
		under bool
	}{
		{"every call under 100 ms", buckets(10, 10, 10, 10), 100, true},
		{"p90 in the second bucket", buckets(5, 10, 10, 10), 180, false},
		{"no observations", buckets(0, 0, 0, 0), math.NaN(), false},
	} {
		ms, under := quantileMs(0.9, tc.b)
		if under != tc.under || (math.IsNaN(tc.ms) != math.IsNaN(ms)) || (!math.IsNaN(ms) && math.Abs(ms-tc.ms) > 1e-9) {
			t.Errorf("%s: %v ms, under %v; want %v, %v", tc.name, ms, under, tc.ms, tc.under)
		}
	}
}
