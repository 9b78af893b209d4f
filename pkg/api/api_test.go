package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestAPI(t *testing.T) {
	api := newAPI(t)
	ts := "1700000400"
	tests := []struct {
		path    string
		params  url.Values
		code    int
		contain string
	}{
		{"/api/v1/query", url.Values{"query": {`sum(rate(traces_spanmetrics_calls_total[5m]))`}, "time": {ts}}, 200, `"resultType":"vector"`},
		{"/api/v1/query", url.Values{"query": {`1+1`}, "time": {ts}}, 200, `"result":[1700000400,"2"]`},
		{"/api/v1/query", url.Values{"query": {`sum(rate(traces_spanmetrics_calls_total[5m])`}}, 400, `"errorType":"bad_data"`},
		{"/api/v1/query_range", url.Values{"query": {`sum(traces_spanmetrics_calls_total)`}, "start": {"1700000100"}, "end": {ts}, "step": {"60"}}, 200, `"resultType":"matrix"`},
		{"/api/v1/query_range", url.Values{"query": {`up`}, "start": {"0"}, "end": {ts}, "step": {"1"}}, 400, "11,000 points"},
		{"/api/v1/query_range", url.Values{"query": {`up`}, "start": {"x"}, "end": {ts}, "step": {"1"}}, 400, `invalid parameter \"start\"`},
		{"/api/v1/labels", nil, 200, `"span_kind"`},
		{"/api/v1/label/service/values", nil, 200, `["checkout","frontend"]`},
		{"/api/v1/label/server/values", url.Values{"match[]": {`traces_service_graph_request_total{client="checkout"}`}}, 200, `["postgres","stripe"]`},
		{"/api/v1/series", url.Values{"match[]": {`traces_spanmetrics_calls_total{service="checkout"}`}}, 200, `"span_name":"Refund"`},
		{"/api/v1/series", nil, 400, "no match[] parameter"},
		{"/api/v1/query_exemplars", url.Values{"query": {`traces_spanmetrics_latency_bucket`}, "start": {"1700000000"}, "end": {ts}}, 200, `"trace_id":"0102"`},
		{"/api/v1/service-graph", url.Values{"start": {"1700000100"}, "end": {ts}}, 200, `"id":"checkout->postgres"`},
		{"/api/v1/service-graph", url.Values{"depth": {"-1"}}, 400, "depth"},
		{"/api/v1/service-graph", url.Values{"range": {"5m"}, "end": {ts}}, 200, `"window":{"start":"2023-11-14T22:15:00Z","end":"2023-11-14T22:20:00Z"}`},
		{"/api/v1/service-graph", url.Values{"start": {"now-5m"}, "end": {"now"}}, 200, `"data":{"nodes":[],"edges":[]},"window":`},
		{"/api/v1/service-graph", url.Values{"start": {"now-5m"}, "range": {"5m"}}, 400, "not both"},
		{"/api/v1/red", url.Values{"start": {"1700000100"}, "end": {ts}, "group_by": {"span_name"}}, 200, `"spanName":"PlaceOrder"`},
		{"/api/v1/red", url.Values{"range": {"300"}, "end": {ts}}, 200, `"service":"checkout"`},
		{"/api/v1/red", url.Values{"start": {"now/d"}}, 400, `invalid parameter \"start\"`},
		{"/api/v1/nope", nil, 404, "unknown API endpoint"},
	}
	for _, tc := range tests {
		code, body := get(t, api, tc.path, tc.params)
		if code != tc.code || !strings.Contains(body, tc.contain) {
			t.Errorf("%s %v: %d %s, want %d containing %s", tc.path, tc.params, code, body, tc.code, tc.contain)
		}
	}
}

// The HTTP API answers refusals in Prometheus' error format and status.
func TestAPIRefusals(t *testing.T) {
	api := newAPI(t)
	tests := []struct {
		path    string
		query   string
		code    int
		errType string
		message string
	}{
		{"/api/v1/query", `max_over_time(vector(1)[365d:1ms])`, 400, "bad_data",
			"subquery [365d:1ms] would take 31536000000 steps, over query.max_subquery_steps (1000000)"},
		{"/api/v1/query", strings.Repeat("(", 20_000) + "1" + strings.Repeat(")", 20_000), 400, "bad_data",
			"the query nests 20000 levels deep, over query.max_depth (200)"},
		{"/api/v1/query", strings.Repeat("abs(", 100_000) + "vector(1)" + strings.Repeat(")", 100_000), 400, "bad_data",
			"the query is 500009 bytes long, over query.max_query_length (65536)"},
		{"/api/v1/query_range", `max_over_time(vector(1)[1d:1ms])`, 400, "bad_data",
			"subquery [1d:1ms] would take 86460000 steps, over query.max_subquery_steps (1000000)"},
		{"/api/v1/query_exemplars", strings.Repeat("(", 1000) + "up" + strings.Repeat(")", 1000), 400, "bad_data",
			"the query nests 1000 levels deep, over query.max_depth (200)"},
	}
	for _, tc := range tests {
		form := url.Values{"query": {tc.query}, "time": {"1700000400"}, "start": {"1700000340"}, "end": {"1700000400"}, "step": {"60"}}
		req := httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		var r response
		if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v: %s", tc.path, err, rec.Body)
		}
		if rec.Code != tc.code || r.Status != "error" || r.ErrorType != tc.errType || r.Error != tc.message {
			t.Errorf("%s %.40s…: %d %+v, want %d %s %q", tc.path, tc.query, rec.Code, r, tc.code, tc.errType, tc.message)
		}
	}
}
