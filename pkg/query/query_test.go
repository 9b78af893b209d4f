package query

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/spangraph/spangraph/pkg/store"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// stores is a Source over real TSDBs, one per tenant.
type stores map[string]*store.Store

func (s stores) Queryable(tenant string) (storage.Queryable, storage.ExemplarQueryable) {
	st := s[tenant]
	return st, st
}

var end = time.Unix(1_700_000_400, 0)

// series is a counter growing at rate per second, sampled every 15 s over
// the 5 minutes before end, as the registry would write it.
type series struct {
	labels []string
	rate   float64
}

func fill(t *testing.T, st *store.Store, all []series) {
	t.Helper()
	app := st.Appender(context.Background())
	for _, s := range all {
		l := labels.FromStrings(s.labels...)
		for ts := end.Add(-5 * time.Minute); !ts.After(end); ts = ts.Add(15 * time.Second) {
			v := s.rate * ts.Sub(end.Add(-5*time.Minute)).Seconds()
			if _, err := app.Append(0, l, ts.UnixMilli(), v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
}

// edge returns the series of one edge: rate requests/s, failed/s, and
// latencies all of d seconds on the side given.
func edge(client, server, ctype, side string, rate, failed, d float64) []series {
	base := []string{"client", client, "server", server}
	if ctype != "" {
		base = append(base, "connection_type", ctype)
	}
	with := func(name string, extra ...string) []string {
		return append(append([]string{"__name__", name}, base...), extra...)
	}
	h := "traces_service_graph_request_" + side + "_seconds"
	out := []series{
		{with("traces_service_graph_request_total"), rate},
		{with("traces_service_graph_request_failed_total"), failed},
		{with(h + "_sum"), rate * d},
		{with(h + "_count"), rate},
	}
	for _, le := range []string{"0.1", "0.2", "0.4", "0.8", "+Inf"} {
		r := 0.0
		if b, _ := parseLe(le); d <= b {
			r = rate
		}
		out = append(out, series{with(h+"_bucket", "le", le), r})
	}
	return out
}

func parseLe(le string) (float64, error) {
	if le == "+Inf" {
		return math.Inf(1), nil
	}
	var f float64
	err := json.Unmarshal([]byte(le), &f)
	return f, err
}

func calls(service, span, status string, rate float64) series {
	return series{[]string{"__name__", "traces_spanmetrics_calls_total", "service", service, "span_name", span,
		"span_kind", "SPAN_KIND_SERVER", "status_code", status}, rate}
}

func latency(service, span string, le string, rate float64) series {
	return series{[]string{"__name__", "traces_spanmetrics_latency_bucket", "service", service, "span_name", span,
		"span_kind", "SPAN_KIND_SERVER", "status_code", "STATUS_CODE_UNSET", "le", le}, rate}
}

// fillFixture writes the fixture's series into st: four edges and the
// RED table's series, with one exemplar.
func fillFixture(t *testing.T, st *store.Store) {
	t.Helper()
	var all []series
	all = append(all, edge("user", "frontend", "virtual_node", "server", 10, 0, 0.15)...)
	all = append(all, edge("frontend", "checkout", "", "server", 8, 2, 0.3)...)
	all = append(all, edge("checkout", "postgres", "database", "client", 4, 0, 0.05)...)
	all = append(all, edge("checkout", "stripe", "virtual_node", "client", 1, 0, 0.6)...)
	all = append(all,
		calls("frontend", "GET /", "STATUS_CODE_UNSET", 10),
		calls("checkout", "PlaceOrder", "STATUS_CODE_UNSET", 6),
		calls("checkout", "PlaceOrder", "STATUS_CODE_ERROR", 2),
		calls("checkout", "Refund", "STATUS_CODE_UNSET", 1),
		latency("frontend", "GET /", "0.1", 5), latency("frontend", "GET /", "0.2", 10), latency("frontend", "GET /", "+Inf", 10),
	)
	fill(t, st, all)
	app := st.Appender(context.Background())
	_, err := app.AppendExemplar(0, labels.FromStrings("__name__", "traces_spanmetrics_latency_bucket", "service", "frontend", "span_name", "GET /",
		"span_kind", "SPAN_KIND_SERVER", "status_code", "STATUS_CODE_UNSET", "le", "0.2"),
		exemplar.Exemplar{Labels: labels.FromStrings("trace_id", "0102"), Value: 0.15, Ts: end.UnixMilli(), HasTs: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
}

func newQuerier(t *testing.T) *Querier {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.TempDir(), tenant.Default, store.Options{Retention: time.Hour, MaxExemplars: 100}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fillFixture(t, st)
	return NewQuerier(stores{tenant.Default: st}, DefaultConfig(), logger, nil)
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6*math.Max(1, math.Abs(b)) }

func TestServiceGraph(t *testing.T) {
	q := newQuerier(t)
	g, err := q.ServiceGraph(context.Background(), tenant.Default, GraphOptions{Start: end.Add(-5 * time.Minute), End: end})
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]Node{}
	for _, n := range g.Nodes {
		nodes[n.ID] = n
	}
	wantKinds := map[string]string{"user": "virtual", "frontend": "service", "checkout": "service", "postgres": "database", "stripe": "virtual"}
	if len(nodes) != len(wantKinds) {
		t.Fatalf("nodes %v, want %v", g.Nodes, wantKinds)
	}
	for id, kind := range wantKinds {
		if nodes[id].Kind != kind {
			t.Errorf("node %s kind %q, want %q", id, nodes[id].Kind, kind)
		}
	}
	co := nodes["checkout"]
	if !near(co.Rate, 8) || !near(co.ErrorRatio, 0.25) || !near(co.AvgMs, 300) || !near(co.ArcFailed, 0.25) || !near(co.ArcSuccess, 0.75) {
		t.Errorf("checkout: %+v, want rate 8, errors 25%%, avg 300 ms, arcs .75/.25", co)
	}
	// All of checkout's requests took 0.3 s: p90 interpolates inside (0.2, 0.4].
	if co.P90Ms <= 200 || co.P90Ms > 400 {
		t.Errorf("checkout p90 %v ms, want within (200, 400]", co.P90Ms)
	}
	// Drawn as Grafana's Tempo service map draws a client-only node: a
	// full success arc and no rate rather than a zero.
	if u := nodes["user"]; !math.IsNaN(u.Rate) || !math.IsNaN(u.AvgMs) || u.ArcSuccess != 1 || u.ArcFailed != 0 || u.Instrumented {
		t.Errorf("user serves nothing: %+v", u)
	}
	if !co.Instrumented || nodes["postgres"].Instrumented || nodes["stripe"].Instrumented {
		t.Errorf("instrumented: checkout %v, postgres %v, stripe %v", co.Instrumented, nodes["postgres"].Instrumented, nodes["stripe"].Instrumented)
	}
	edges := map[string]Edge{}
	for _, e := range g.Edges {
		edges[e.ID] = e
	}
	db := edges["checkout->postgres"]
	// The database has no server side; its latency is the client's view.
	if db.ConnectionType != "database" || !near(db.Rate, 4) || !near(db.AvgMs, 50) {
		t.Errorf("database edge %+v", db)
	}

	// A focus on postgres at depth 1 keeps checkout and nothing beyond.
	g, err = q.ServiceGraph(context.Background(), tenant.Default, GraphOptions{Start: end.Add(-5 * time.Minute), End: end, Service: "postgres", Depth: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Edges) != 1 || g.Edges[0].ID != "checkout->postgres" || len(g.Nodes) != 2 {
		t.Errorf("neighbourhood of postgres: %+v", g)
	}
	// Connection-type filter and node cap.
	g, _ = q.ServiceGraph(context.Background(), tenant.Default, GraphOptions{Start: end.Add(-5 * time.Minute), End: end, ConnectionTypes: []string{""}})
	if len(g.Edges) != 1 || g.Edges[0].ID != "frontend->checkout" {
		t.Errorf("rpc edges only: %+v", g.Edges)
	}
	g, _ = q.ServiceGraph(context.Background(), tenant.Default, GraphOptions{Start: end.Add(-5 * time.Minute), End: end, MaxNodes: 2})
	if !g.Truncated || len(g.Nodes) != 2 || g.Nodes[0].ID != "checkout" || g.Nodes[1].ID != "frontend" {
		t.Errorf("cap to the 2 busiest: %+v", g.Nodes)
	}
	if _, err := q.ServiceGraph(context.Background(), tenant.Default, GraphOptions{End: end, Matchers: `foo=`}); err == nil {
		t.Error("invalid matchers accepted")
	}
}

func TestREDTable(t *testing.T) {
	q := newQuerier(t)
	rows, err := q.REDTable(context.Background(), tenant.Default, REDOptions{Start: end.Add(-5 * time.Minute), End: end})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Service != "frontend" || !near(rows[0].Rate, 10) || rows[1].Service != "checkout" || !near(rows[1].Rate, 9) {
		t.Fatalf("rows %+v", rows)
	}
	if !near(rows[1].ErrorPercent, 100*2.0/9) {
		t.Errorf("checkout errors %v%%, want 22.2%%", rows[1].ErrorPercent)
	}
	if !near(rows[0].P50Ms, 100) || math.IsNaN(rows[0].P99Ms) || !math.IsNaN(rows[1].P90Ms) {
		t.Errorf("latencies %+v", rows)
	}
	rows, _ = q.REDTable(context.Background(), tenant.Default, REDOptions{Start: end.Add(-5 * time.Minute), End: end, GroupBy: "span_name", Service: "checkout", TopN: 1})
	if len(rows) != 1 || rows[0].SpanName != "PlaceOrder" || !near(rows[0].Rate, 8) {
		t.Errorf("top span of checkout: %+v", rows)
	}
}

// statusErr is a store error that carries an HTTP status, as the engine's
// tenant errors do.
type statusErr int

func (e statusErr) Error() string   { return "tenant store: status " + strconv.Itoa(int(e)) }
func (e statusErr) HTTPStatus() int { return int(e) }

type failingQueryable struct{ err error }

func (f failingQueryable) Querier(int64, int64) (storage.Querier, error) { return nil, f.err }

type failingSource struct{ err error }

func (f failingSource) Queryable(string) (storage.Queryable, storage.ExemplarQueryable) {
	return failingQueryable(f), nil
}

// TestStoreRefusalsKeepTheirMeaning: a tenant that cannot be opened now
// (max_tenants) is "retry later" to a reader as to a sender, and a
// quarantined one is the server's problem, not the query's.
func TestStoreRefusalsKeepTheirMeaning(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   string
	}{
		{http.StatusTooManyRequests, ErrorUnavailable},
		{http.StatusServiceUnavailable, ErrorUnavailable},
		{http.StatusInternalServerError, ErrorInternal},
	} {
		q := NewQuerier(failingSource{statusErr(tc.status)}, DefaultConfig(), slog.New(slog.DiscardHandler), nil)
		_, err := q.Instant(context.Background(), "t", "up", time.Now())
		_, metaErr := q.LabelNames(context.Background(), "t", nil, 0, time.Now().UnixMilli())
		for what, err := range map[string]error{"PromQL": err, "label names": metaErr} {
			var qe *Error
			if !errors.As(err, &qe) || qe.Type != tc.want {
				t.Errorf("%s, status %d: error %v, want errorType %s", what, tc.status, err, tc.want)
			}
		}
	}
}
