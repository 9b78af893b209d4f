package store

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/spangraph/spangraph/pkg/registry"
)

// TestNativeHistogramsPersist: the embedded TSDB takes the registry's
// native histograms (Prometheus' TSDB has no switch for them since 3.0)
// and gives them back after a restart, from its WAL, with the leading
// zero; NewestSample sees them, so a reborn series' zero lands after them.
func TestNativeHistogramsPersist(t *testing.T) {
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := Open(dir, "acme", Options{Retention: time.Hour}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(registry.DefaultConfig())
	h := reg.NewHistogramWith("lat", []string{"service"}, nil,
		registry.HistogramOptions{Mode: registry.Native, Native: registry.DefaultNativeOptions()})
	lv := registry.MakeLabelValues([]string{"cart"})
	start := time.Now()
	var last time.Time
	for i := range 4 {
		h.Observe(lv, 0.001*float64(i+1), 1, nil, 0)
		last = start.Add(time.Duration(i) * 15 * time.Second)
		app := st.Appender(context.Background())
		if _, err := reg.Collect(app, last); err != nil {
			t.Fatal(err)
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = Open(dir, "acme", Options{Retention: time.Hour}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := st.NewestSample(); got != last.UnixMilli() {
		t.Errorf("NewestSample() = %d, want the last collection %d", got, last.UnixMilli())
	}
	q, err := st.Querier(start.Add(-2*time.Minute).UnixMilli(), last.UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "lat"))
	var counts []uint64
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() == chunkenc.ValHistogram {
			_, hist := it.AtHistogram(nil)
			counts = append(counts, hist.Count)
		}
	}
	if want := []uint64{0, 1, 2, 3, 4}; !slices.Equal(counts, want) {
		t.Errorf("native histogram counts after the restart %v, want %v (the leading zero, then one more each collection)", counts, want)
	}
}
