package registry

import (
	"context"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

func openTSDB(t testing.TB) *tsdb.DB {
	t.Helper()
	opts := tsdb.DefaultOptions()
	opts.EnableExemplarStorage = true
	opts.MaxExemplars = 1000
	db, err := tsdb.Open(t.TempDir(), slog.New(slog.DiscardHandler), nil, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// collectInto runs one collection in its own TSDB transaction.
func collectInto(t testing.TB, r *Registry, db *tsdb.DB, now time.Time) {
	t.Helper()
	app := db.Appender(context.Background())
	if _, err := r.Collect(app, now); err != nil {
		_ = app.Rollback()
		t.Fatalf("Collect: %v", err)
	}
	if err := app.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

type point struct {
	t int64
	v float64
}

func queryPoints(t *testing.T, db *tsdb.DB, mint, maxt int64, matchers ...*labels.Matcher) map[string][]point {
	t.Helper()
	q, err := db.Querier(mint, maxt)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	out := map[string][]point{}
	ss := q.Select(context.Background(), true, nil, matchers...)
	for ss.Next() {
		s := ss.At()
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			out[s.Labels().String()] = append(out[s.Labels().String()], point{ts, v})
		}
		if it.Err() != nil {
			t.Fatal(it.Err())
		}
	}
	if ss.Err() != nil {
		t.Fatal(ss.Err())
	}
	return out
}

// TestTSDBLeadingZero writes collections into a real TSDB and reads them
// back: the leading zero makes the first collected value count in an
// increase over the series' life, and the store accepts everything the
// registry writes (order, refs across transactions, staleness markers,
// exemplars).
func TestTSDBLeadingZero(t *testing.T) {
	db := openTSDB(t)
	r := New(DefaultConfig())
	c := r.NewCounter("traces_spanmetrics_calls_total", []string{"service"})
	h := r.NewHistogram("traces_spanmetrics_latency", []string{"service"}, defaultLatencyBuckets())
	lv := MakeLabelValues([]string{"cart"})
	var trace [16]byte
	trace[15] = 0xab

	t0 := baseTime()
	c.Add(lv, 5) // five calls before the first collection
	h.Observe(lv, 0.003, 1, &trace, ms(t0)-500)
	collectInto(t, r, db, t0)
	t1 := t0.Add(15 * time.Second)
	c.Add(lv, 3)
	h.Observe(lv, 0.003, 1, nil, 0)
	collectInto(t, r, db, t1)

	mint, maxt := ms(t0)-2*time.Minute.Milliseconds(), ms(t1)+1
	calls := queryPoints(t, db, mint, maxt, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "traces_spanmetrics_calls_total"))
	got := calls[series("traces_spanmetrics_calls_total", "service", "cart")]
	want := []point{{zeroAt(t0), 0}, {ms(t0), 5}, {ms(t1), 8}}
	if len(got) != len(want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("stored %v, want %v", got, want)
		}
	}
	// What increase() sees over the whole life of the series is last minus
	// first sample: all 8 calls. Without the zero it would be 8-5 = 3, and
	// a series that saw one burst and went quiet would show no calls.
	if inc := got[len(got)-1].v - got[0].v; inc != 8 {
		t.Errorf("increase over the stored samples = %v, want 8", inc)
	}

	lat := queryPoints(t, db, mint, maxt, labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, "traces_spanmetrics_latency_.*"))
	checks := map[string][]point{
		series("traces_spanmetrics_latency_bucket", "le", "0.002", "service", "cart"): {{zeroAt(t0), 0}, {ms(t0), 0}, {ms(t1), 0}},
		series("traces_spanmetrics_latency_bucket", "le", "0.004", "service", "cart"): {{zeroAt(t0), 0}, {ms(t0), 1}, {ms(t1), 2}},
		series("traces_spanmetrics_latency_bucket", "le", "+Inf", "service", "cart"):  {{zeroAt(t0), 0}, {ms(t0), 1}, {ms(t1), 2}},
		series("traces_spanmetrics_latency_count", "service", "cart"):                 {{zeroAt(t0), 0}, {ms(t0), 1}, {ms(t1), 2}},
		series("traces_spanmetrics_latency_sum", "service", "cart"):                   {{ms(t0), 0.003}, {ms(t1), 0.006}},
	}
	for s, want := range checks {
		got := lat[s]
		ok := len(got) == len(want)
		for i := 0; ok && i < len(want); i++ {
			ok = got[i] == want[i]
		}
		if !ok {
			t.Errorf("%s: stored %v, want %v", s, got, want)
		}
	}
	if len(lat) != 15+2 {
		t.Errorf("%d latency series stored, want 17", len(lat))
	}

	// The exemplar reached the exemplar storage on the right bucket.
	eq, err := db.ExemplarQuerier(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	res, err := eq.Select(mint, maxt, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "traces_spanmetrics_latency_bucket")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || len(res[0].Exemplars) != 1 || res[0].SeriesLabels.Get("le") != "0.004" ||
		res[0].Exemplars[0].Labels.Get("trace_id") != hex.EncodeToString(trace[:]) {
		t.Errorf("exemplars = %+v, want one with trace_id %x on le=0.004", res, trace)
	}

	// Sixteen minutes later everything is stale; the store gets the
	// markers, which end the series for PromQL.
	t2 := t1.Add(16 * time.Minute)
	collectInto(t, r, db, t2)
	calls = queryPoints(t, db, mint, ms(t2)+1, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "traces_spanmetrics_calls_total"))
	got = calls[series("traces_spanmetrics_calls_total", "service", "cart")]
	if last := got[len(got)-1]; last.t != ms(t2) || !value.IsStaleNaN(last.v) {
		t.Errorf("last stored sample %v, want a staleness marker at %d", last, ms(t2))
	}
}
