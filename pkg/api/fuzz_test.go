package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/query"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// fuzzEndpoints are the API paths FuzzPromQLQuery drives; every one takes
// the same parameters and ignores those it does not use.
var fuzzEndpoints = []string{
	"/api/v1/query",
	"/api/v1/query_range",
	"/api/v1/labels",
	"/api/v1/label/{name}/values",
	"/api/v1/series",
	"/api/v1/query_exemplars",
	"/api/v1/service-graph",
	"/api/v1/red",
}

// fuzzAPI is the API over the fixture's store, with a PromQL engine
// bounded so that no input can run for long or hold much memory.
func fuzzAPI(tb testing.TB) *API {
	tb.Helper()
	cfg := query.DefaultConfig()
	cfg.Timeout, cfg.MaxSamples = 2*time.Second, 200_000
	return New(newQuerier(tb, cfg), func(*http.Request) (string, error) { return tenant.Default, nil })
}

// FuzzPromQLQuery sends random query, time, start, end, step and match[]
// parameters (and a label name) to every endpoint of the API, by GET or by
// a POSTed form. Whatever the input, the handler must not panic and must
// answer valid JSON in Prometheus' envelope: "success" with 200, or "error"
// with an errorType whose status it carries; bad input is a 4xx, never a
// 500 (the only 5xx allowed is 503 for a query that hit the engine's
// timeout or found no free slot).
//
// Seeds: testdata/fuzz/FuzzPromQLQuery (valid queries of every endpoint,
// bad PromQL, odd and overflowing times and steps, NaN, RFC 3339, subqueries,
// @ and offset modifiers, UTF-8 label names and selectors).
func FuzzPromQLQuery(f *testing.F) {
	f.Add(uint8(0), false, `sum by (service) (rate(traces_spanmetrics_calls_total[5m]))`, "1700000400", "", "", "", "", "")
	f.Add(uint8(1), true, `histogram_quantile(0.9, sum by (le) (rate(traces_spanmetrics_latency_bucket[1m])))`, "", "1700000100", "1700000400", "15s", "", "")
	f.Add(uint8(3), false, "", "", "", "", "", "{service=~\"check.*\"}\ntraces_service_graph_request_total", "server")
	api := fuzzAPI(f)
	f.Fuzz(func(t *testing.T, endpoint uint8, post bool, query, ts, start, end, step, match, name string) {
		path := fuzzEndpoints[int(endpoint)%len(fuzzEndpoints)]
		if strings.Contains(path, "{name}") {
			// "", "." and ".." would be path segments that ServeMux
			// cleans away with a redirect before the API sees them.
			esc := url.PathEscape(name)
			if esc == "" {
				esc = "%20"
			}
			if esc == "." || esc == ".." {
				esc = strings.ReplaceAll(esc, ".", "%2E")
			}
			path = strings.Replace(path, "{name}", esc, 1)
		}
		form := url.Values{}
		for k, v := range map[string]string{"query": query, "time": ts, "start": start, "end": end, "step": step} {
			if v != "" {
				form.Set(k, v)
			}
		}
		if match != "" {
			form["match[]"] = strings.Split(match, "\n")
		}
		var req *http.Request
		if post {
			req = httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		} else {
			req = httptest.NewRequest(http.MethodGet, path+"?"+form.Encode(), nil)
		}
		rec := httptest.NewRecorder()
		t0 := time.Now()
		api.ServeHTTP(rec, req)
		if d := time.Since(t0); d > 10*time.Second {
			t.Fatalf("%s took %s: %s", path, d, form.Encode())
		}
		checkPromResponse(t, rec)
	})
}

// checkPromResponse holds one answer to Prometheus' envelope.
func checkPromResponse(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	body := rec.Body.Bytes()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%d with Content-Type %q: %s", rec.Code, ct, body)
	}
	var r struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("%d: not valid JSON (%v): %q", rec.Code, err, body)
	}
	switch r.Status {
	case "success":
		if rec.Code != http.StatusOK || len(r.Data) == 0 {
			t.Fatalf("success with status %d, data %q", rec.Code, r.Data)
		}
	case "error":
		if r.ErrorType == "" || r.Error == "" {
			t.Fatalf("%d: error without errorType or message: %s", rec.Code, body)
		}
		if rec.Code == http.StatusMethodNotAllowed {
			return
		}
		if want := statusFor(r.ErrorType); rec.Code != want {
			t.Fatalf("errorType %s answered with %d, want %d: %s", r.ErrorType, rec.Code, want, body)
		}
		if rec.Code >= 500 && r.ErrorType != query.ErrorTimeout && r.ErrorType != query.ErrorUnavailable {
			t.Fatalf("input answered with a server error %d: %s", rec.Code, body)
		}
	default:
		t.Fatalf("%d: status %q is neither success nor error: %s", rec.Code, r.Status, body)
	}
}
