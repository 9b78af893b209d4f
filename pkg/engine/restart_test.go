package engine

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// TestCounterResetAcrossRestart: a counter that restarts from zero within
// the minute of its last stored sample still shows the reset. Tempo's
// place for the leading zero (the end of the previous minute) lies before
// the samples stored before the restart, so the store would refuse it as
// out of order and 0, 10, 100 | 10 would read as no reset: increase()
// would miss the ten new calls.
func TestCounterResetAcrossRestart(t *testing.T) {
	// Both lives of the counter must fall in one minute.
	if s := time.Now().Second(); s > 45 {
		time.Sleep(time.Duration(61-s) * time.Second)
	}
	dir := t.TempDir()
	var log otlptest.LogBuffer
	e := newTestEngine(t, dir, &log)
	consumeCalls(t, e, "be", tracepb.Span_SPAN_KIND_SERVER, 10)
	e.Collect()
	consumeCalls(t, e, "be", tracepb.Span_SPAN_KIND_SERVER, 90)
	e.Collect()
	e.Stop(t.Context())

	e = newTestEngine(t, dir, &log)
	consumeCalls(t, e, "be", tracepb.Span_SPAN_KIND_SERVER, 10)
	e.Collect()
	defer e.Stop(t.Context())

	q, err := e.Tenant(tenant.Default).Store.Querier(0, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	set := q.Select(t.Context(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "traces_spanmetrics_calls_total"))
	var values []float64
	var last int64
	for set.Next() {
		it := set.At().Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			if ts <= last {
				t.Fatalf("samples out of order at %d", ts)
			}
			last = ts
			values = append(values, v)
		}
	}
	// The stop writes a last collection (100 again) before the restart.
	want := []float64{0, 10, 100, 100, 0, 10}
	if len(values) != len(want) {
		t.Fatalf("stored %v, want %v", values, want)
	}
	for i := range want {
		if values[i] != want[i] {
			t.Fatalf("stored %v, want %v: the restart's reset must be visible", values, want)
		}
	}
}
