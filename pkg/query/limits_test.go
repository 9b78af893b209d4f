package query

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/storage"

	"github.com/spangraph/spangraph/pkg/tenant"
)

// heapBound is what a refused query may allocate, all told: before these
// limits, the least of them (a [1d:1ms] subquery) took 3.6 GB.
const heapBound = 64 << 20

func withConfig(t *testing.T, cfg Config) *Querier {
	t.Helper()
	q := newQuerier(t)
	return NewQuerier(q.source, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
}

// Each of these took the process down (out of memory, stack overflow) or
// a core for most of a minute; each must now be refused at once, with the
// limit and its key in the message.
func TestHostileQueries(t *testing.T) {
	deep := func(open, leaf, closing string, n int) string {
		return strings.Repeat(open, n) + leaf + strings.Repeat(closing, n)
	}
	sum := strings.TrimSuffix(strings.Repeat("vector(1)+", 100_000), "+")
	roomy := DefaultConfig()
	roomy.MaxQueryLength = 4 << 20
	tiny := DefaultConfig()
	tiny.MaxSamples = 10
	tests := []struct {
		name     string
		cfg      Config
		expr     string
		rangeQ   bool // over the 24 h before end, every minute
		wantType string
		reason   string
		want     string
	}{
		{"year at 1ms", DefaultConfig(), `max_over_time(vector(1)[365d:1ms])`, false, ErrorBadData, ReasonTooManySteps,
			"subquery [365d:1ms] would take 31536000000 steps, over query.max_subquery_steps (1000000)"},
		{"day at 1ms", DefaultConfig(), `max_over_time(vector(1)[1d:1ms])`, false, ErrorBadData, ReasonTooManySteps,
			"subquery [1d:1ms] would take 86400000 steps, over query.max_subquery_steps (1000000)"},
		// The inner subquery alone looks harmless (1 000 steps), but the
		// engine evaluates it over the whole outer range.
		{"nested", DefaultConfig(), `max_over_time(max_over_time(vector(1)[1s:1ms])[365d:1h])`, false, ErrorBadData, ReasonTooManySteps,
			"subquery [1s:1ms] would take 31532401000 steps, over query.max_subquery_steps (1000000)"},
		{"subquery over a range query", DefaultConfig(), `max_over_time(vector(1)[1h:50ms] offset 5m)`, true, ErrorBadData, ReasonTooManySteps,
			"subquery [1h:50ms] would take 1800000 steps, over query.max_subquery_steps (1000000)"},
		{"sub-millisecond step", DefaultConfig(), `max_over_time(vector(1)[1s:0.0001])`, false, ErrorBadData, "",
			"the step must be at least 1ms"},
		{"abs 100 000 deep", DefaultConfig(), deep("abs(", "vector(1)", ")", 100_000), false, ErrorBadData, ReasonTooLong,
			"the query is 500009 bytes long, over query.max_query_length (65536)"},
		{"abs 100 000 deep, long queries allowed", roomy, deep("abs(", "vector(1)", ")", 100_000), false, ErrorBadData, ReasonTooDeep,
			"the query nests 100001 levels deep, over query.max_depth (200)"},
		{"parentheses 100 000 deep", roomy, deep("(", "1", ")", 100_000), false, ErrorBadData, ReasonTooDeep,
			"the query nests 100000 levels deep, over query.max_depth (200)"},
		{"100 000-term sum", DefaultConfig(), sum, false, ErrorBadData, ReasonTooLong, "over query.max_query_length (65536)"},
		{"100 000-term sum, long queries allowed", roomy, sum, false, ErrorBadData, ReasonTooDeep,
			"the query nests 100000 levels deep, over query.max_depth (200)"},
		{"100 000 unary minuses", roomy, strings.Repeat("-", 100_000) + "vector(1)", false, ErrorBadData, ReasonTooDeep,
			"over query.max_depth (200)"},
		{"1 MB label value", DefaultConfig(), `up{a="` + strings.Repeat("x", 1<<20) + `"}`, false, ErrorBadData, ReasonTooLong,
			"the query is 1048584 bytes long, over query.max_query_length (65536)"},
		{"too many samples", tiny, `count_over_time(traces_spanmetrics_calls_total[5m])`, false, ErrorExec, ReasonTooManySamples,
			"query processing would load too many samples into memory in query execution: over query.max_samples (10)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := withConfig(t, tc.cfg)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			refused := testutil.ToFloat64(queriesRejected.WithLabelValues(ReasonTooManySteps)) +
				testutil.ToFloat64(queriesRejected.WithLabelValues(ReasonTooLong)) +
				testutil.ToFloat64(queriesRejected.WithLabelValues(ReasonTooDeep)) +
				testutil.ToFloat64(queriesRejected.WithLabelValues(ReasonTooManySamples))
			t0 := time.Now()
			var err error
			if tc.rangeQ {
				_, err = q.Range(context.Background(), tenant.Default, tc.expr, end.Add(-24*time.Hour), end, time.Minute)
			} else {
				_, err = q.Instant(context.Background(), tenant.Default, tc.expr, end)
			}
			took := time.Since(t0)
			runtime.ReadMemStats(&after)
			var qe *Error
			if !errors.As(err, &qe) || qe.Type != tc.wantType || !strings.Contains(qe.Error(), tc.want) {
				t.Fatalf("error %v, want %s containing %q", err, tc.wantType, tc.want)
			}
			// Not a speed target (those are in BENCHMARKS.md): a bound
			// wide enough for -race on a loaded machine that still
			// catches the unbounded cases (52 s for 100 000 parentheses,
			// 67 s and a stack overflow for abs( before the depth check).
			if took > 10*time.Second {
				t.Errorf("refused after %s", took)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > heapBound {
				t.Errorf("allocated %d MB refusing it", alloc>>20)
			}
			if tc.reason != "" && qe.reason != tc.reason {
				t.Errorf("reason %q, want %q", qe.reason, tc.reason)
			}
			now := testutil.ToFloat64(queriesRejected.WithLabelValues(ReasonTooManySteps)) +
				testutil.ToFloat64(queriesRejected.WithLabelValues(ReasonTooLong)) +
				testutil.ToFloat64(queriesRejected.WithLabelValues(ReasonTooDeep)) +
				testutil.ToFloat64(queriesRejected.WithLabelValues(ReasonTooManySamples))
			if want := map[bool]float64{true: 1, false: 0}[tc.reason != ""]; now-refused != want {
				t.Errorf("spangraph_query_rejected_total grew by %v, want %v", now-refused, want)
			}
		})
	}
}

// Queries at the limits still run.
func TestQueriesWithinLimits(t *testing.T) {
	q := newQuerier(t)
	tests := []struct {
		name   string
		expr   string
		rangeQ bool
	}{
		{"199 levels", strings.Repeat("abs(", 198) + "vector(1)" + strings.Repeat(")", 198), false},
		{"199 operators", strings.TrimSuffix(strings.Repeat("1+", 200), "+"), false},
		{"matchers do not nest", `sum(traces_spanmetrics_calls_total{service=~"a|b|c",span_name!="x",status_code!~"y"}) # (((((`, false},
		{"subquery of 11 000 steps", `max_over_time(vector(1)[11000s:1s])`, false},
		{"a day at 1s, as Prometheus answers", `max_over_time(vector(1)[1d:1s])`, false},
		{"subquery of an hour at 1s over a range query", `max_over_time(vector(1)[1h:1s] offset 5m)`, true},
		{"subquery of a Grafana panel", `max_over_time(rate(traces_spanmetrics_calls_total[5m])[1h:1m])`, true},
		{"subquery at a fixed time", `max_over_time(vector(1)[2h:1s] @ 1700000000)`, false},
	}
	for _, tc := range tests {
		var err error
		if tc.rangeQ {
			_, err = q.Range(context.Background(), tenant.Default, tc.expr, end.Add(-24*time.Hour), end, 86*time.Second)
		} else {
			_, err = q.Instant(context.Background(), tenant.Default, tc.expr, end)
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// Eight [1d:2ms] subqueries at once reached 7 GB; they must all be refused
// without the heap noticing.
func TestConcurrentHostileQueries(t *testing.T) {
	q := newQuerier(t)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = q.Instant(context.Background(), tenant.Default, `max_over_time(vector(1)[1d:2ms])`, end)
		})
	}
	wg.Wait()
	runtime.ReadMemStats(&after)
	for _, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "would take 43200000 steps, over query.max_subquery_steps (1000000)") {
			t.Errorf("error %v", err)
		}
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > heapBound {
		t.Errorf("allocated %d MB refusing them", alloc>>20)
	}
}

func TestQueryTimeout(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Timeout = 10 * time.Millisecond
	q := withConfig(t, cfg)
	// 11 000 steps, each reading a window of 3 600 points: ~40 M points.
	_, err := q.Range(context.Background(), tenant.Default, `max_over_time(vector(1)[1h:1s])`,
		end.Add(-2*time.Hour), end, 2*time.Hour/11000)
	var qe *Error
	if !errors.As(err, &qe) || qe.Type != ErrorTimeout || !strings.Contains(qe.Error(), "timed out in expression evaluation: the query ran longer than query.timeout (10ms)") {
		t.Fatalf("error %v, want a timeout naming query.timeout", err)
	}
	// The graph and the RED table are bounded alike.
	cfg.Timeout = time.Nanosecond
	q = withConfig(t, cfg)
	if _, err := q.ServiceGraph(context.Background(), tenant.Default, GraphOptions{Start: end.Add(-5 * time.Minute), End: end}); !isType(err, ErrorTimeout) {
		t.Errorf("service graph: %v, want a timeout", err)
	}
	if _, err := q.REDTable(context.Background(), tenant.Default, REDOptions{Start: end.Add(-5 * time.Minute), End: end}); !isType(err, ErrorTimeout) {
		t.Errorf("RED table: %v, want a timeout", err)
	}
}

func isType(err error, typ string) bool {
	var qe *Error
	return errors.As(err, &qe) && qe.Type == typ
}

func TestServiceGraphSamples(t *testing.T) {
	cfg := DefaultConfig()
	// Four edges, each with requests, failures, sums, counts and five
	// buckets on either side: 4 × 16 figures.
	cfg.MaxSamples = 63
	q := withConfig(t, cfg)
	_, err := q.ServiceGraph(context.Background(), tenant.Default, GraphOptions{Start: end.Add(-5 * time.Minute), End: end})
	if !isType(err, ErrorExec) || !strings.Contains(err.Error(), "would hold 64 figures (4 edges × 16 series) in memory, over query.max_samples (63)") {
		t.Fatalf("error %v", err)
	}
	cfg.MaxSamples = 64
	if _, err := withConfig(t, cfg).ServiceGraph(context.Background(), tenant.Default, GraphOptions{Start: end.Add(-5 * time.Minute), End: end}); err != nil {
		t.Fatal(err)
	}
}

// gatedSource holds every read of the store until open is closed, so that
// a query holds its slot for as long as a test needs.
type gatedSource struct {
	stores
	open chan struct{}
}

type gatedQueryable struct {
	storage.Queryable
	open chan struct{}
}

func (g gatedQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	<-g.open
	return g.Queryable.Querier(mint, maxt)
}

func (s gatedSource) Queryable(tenant string) (storage.Queryable, storage.ExemplarQueryable) {
	q, e := s.stores.Queryable(tenant)
	return gatedQueryable{q, s.open}, e
}

// With one slot taken by a slow query, the next waits queue_timeout and is
// refused as unavailable (503 in the HTTP API); once the slot frees,
// queries run again.
func TestConcurrencyLimit(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxConcurrency, cfg.QueueTimeout = 1, 200*time.Millisecond
	src := gatedSource{newQuerier(t).source.(stores), make(chan struct{})}
	q := NewQuerier(src, cfg, slog.New(slog.DiscardHandler), nil)
	ctx := context.Background()
	slow := make(chan error)
	go func() {
		_, err := q.Instant(ctx, tenant.Default, `sum(traces_spanmetrics_calls_total)`, end)
		slow <- err
	}()
	for len(q.slots) == 0 {
		time.Sleep(time.Millisecond)
	}
	if got := testutil.ToFloat64(queriesInflight); got < 1 {
		t.Errorf("spangraph_query_inflight %v with a query running", got)
	}
	refused := testutil.ToFloat64(queriesRejected.WithLabelValues(ReasonQueueTimeout))
	t0 := time.Now()
	_, err := q.Instant(ctx, tenant.Default, "1+1", end)
	if waited := time.Since(t0); waited < cfg.QueueTimeout || waited > cfg.QueueTimeout+time.Second {
		t.Errorf("refused after %s, want after queue_timeout (%s)", waited, cfg.QueueTimeout)
	}
	want := "too many queries at once: no slot of query.max_concurrency (1) came free within query.queue_timeout (200ms); retry later"
	if !isType(err, ErrorUnavailable) || err.Error() != want {
		t.Errorf("second query: %v, want unavailable: %s", err, want)
	}
	if got := testutil.ToFloat64(queriesRejected.WithLabelValues(ReasonQueueTimeout)) - refused; got != 1 {
		t.Errorf("queue_timeout refusals grew by %v, want 1", got)
	}
	// Every reader of the store waits for the same slot.
	window := end.Add(-5 * time.Minute)
	up, _ := q.ParseSelectors([]string{"up"})
	for name, read := range map[string]func() error{
		"LabelNames": func() error { _, err := q.LabelNames(ctx, tenant.Default, nil, 0, end.UnixMilli()); return err },
		"LabelValues": func() error {
			_, err := q.LabelValues(ctx, tenant.Default, "service", nil, 0, end.UnixMilli())
			return err
		},
		"Series":    func() error { _, err := q.Series(ctx, tenant.Default, up, 0, end.UnixMilli()); return err },
		"Exemplars": func() error { _, err := q.Exemplars(ctx, tenant.Default, "up", window, end); return err },
		"ServiceGraph": func() error {
			_, err := q.ServiceGraph(ctx, tenant.Default, GraphOptions{Start: window, End: end})
			return err
		},
		"REDTable": func() error {
			_, err := q.REDTable(ctx, tenant.Default, REDOptions{Start: window, End: end})
			return err
		},
		"Range": func() error { _, err := q.Range(ctx, tenant.Default, "1", window, end, 15*time.Second); return err },
	} {
		if err := read(); !isType(err, ErrorUnavailable) {
			t.Errorf("%s with the slot taken: %v", name, err)
		}
	}
	// A query that arrives while the slot is taken gets it once it frees.
	third := make(chan error)
	go func() {
		_, err := q.Instant(ctx, tenant.Default, `sum(traces_spanmetrics_calls_total)`, end)
		third <- err
	}()
	time.Sleep(cfg.QueueTimeout / 4)
	close(src.open)
	if err := <-slow; err != nil {
		t.Errorf("slow query: %v", err)
	}
	if err := <-third; err != nil {
		t.Errorf("query waiting for the slot: %v", err)
	}
	if _, err := q.Instant(ctx, tenant.Default, "1+1", end); err != nil {
		t.Errorf("after the slot freed: %v", err)
	}
	if len(q.slots) != 0 {
		t.Errorf("%d slots still held", len(q.slots))
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Timeout = 0 }, "query.timeout: must be positive"},
		{func(c *Config) { c.MaxSamples = 0 }, "query.max_samples: must be positive, got 0"},
		{func(c *Config) { c.LookbackDelta = -time.Second }, "query.lookback_delta: must be positive"},
		{func(c *Config) { c.MaxQueryLength = 0 }, "query.max_query_length: must be positive"},
		{func(c *Config) { c.MaxDepth = -1 }, "query.max_depth: must be positive"},
		{func(c *Config) { c.MaxSteps = 0 }, "query.max_steps: must be positive"},
		{func(c *Config) { c.MaxConcurrency = 0 }, "query.max_concurrency: must be positive"},
		{func(c *Config) { c.QueueTimeout = -time.Second }, "query.queue_timeout: must not be negative"},
		{func(c *Config) { c.QueueTimeout = 0 }, ""},
		{func(*Config) {}, ""},
	}
	for _, tc := range tests {
		c := DefaultConfig()
		tc.edit(&c)
		err := c.Validate("query")
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}
