package query

import (
	"compress/gzip"
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	config_util "github.com/prometheus/common/config"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"

	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/store"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// backendFixture is a store with an hour of a small service graph and
// RED table (the benchmarks' series), newQuerier's graph over the last
// five minutes with its exemplar, an edge whose counters reset, one that
// starts inside a five-minute window and one that goes stale in it.
func backendFixture(t *testing.T) (*Querier, *store.Store) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.TempDir(), tenant.Default, store.Options{Retention: 24 * time.Hour, MaxExemplars: 100}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	app := st.Appender(context.Background())
	err = eachCollection(append(benchSeries(20, 60), redSeries(10, 3)...), func(int64) {}, func(_ int, s benchSample, ts int64, v float64) error {
		_, err := app.Append(0, s.l, ts, v)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// counter appends a counter of an edge's series from from to to, its
	// value f(seconds since from); a stale marker follows when stale.
	counter := func(l labels.Labels, from, to time.Time, stale bool, f func(x float64) float64) {
		var ts time.Time
		for ts = from; !ts.After(to); ts = ts.Add(15 * time.Second) {
			if _, err := app.Append(0, l, ts.UnixMilli(), f(ts.Sub(from).Seconds())); err != nil {
				t.Fatal(err)
			}
		}
		if stale {
			if _, err := app.Append(0, l, ts.UnixMilli(), math.Float64frombits(value.StaleNaN)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// edgeCounters writes an edge's series, each shaped by f times its
	// rate: requests, 20 % failed, all 0.3 s on the server side.
	edgeCounters := func(client, server string, from, to time.Time, stale bool, f func(x float64) float64) {
		with := func(name string, extra ...string) labels.Labels {
			return labels.FromStrings(append([]string{"__name__", name, "client", client, "server", server}, extra...)...)
		}
		for _, s := range []struct {
			l    labels.Labels
			rate float64
		}{
			{with(metricRequests), 5}, {with(metricFailed), 1},
			{with(metricServerSeconds + "_sum"), 1.5}, {with(metricServerSeconds + "_count"), 5},
			{with(metricServerSeconds+"_bucket", "le", "0.1"), 0}, {with(metricServerSeconds+"_bucket", "le", "0.4"), 5},
			{with(metricServerSeconds+"_bucket", "le", "+Inf"), 5},
		} {
			counter(s.l, from, to, stale, func(x float64) float64 { return s.rate * f(x) })
		}
	}
	linear := func(x float64) float64 { return x }
	edgeCounters("reset-a", "reset-b", end.Add(-time.Hour), end, false, func(x float64) float64 {
		if x >= 2400 { // a restart 20 minutes before the end
			return x - 2400
		}
		return x
	})
	edgeCounters("late-a", "late-b", end.Add(-3*time.Minute), end, false, linear)
	edgeCounters("gone-a", "gone-b", end.Add(-time.Hour), end.Add(-4*time.Minute), true, linear)
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}

	fillFixture(t, st)
	return NewQuerier(stores{tenant.Default: st}, DefaultConfig(), logger, nil), st
}

// TestBackendMatchesEmbedded puts the same samples into the embedded
// store and into a real Prometheus (by remote write), once as they are
// and once with every float series split over two
// __metrics_gen_instance values (30 % and 70 % of every value, as two
// instances that each counted part of the spans would write them), and
// holds every read through the backend to the one over the store:
// PromQL instant and range, label names and values, series, exemplars,
// the node graph (nodes, edges, rates, error ratios, averages, p90s,
// kinds) and the RED table, equal within 1e-9 relative; the figures of
// the split series equal those of the whole ones. Nothing reads the
// embedded store or a rolling window meanwhile.
//
// The windows end off the 15 s grid of the samples: Prometheus 2.x (the
// Debian package) reads a range [end-w, end], Prometheus 3 and the
// embedded engine (end-w, end], so a sample exactly at end-w would count
// on one side only.
func TestBackendMatchesEmbedded(t *testing.T) {
	emb, st := backendFixture(t)
	plain, split := startProm(t), startProm(t)
	mirror(t, st, plain, noSplit)
	mirror(t, st, split, func(labels.Labels) []float64 { return []float64{0.3, 0.7} })
	qPlain := backendQuerier(t, trapSource{t}, DefaultConfig(), BackendConfig{URL: plain.url()})
	qSplit := backendQuerier(t, trapSource{t}, DefaultConfig(), BackendConfig{URL: split.url()})
	ctx := context.Background()
	at := end.Add(-7 * time.Second)

	t.Run("graph", func(t *testing.T) {
		for _, w := range []time.Duration{5 * time.Minute, 30 * time.Minute, time.Hour} {
			for _, o := range []GraphOptions{
				{},
				{Service: "svc-0003", Depth: 1},
				{ConnectionTypes: []string{""}},
				{Matchers: `client!="reset-a", server=~".+"`},
			} {
				o.Start, o.End = at.Add(-w), at
				want, err := emb.ServiceGraph(ctx, tenant.Default, o)
				if err != nil {
					t.Fatal(err)
				}
				if len(want.Edges) == 0 {
					t.Fatalf("%s %+v: no edges in the fixture", w, o)
				}
				for name, q := range map[string]*Querier{"plain": qPlain, "split": qSplit} {
					got, err := q.ServiceGraph(ctx, tenant.Default, o)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					requireSame(t, name+" graph "+w.String(), want, got)
				}
			}
		}
	})

	t.Run("red", func(t *testing.T) {
		for _, w := range []time.Duration{5 * time.Minute, time.Hour} {
			for _, o := range []REDOptions{
				{},
				{GroupBy: "span_name"},
				{GroupBy: "span_name", Service: "checkout", TopN: 1},
				{Matchers: `service!="svc-0001"`, SpanKinds: []string{"SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER"}},
			} {
				o.Start, o.End = at.Add(-w), at
				want, err := emb.REDTable(ctx, tenant.Default, o)
				if err != nil {
					t.Fatal(err)
				}
				if len(want) == 0 {
					t.Fatalf("%s %+v: no rows in the fixture", w, o)
				}
				for name, q := range map[string]*Querier{"plain": qPlain, "split": qSplit} {
					got, err := q.REDTable(ctx, tenant.Default, o)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					requireSame(t, name+" RED "+w.String(), want, got)
				}
			}
		}
	})

	// Sums over the groups read the same through the split series.
	aggregated := []string{
		`sum by (server) (rate(traces_service_graph_request_total[5m]))`,
		`histogram_quantile(0.9, sum by (le, server) (rate(traces_service_graph_request_server_seconds_bucket[10m])))`,
		`sum(increase(traces_spanmetrics_calls_total[1h])) by (service, status_code)`,
		`scalar(sum(rate(traces_service_graph_request_failed_total[5m])))`,
	}
	// Single series read the same as they are.
	raw := append([]string{
		`traces_service_graph_request_total`,
		`traces_service_graph_request_total{client="frontend"}[1m]`,
		`rate(traces_service_graph_request_server_seconds_sum[2m]) / rate(traces_service_graph_request_server_seconds_count[2m])`,
		`"a string"`,
		`time()`,
	}, aggregated...)
	t.Run("instant", func(t *testing.T) {
		for name, c := range map[string]struct {
			q     *Querier
			exprs []string
		}{"plain": {qPlain, raw}, "split": {qSplit, aggregated}} {
			for _, expr := range c.exprs {
				want, err := emb.Instant(ctx, tenant.Default, expr, at)
				if err != nil {
					t.Fatalf("%s: %v", expr, err)
				}
				got, err := c.q.Instant(ctx, tenant.Default, expr, at)
				if err != nil {
					t.Fatalf("%s %s: %v", name, expr, err)
				}
				if !sameValue(want.Value, got.Value) {
					t.Errorf("%s %s:\nembedded %v\nbackend  %v", name, expr, want.Value, got.Value)
				}
			}
		}
	})
	t.Run("range", func(t *testing.T) {
		for name, c := range map[string]struct {
			q     *Querier
			exprs []string
		}{"plain": {qPlain, []string{raw[0], raw[2], "time()"}}, "split": {qSplit, aggregated}} {
			for _, expr := range c.exprs {
				want, err := emb.Range(ctx, tenant.Default, expr, at.Add(-time.Hour), at, time.Minute)
				if err != nil {
					t.Fatalf("%s: %v", expr, err)
				}
				got, err := c.q.Range(ctx, tenant.Default, expr, at.Add(-time.Hour), at, time.Minute)
				if err != nil {
					t.Fatalf("%s %s: %v", name, expr, err)
				}
				if !sameValue(want.Value, got.Value) {
					t.Errorf("%s %s:\nembedded %v\nbackend  %v", name, expr, want.Value, got.Value)
				}
			}
		}
	})

	t.Run("metadata", func(t *testing.T) {
		sets, err := emb.ParseSelectors([]string{`{__name__=~"traces_service_graph_request_total|traces_spanmetrics_calls_total", client!="user"}`, `{server="checkout"}`})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []struct{ mint, maxt int64 }{
			{apiMinTime, apiMaxTime},
			{end.Add(-10 * time.Minute).UnixMilli(), end.UnixMilli()},
		} {
			for _, ss := range [][][]*labels.Matcher{nil, sets} {
				want, err := emb.LabelNames(ctx, tenant.Default, ss, r.mint, r.maxt)
				if err != nil {
					t.Fatal(err)
				}
				got, err := qPlain.LabelNames(ctx, tenant.Default, ss, r.mint, r.maxt)
				if err != nil {
					t.Fatal(err)
				}
				requireSame(t, "label names", want, got)
				want, err = emb.LabelValues(ctx, tenant.Default, "server", ss, r.mint, r.maxt)
				if err != nil {
					t.Fatal(err)
				}
				got, err = qPlain.LabelValues(ctx, tenant.Default, "server", ss, r.mint, r.maxt)
				if err != nil {
					t.Fatal(err)
				}
				requireSame(t, "label values", want, got)
			}
			want, err := emb.Series(ctx, tenant.Default, sets, r.mint, r.maxt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := qPlain.Series(ctx, tenant.Default, sets, r.mint, r.maxt)
			if err != nil {
				t.Fatal(err)
			}
			if len(want) < 10 || len(want) != len(got) {
				t.Fatalf("series: embedded %d, backend %d", len(want), len(got))
			}
			for i := range want {
				if !labels.Equal(want[i], got[i]) {
					t.Errorf("series %d: embedded %s, backend %s", i, want[i], got[i])
				}
			}
		}
		for _, expr := range []string{`traces_spanmetrics_latency_bucket{service="frontend"}`, `vector(1)`} {
			want, err := emb.Exemplars(ctx, tenant.Default, expr, end.Add(-5*time.Minute), end)
			if err != nil {
				t.Fatal(err)
			}
			got, err := qPlain.Exemplars(ctx, tenant.Default, expr, end.Add(-5*time.Minute), end)
			if err != nil {
				t.Fatal(err)
			}
			requireSame(t, "exemplars of "+expr, want, got)
		}
	})
}

// TestBackendErrors: a query refused here never leaves; what the backend
// refuses keeps its errorType; a backend that cannot be reached, is not
// an API, answers too late or with too much says so, naming the key to
// check.
func TestBackendErrors(t *testing.T) {
	p := startProm(t)
	_, st := backendFixture(t)
	mirror(t, st, p, noSplit)
	var requests atomic.Int64
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		proxyTo(t, p.url()).ServeHTTP(w, r)
	}))
	defer counting.Close()
	// block answers when the request is given up (which the server
	// notices once it has read the body).
	block := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	}))
	defer block.Close()
	status := func(code int, body string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(code)
			_, _ = io.WriteString(w, body)
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	_ = l.Close()

	lenient := DefaultConfig()
	lenient.MaxSteps = 1_000_000
	short := DefaultConfig()
	short.Timeout = 300 * time.Millisecond
	few := DefaultConfig()
	few.MaxSamples = 50
	ctx := context.Background()
	instant := func(expr string) func(q *Querier) error {
		return func(q *Querier) error {
			_, err := q.Instant(ctx, tenant.Default, expr, end)
			return err
		}
	}
	rangeQuery := func(expr string, steps int) func(q *Querier) error {
		return func(q *Querier) error {
			_, err := q.Range(ctx, tenant.Default, expr, end.Add(-time.Duration(steps)*time.Second), end, time.Second)
			return err
		}
	}
	for _, tc := range []struct {
		name    string
		url     string
		cfg     Config
		timeout time.Duration
		do      func(q *Querier) error
		typ     string
		says    []string
	}{
		{"parse error, here", counting.URL, DefaultConfig(), 0, instant(`sum(`), ErrorBadData, []string{"unclosed left parenthesis"}},
		{"too many steps, here", counting.URL, DefaultConfig(), 0, rangeQuery(`vector(1)`, 20_000), ErrorBadData, []string{"query.max_steps"}},
		{"too many steps, there", p.url(), lenient, 0, rangeQuery(`vector(1)`, 20_000), ErrorBadData, []string{p.url(), "11,000"}},
		{"execution", p.url(), DefaultConfig(), 0, instant(`traces_service_graph_request_total + on() traces_service_graph_request_failed_total`), ErrorExec, []string{"many-to-many"}},
		{"unreachable", closed, DefaultConfig(), 0, instant(`vector(1)`), ErrorUnavailable, []string{closed, "connection refused", "check query_backend.url"}},
		{"unreachable graph", closed, DefaultConfig(), 0, func(q *Querier) error {
			_, err := q.ServiceGraph(ctx, tenant.Default, GraphOptions{Start: end.Add(-5 * time.Minute), End: end})
			return err
		}, ErrorUnavailable, []string{closed, "check query_backend.url"}},
		{"unreachable labels", closed, DefaultConfig(), 0, func(q *Querier) error {
			_, err := q.LabelNames(ctx, tenant.Default, nil, apiMinTime, apiMaxTime)
			return err
		}, ErrorUnavailable, []string{closed, "check query_backend.url"}},
		{"no API there", p.url() + "/nothing", DefaultConfig(), 0, instant(`vector(1)`), ErrorInternal, []string{"HTTP 404", "check query_backend.url"}},
		{"not an API", status(200, "<html>hello</html>"), DefaultConfig(), 0, instant(`vector(1)`), ErrorInternal, []string{"not a Prometheus API response"}},
		{"overloaded", status(503, "try later"), DefaultConfig(), 0, instant(`vector(1)`), ErrorUnavailable, []string{"HTTP 503", "try later", "retry later"}},
		{"its own timeout", status(503, `{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}`), DefaultConfig(), 0,
			instant(`vector(1)`), ErrorTimeout, []string{"query timed out in expression evaluation"}},
		{"query_backend.timeout", block.URL, DefaultConfig(), 300 * time.Millisecond, instant(`vector(1)`), ErrorTimeout, []string{block.URL, "query_backend.timeout (300ms)"}},
		{"query.timeout", block.URL, short, 0, instant(`vector(1)`), ErrorTimeout, []string{"query.timeout (300ms)"}},
		{"too many samples", p.url(), few, 0, rangeQuery(`vector(1)`, 99), ErrorExec, []string{"holds 100 samples", "query.max_samples (50)"}},
		{"too many bytes", p.url(), few, 0, instant(`{__name__=~".+"}`), ErrorExec, []string{"over 2400 bytes", "query.max_samples (50)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requests.Store(0)
			q := backendQuerier(t, trapSource{t}, tc.cfg, BackendConfig{URL: tc.url, Timeout: tc.timeout})
			err := tc.do(q)
			t.Log(err)
			var qe *Error
			if !errors.As(err, &qe) || qe.Type != tc.typ {
				t.Fatalf("error %v, want errorType %s", err, tc.typ)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if strings.HasSuffix(tc.name, ", here") && requests.Load() != 0 {
				t.Errorf("%d requests reached the backend", requests.Load())
			}
		})
	}
}

// proxyTo forwards requests to the URL.
func proxyTo(t testing.TB, to string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, to+r.URL.RequestURI(), r.Body)
		if err != nil {
			t.Error(err)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
}

// TestBackendCheck: a backend that answers is nil; one that does not is
// an error naming it.
func TestBackendCheck(t *testing.T) {
	p := startProm(t)
	b, err := NewBackend(BackendConfig{URL: p.url(), Timeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Check(context.Background()); err != nil {
		t.Errorf("check of a running Prometheus: %v", err)
	}
	if b.String() != p.url() {
		t.Errorf("String() = %q, want %q", b, p.url())
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	_ = l.Close()
	b, err = NewBackend(BackendConfig{URL: closed, Timeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Check(context.Background()); err == nil || !strings.Contains(err.Error(), closed) {
		t.Errorf("check of a closed port: %v, want an error naming %s", err, closed)
	}
}

// TestFloatHistogramFromAPI: a native histogram listed as the API lists
// it (buckets with observations, with bounds) is rebuilt with the same
// buckets, for every exponential schema, with a zero bucket, negative
// buckets, a first bucket the zero bucket cuts, and custom buckets.
func TestFloatHistogramFromAPI(t *testing.T) {
	type tc struct {
		h *histogram.FloatHistogram
		// sameSchema: the buckets tell the schema (a bucket the zero
		// bucket did not cut, or custom bounds).
		sameSchema bool
	}
	var cases []tc
	for s := histogram.ExponentialSchemaMin; s <= histogram.ExponentialSchemaMax; s++ {
		cases = append(cases,
			tc{&histogram.FloatHistogram{Schema: s, Count: 19, Sum: 12.5, ZeroThreshold: 1e-100, ZeroCount: 2,
				PositiveSpans: []histogram.Span{{Offset: -3, Length: 2}, {Offset: 4, Length: 3}}, PositiveBuckets: []float64{1, 2, 0, 3, 4},
				NegativeSpans: []histogram.Span{{Offset: 1, Length: 2}}, NegativeBuckets: []float64{5, 2}}, true},
			tc{&histogram.FloatHistogram{Schema: s, Count: 3, Sum: 3, PositiveSpans: []histogram.Span{{Offset: 7, Length: 1}}, PositiveBuckets: []float64{3}}, true},
		)
	}
	cases = append(cases,
		// Schema 0's bucket (0.5, 1], listed as (0.7, 1]: the zero bucket cut it.
		tc{&histogram.FloatHistogram{Schema: 0, Count: 4, Sum: 3, ZeroThreshold: 0.7, ZeroCount: 1,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []float64{3}}, false},
		tc{&histogram.FloatHistogram{Schema: histogram.CustomBucketsSchema, Count: 10, Sum: 7, CustomValues: []float64{0.1, 0.5, 1, 5},
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}, {Offset: 2, Length: 1}}, PositiveBuckets: []float64{4, 3, 3}}, true},
		tc{&histogram.FloatHistogram{Schema: 2, Count: 0, Sum: 0}, false},
	)
	for _, c := range cases {
		got := floatHistogram(apiHistogram(c.h))
		if !sameHistogram(c.h, got) {
			t.Errorf("schema %d: %s rebuilt as %s", c.h.Schema, c.h, got)
		}
		if c.sameSchema && c.h.Schema != got.Schema {
			t.Errorf("schema %d rebuilt as schema %d", c.h.Schema, got.Schema)
		}
	}
}

// everyRead runs each kind of read a querier serves, for tenantID.
func everyRead(ctx context.Context, q *Querier, tenantID string) error {
	sets, err := q.ParseSelectors([]string{`{__name__="traces_service_graph_request_total"}`})
	if err != nil {
		return err
	}
	mint, maxt := end.Add(-time.Hour).UnixMilli(), end.UnixMilli()
	for _, read := range []func() error{
		func() error {
			_, err := q.Instant(ctx, tenantID, `sum(traces_service_graph_request_total)`, end)
			return err
		},
		func() error {
			_, err := q.Range(ctx, tenantID, `sum(traces_service_graph_request_total)`, end.Add(-time.Hour), end, time.Minute)
			return err
		},
		func() error { _, err := q.LabelNames(ctx, tenantID, nil, mint, maxt); return err },
		func() error { _, err := q.LabelValues(ctx, tenantID, "server", sets, mint, maxt); return err },
		func() error { _, err := q.Series(ctx, tenantID, sets, mint, maxt); return err },
		func() error {
			_, err := q.Exemplars(ctx, tenantID, `traces_spanmetrics_latency_bucket`, end.Add(-time.Hour), end)
			return err
		},
		func() error {
			_, err := q.ServiceGraph(ctx, tenantID, GraphOptions{Start: end.Add(-5 * time.Minute), End: end})
			return err
		},
		func() error {
			_, err := q.REDTable(ctx, tenantID, REDOptions{Start: end.Add(-5 * time.Minute), End: end})
			return err
		},
	} {
		if err := read(); err != nil {
			return err
		}
	}
	return nil
}

// recorder is a proxy in front of Prometheus that refuses requests
// without the credentials it wants (401) and keeps the headers of the
// others.
type recorder struct {
	mu      sync.Mutex
	headers []http.Header
	paths   map[string]bool
}

func (r *recorder) handler(t testing.TB, to string, authorized func(*http.Request) bool) http.Handler {
	next := proxyTo(t, to)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !authorized(req) {
			w.Header().Set("WWW-Authenticate", `Basic realm="prometheus"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		r.mu.Lock()
		r.headers = append(r.headers, req.Header.Clone())
		if r.paths == nil {
			r.paths = map[string]bool{}
		}
		r.paths[req.URL.Path] = true
		r.mu.Unlock()
		next.ServeHTTP(w, req)
	})
}

// take returns and forgets the headers seen.
func (r *recorder) take() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.headers
	r.headers = nil
	return h
}

// TestBackendAuth: behind a proxy that demands credentials, every kind
// of read (PromQL, metadata, exemplars, node graph, RED table) sends
// them, as bearer_token, bearer_token_file, basic_auth with password or
// password_file, with the configured headers and the tenant in
// tenant_header (none for the default tenant); wrong credentials are
// the operator's to fix, and the error says where.
func TestBackendAuth(t *testing.T) {
	p := startProm(t)
	_, st := backendFixture(t)
	mirror(t, st, p, noSplit)
	dir := t.TempDir()
	tokenFile, passwordFile := filepath.Join(dir, "token"), filepath.Join(dir, "password")
	if err := os.WriteFile(tokenFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passwordFile, []byte("pw-from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	bearer := func(token string) func(*http.Request) bool {
		return func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+token }
	}
	basic := func(user, pass string) func(*http.Request) bool {
		return func(r *http.Request) bool { u, p, ok := r.BasicAuth(); return ok && u == user && p == pass }
	}
	for _, tc := range []struct {
		name       string
		cfg        BackendConfig
		authorized func(*http.Request) bool
	}{
		{"bearer_token", BackendConfig{BearerToken: "s3cret"}, bearer("s3cret")},
		{"bearer_token_file", BackendConfig{BearerTokenFile: tokenFile}, bearer("from-file")},
		{"basic_auth", BackendConfig{BasicAuth: &config_util.BasicAuth{Username: "spangraph", Password: "pw"}}, basic("spangraph", "pw")},
		{"basic_auth password_file", BackendConfig{BasicAuth: &config_util.BasicAuth{Username: "spangraph", PasswordFile: passwordFile}}, basic("spangraph", "pw-from-file")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			proxy := httptest.NewServer(rec.handler(t, p.url(), tc.authorized))
			defer proxy.Close()
			cfg := tc.cfg
			cfg.URL, cfg.TenantHeader, cfg.Headers = proxy.URL, "X-Scope-OrgID", map[string]string{"X-Extra": "yes"}
			q := backendQuerier(t, trapSource{t}, DefaultConfig(), cfg)
			for _, id := range []string{"team-a", tenant.Default} {
				if err := everyRead(ctx, q, id); err != nil {
					t.Fatalf("tenant %s: %v", id, err)
				}
				seen := rec.take()
				if len(seen) < 8 {
					t.Fatalf("tenant %s: %d requests, want one or more per kind of read", id, len(seen))
				}
				want := id
				if id == tenant.Default {
					want = ""
				}
				for _, h := range seen {
					if got := h.Get("X-Scope-OrgID"); got != want || h.Get("X-Extra") != "yes" {
						t.Fatalf("tenant %s: request with X-Scope-OrgID %q, X-Extra %q", id, got, h.Get("X-Extra"))
					}
				}
			}
			for _, path := range []string{"/api/v1/query", "/api/v1/query_range", "/api/v1/labels", "/api/v1/label/server/values",
				"/api/v1/label/le/values", "/api/v1/series", "/api/v1/query_exemplars"} {
				if !rec.paths[path] {
					t.Errorf("no request to %s", path)
				}
			}

			// The same reads with wrong credentials.
			wrong := tc.cfg
			wrong.URL = proxy.URL
			if wrong.BasicAuth != nil {
				wrong.BasicAuth = &config_util.BasicAuth{Username: "spangraph", Password: "wrong"}
			} else {
				wrong.BearerToken, wrong.BearerTokenFile = "wrong", ""
			}
			err := everyRead(ctx, backendQuerier(t, trapSource{t}, DefaultConfig(), wrong), "team-a")
			var qe *Error
			if !errors.As(err, &qe) || qe.Type != ErrorInternal || !strings.Contains(err.Error(), "HTTP 401") || !strings.Contains(err.Error(), "check query_backend.basic_auth, bearer_token") {
				t.Errorf("wrong credentials: %v, want an internal error naming the keys to check", err)
			}
		})
	}

	// The tenant header: renamed, none, or fixed by headers.
	rec := &recorder{}
	proxy := httptest.NewServer(rec.handler(t, p.url(), func(*http.Request) bool { return true }))
	defer proxy.Close()
	for _, tc := range []struct {
		name    string
		cfg     BackendConfig
		header  string
		want    string
		without []string
	}{
		{"renamed", BackendConfig{TenantHeader: "X-Tenant"}, "X-Tenant", "team-a", []string{"X-Scope-OrgID"}},
		{"none", BackendConfig{TenantHeader: ""}, "X-Scope-OrgID", "", nil},
		{"fixed by headers", BackendConfig{TenantHeader: "X-Scope-OrgID", Headers: map[string]string{"x-scope-orgid": "everyone"}}, "X-Scope-OrgID", "everyone", nil},
	} {
		cfg := tc.cfg
		cfg.URL = proxy.URL
		if _, err := backendQuerier(t, trapSource{t}, DefaultConfig(), cfg).Instant(ctx, "team-a", "vector(1)", end); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for _, h := range rec.take() {
			if got := h.Get(tc.header); got != tc.want {
				t.Errorf("%s: %s %q, want %q", tc.name, tc.header, got, tc.want)
			}
			for _, name := range tc.without {
				if h.Get(name) != "" {
					t.Errorf("%s: %s sent", tc.name, name)
				}
			}
		}
	}
}

// TestBackendTLS: an https backend is trusted through tls_config.ca_file
// (or insecure_skip_verify), and refused, saying why, without.
func TestBackendTLS(t *testing.T) {
	p := startProm(t)
	srv := httptest.NewTLSServer(proxyTo(t, p.url()))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		tls  config_util.TLSConfig
		ok   bool
	}{
		{"ca_file", config_util.TLSConfig{CAFile: ca}, true},
		{"insecure_skip_verify", config_util.TLSConfig{InsecureSkipVerify: true}, true},
		{"untrusted", config_util.TLSConfig{}, false},
	} {
		q := backendQuerier(t, trapSource{t}, DefaultConfig(), BackendConfig{URL: srv.URL, TLSConfig: tc.tls})
		_, err := q.Instant(ctx, tenant.Default, "vector(1)", end)
		if tc.ok != (err == nil) {
			t.Errorf("%s: error %v", tc.name, err)
		}
		var qe *Error
		if !tc.ok && (!errors.As(err, &qe) || qe.Type != ErrorUnavailable || !strings.Contains(err.Error(), "certificate")) {
			t.Errorf("%s: %v, want unavailable, naming the certificate", tc.name, err)
		}
	}
}

// TestBackendTransport: answers come gzipped when the backend can, with
// their warnings and infos as the engine's annotations; every request is
// timed by endpoint and status; a querier with a backend needs no source.
func TestBackendTransport(t *testing.T) {
	var gzipped atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[1700000400,"42"]}]},` +
			`"warnings":["PromQL warning: something to know"],"infos":["PromQL info: something else"]}`
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			_, _ = io.WriteString(w, body)
			return
		}
		gzipped.Add(1)
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		_, _ = io.WriteString(zw, body)
		_ = zw.Close()
	}))
	defer srv.Close()
	reg := prometheus.NewRegistry()
	b, err := NewBackend(BackendConfig{URL: srv.URL, Timeout: time.Second}, reg)
	if err != nil {
		t.Fatal(err)
	}
	// A second backend (a reload) shares the registered histogram.
	if _, err := NewBackend(BackendConfig{URL: srv.URL, Timeout: time.Second}, reg); err != nil {
		t.Fatal(err)
	}
	q := NewQuerier(nil, DefaultConfig(), slog.New(slog.DiscardHandler), nil)
	q.UseBackend(b)
	res, err := q.Instant(context.Background(), tenant.Default, "a", end)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := res.Value.(promql.Vector); !ok || len(v) != 1 || v[0].F != 42 || v[0].Metric.Get("a") != "b" {
		t.Errorf("answer %v", res.Value)
	}
	warnings, infos := res.Warnings.AsStrings("a", 10, 10)
	if len(warnings) != 1 || warnings[0] != "PromQL warning: something to know" || len(infos) != 1 || infos[0] != "PromQL info: something else" {
		t.Errorf("warnings %q, infos %q", warnings, infos)
	}
	if gzipped.Load() != 1 {
		t.Errorf("%d gzipped answers, want 1", gzipped.Load())
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var count uint64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if mf.GetName() == "spangraph_query_backend_request_duration_seconds" && l["endpoint"] == "query" && l["status_code"] == "200" {
				count += m.GetHistogram().GetSampleCount()
			}
		}
	}
	if count != 1 {
		t.Errorf("request histogram counted %d queries with status 200, want 1", count)
	}
}

// TestBackendNativeHistograms writes native latency histograms (and the
// classic ones, generate_native_histograms: both) through the registry,
// as collections do, into a store and, by remote write, into Prometheus,
// and reads them through each: PromQL answers the same histograms (the
// API's bucket list rebuilt into native histograms) and the same counts
// and sums; the node graph's and the RED table's native latencies agree:
// averages to 1e-9, quantiles within the native bucket they fall in
// (Prometheus 2.x interpolates linearly within it, Prometheus 3 and the
// embedded engine exponentially).
func TestBackendNativeHistograms(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	st, err := store.Open(t.TempDir(), tenant.Default, store.Options{Retention: time.Hour}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	both := registry.HistogramOptions{Mode: registry.Both, Native: registry.DefaultNativeOptions()}
	reg := registry.New(registry.DefaultConfig())
	edgeLabels := []string{"client", "server", "connection_type"}
	requests := reg.NewCounter(metricRequests, edgeLabels)
	srv := reg.NewHistogramWith(metricServerSeconds, edgeLabels, []float64{0.1, 0.5, 1}, both)
	cli := reg.NewHistogramWith(metricClientSeconds, edgeLabels, []float64{0.1, 0.5, 1}, both)
	lat := reg.NewHistogramWith(metricLatency, []string{"service", "span_name", "span_kind", "status_code"}, []float64{0.1, 0.5, 1}, both, metricCalls)
	edgeLV := registry.MakeLabelValues([]string{"frontend", "checkout", ""})
	spanLV := registry.MakeLabelValues([]string{"checkout", "GET /", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET"})
	start := time.Now().Truncate(15 * time.Second).Add(-10 * time.Minute)
	var at time.Time
	for i := range 41 {
		at = start.Add(time.Duration(i) * 15 * time.Second)
		for n := range 30 {
			d := 0.001 * float64(1+n%7)
			requests.Add(edgeLV, 1)
			srv.Observe(edgeLV, d, 1, nil, 0)
			cli.Observe(edgeLV, d*1.2, 1, nil, 0)
			lat.Observe(spanLV, d, 1, nil, 0, 1)
		}
		app := st.Appender(context.Background())
		if _, err := reg.Collect(app, at); err != nil {
			t.Fatal(err)
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	p := startProm(t)
	mirror(t, st, p, noSplit)
	emb := NewQuerier(nativeStores{stores{tenant.Default: st}, true, true}, DefaultConfig(), logger, nil)
	back := backendQuerier(t, trapNative{trapSource{t}}, DefaultConfig(), BackendConfig{URL: p.url()})
	ctx := context.Background()
	when := at.Add(-7 * time.Second)

	for _, expr := range []string{
		`sum(rate(traces_service_graph_request_server_seconds[5m]))`,
		`rate(traces_spanmetrics_latency[5m])`,
		`histogram_count(sum(rate(traces_spanmetrics_latency[5m])))`,
		`histogram_sum(sum(rate(traces_service_graph_request_client_seconds[5m])))`,
	} {
		want, err := emb.Instant(ctx, tenant.Default, expr, when)
		if err != nil {
			t.Fatal(err)
		}
		got, err := back.Instant(ctx, tenant.Default, expr, when)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := want.Value.(promql.Vector); len(v) == 0 || !sameValue(want.Value, got.Value) {
			t.Errorf("%s:\nembedded %v\nbackend  %v", expr, want.Value, got.Value)
		}
	}
	want, err := emb.Range(ctx, tenant.Default, `sum(rate(traces_spanmetrics_latency[1m]))`, when.Add(-5*time.Minute), when, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got, err := back.Range(ctx, tenant.Default, `sum(rate(traces_spanmetrics_latency[1m]))`, when.Add(-5*time.Minute), when, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := want.Value.(promql.Matrix); len(m) != 1 || len(m[0].Histograms) != 11 || !sameValue(want.Value, got.Value) {
		t.Errorf("range of native histograms:\nembedded %v\nbackend  %v", want.Value, got.Value)
	}

	// Within the native bucket (schema 3: 9 % wide) of the embedded figure.
	inBucket := func(what string, want, got float64) {
		t.Helper()
		if math.IsNaN(want) || math.Abs(got-want) > 0.09*want {
			t.Errorf("%s: embedded %v ms, backend %v ms", what, want, got)
		}
	}
	o := GraphOptions{Start: when.Add(-5 * time.Minute), End: when}
	wg, err := emb.ServiceGraph(ctx, tenant.Default, o)
	if err != nil {
		t.Fatal(err)
	}
	bg, err := back.ServiceGraph(ctx, tenant.Default, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(wg.Edges) != 1 || len(bg.Edges) != 1 || len(wg.Nodes) != len(bg.Nodes) {
		t.Fatalf("graphs:\nembedded %+v\nbackend  %+v", wg, bg)
	}
	we, be := wg.Edges[0], bg.Edges[0]
	if !sameFloat(we.Rate, be.Rate) || !sameFloat(we.AvgMs, be.AvgMs) || we.P90Under || be.P90Under {
		t.Errorf("edge:\nembedded %+v\nbackend  %+v", we, be)
	}
	inBucket("edge p90", we.P90Ms, be.P90Ms)
	for i := range wg.Nodes {
		if wg.Nodes[i].ID == "checkout" {
			inBucket("node p90", wg.Nodes[i].P90Ms, bg.Nodes[i].P90Ms)
		}
	}
	wr, err := emb.REDTable(ctx, tenant.Default, REDOptions{Start: o.Start, End: when})
	if err != nil {
		t.Fatal(err)
	}
	br, err := back.REDTable(ctx, tenant.Default, REDOptions{Start: o.Start, End: when})
	if err != nil {
		t.Fatal(err)
	}
	if len(wr) != 1 || len(br) != 1 || !sameFloat(wr[0].Rate, br[0].Rate) || !sameFloat(wr[0].ErrorPercent, br[0].ErrorPercent) {
		t.Fatalf("RED:\nembedded %+v\nbackend  %+v", wr, br)
	}
	inBucket("RED p50", wr[0].P50Ms, br[0].P50Ms)
	inBucket("RED p90", wr[0].P90Ms, br[0].P90Ms)
	inBucket("RED p99", wr[0].P99Ms, br[0].P99Ms)
	t.Logf("p90 ms, embedded / backend: edge %.4f / %.4f, RED %.4f / %.4f", we.P90Ms, be.P90Ms, wr[0].P90Ms, br[0].P90Ms)
}
