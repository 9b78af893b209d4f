package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/spangraph/spangraph/pkg/query"
	"github.com/spangraph/spangraph/pkg/store"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// The fixture: a real TSDB holding a small shop's service graph and span
// metrics over the 5 minutes before end, with one exemplar. pkg/query's
// tests build the same data for the models; this copy serves the HTTP
// layer.

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
	for _, le := range []float64{0.1, 0.2, 0.4, 0.8, math.Inf(1)} {
		r := 0.0
		if d <= le {
			r = rate
		}
		out = append(out, series{with(h+"_bucket", "le", formatLe(le)), r})
	}
	return out
}

func formatLe(le float64) string {
	if math.IsInf(le, 1) {
		return "+Inf"
	}
	b, _ := json.Marshal(le)
	return string(b)
}

func calls(service, span, status string, rate float64) series {
	return series{[]string{"__name__", "traces_spanmetrics_calls_total", "service", service, "span_name", span,
		"span_kind", "SPAN_KIND_SERVER", "status_code", status}, rate}
}

func latency(service, span string, le string, rate float64) series {
	return series{[]string{"__name__", "traces_spanmetrics_latency_bucket", "service", service, "span_name", span,
		"span_kind", "SPAN_KIND_SERVER", "status_code", "STATUS_CODE_UNSET", "le", le}, rate}
}

// newQuerier returns a querier with cfg over the fixture's store.
func newQuerier(tb testing.TB, cfg query.Config) *query.Querier {
	tb.Helper()
	logger := slog.New(slog.DiscardHandler)
	st, err := store.Open(tb.TempDir(), tenant.Default, store.Options{Retention: time.Hour, MaxExemplars: 100}, logger, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
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
	app := st.Appender(context.Background())
	for _, s := range all {
		l := labels.FromStrings(s.labels...)
		for ts := end.Add(-5 * time.Minute); !ts.After(end); ts = ts.Add(15 * time.Second) {
			if _, err := app.Append(0, l, ts.UnixMilli(), s.rate*ts.Sub(end.Add(-5*time.Minute)).Seconds()); err != nil {
				tb.Fatal(err)
			}
		}
	}
	_, err = app.AppendExemplar(0, labels.FromStrings("__name__", "traces_spanmetrics_latency_bucket", "service", "frontend", "span_name", "GET /",
		"span_kind", "SPAN_KIND_SERVER", "status_code", "STATUS_CODE_UNSET", "le", "0.2"),
		exemplar.Exemplar{Labels: labels.FromStrings("trace_id", "0102"), Value: 0.15, Ts: end.UnixMilli(), HasTs: true})
	if err != nil {
		tb.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		tb.Fatal(err)
	}
	return query.NewQuerier(stores{tenant.Default: st}, cfg, logger, nil)
}

// newAPI is the API over the fixture, every request reading the default
// tenant.
func newAPI(tb testing.TB) *API {
	return New(newQuerier(tb, query.DefaultConfig()), func(*http.Request) (string, error) { return tenant.Default, nil })
}

func get(t *testing.T, h http.Handler, path string, params url.Values) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path+"?"+params.Encode(), nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if !json.Valid(rec.Body.Bytes()) {
		t.Fatalf("%s: invalid JSON: %s", path, rec.Body.String())
	}
	return rec.Code, rec.Body.String()
}
