package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/data"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/engine"
	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/query"
)

// secretService is the one service of tenant team-b; team-a has the shop.
const secretService = "bravo-secret-service"

// shopServices are services of the shop traffic, which only team-a has.
var shopServices = []string{"frontend", "checkout", "cart"}

// twoTenants is one engine (its own collection loop never fires, its
// receiver does not listen) with two datasource instances over it: a for
// tenant team-a, fed with the shop traffic, and b for team-b, whose only
// service is secretService. Both have three collections from t0.
func twoTenants(tb testing.TB, opts Options) (a, b *fixture) {
	tb.Helper()
	cfg := config.Default()
	cfg.DataDir = tb.TempDir()
	cfg.OTLPGRPC, cfg.OTLPHTTP, cfg.HTTP = "", "", ""
	eng, err := engine.New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		tb.Fatal(err)
	}
	if err := eng.Start(); err != nil {
		tb.Fatal(err)
	}
	svc := New(eng, opts)
	tb.Cleanup(func() {
		svc.Close()
		eng.Stop(context.Background())
	})
	newInst := func(uid, tenant string) *fixture {
		inst, err := svc.NewInstance(context.Background(), backend.DataSourceInstanceSettings{
			UID: uid, Name: uid, JSONData: json.RawMessage(`{"tenant":"` + tenant + `"}`),
		})
		if err != nil {
			tb.Fatal(err)
		}
		if err := eng.Admit(tenant); err != nil {
			tb.Fatal(err)
		}
		return &fixture{eng: eng, svc: svc, inst: inst.(*Instance)}
	}
	a, b = newInst("ds-a", "team-a"), newInst("ds-b", "team-b")
	a.feedShop(tb, 3, 5)
	for r := 0; r < 3; r++ {
		now := t0.Add(time.Duration(r) * 15 * time.Second)
		b.consume(tb, secretRequest(now, r))
		b.collect(tb, now)
	}
	return a, b
}

// secretRequest is a client span of secretService calling "bravo-backend"
// and the server span of the call, ending at now.
func secretRequest(now time.Time, round int) *coltracepb.ExportTraceServiceRequest {
	client := otlptest.Span(byte(round+1), "secret-op", tracepb.Span_SPAN_KIND_CLIENT, now, 20*time.Millisecond)
	client.SpanId = []byte{1, 1, 1, 1, 1, 1, 1, 1}
	server := otlptest.Span(byte(round+1), "secret-op", tracepb.Span_SPAN_KIND_SERVER, now, 20*time.Millisecond)
	server.SpanId, server.ParentSpanId = []byte{2, 2, 2, 2, 2, 2, 2, 2}, client.SpanId
	return otlptest.Request(otlptest.Service(secretService, client), otlptest.Service("bravo-backend", server))
}

// frameText is everything a response's frames say: names, labels, string
// values and the executed query, for looking for another tenant's names.
func frameText(frames data.Frames) string {
	var sb strings.Builder
	for _, fr := range frames {
		sb.WriteString(fr.Name + "\n")
		for _, fl := range fr.Fields {
			sb.WriteString(fl.Name + " " + fl.Labels.String() + "\n")
			for i := 0; i < fl.Len(); i++ {
				switch v := fl.At(i).(type) {
				case string:
					sb.WriteString(v + "\n")
				case *string:
					if v != nil {
						sb.WriteString(*v + "\n")
					}
				}
			}
		}
	}
	return sb.String()
}

// callResource runs one CallResource and returns its single response.
func callResource(tb testing.TB, inst *Instance, method, path, rawQuery string, headers map[string][]string, body []byte) (*backend.CallResourceResponse, error) {
	tb.Helper()
	var got []*backend.CallResourceResponse
	u := path
	if rawQuery != "" {
		u += "?" + rawQuery
	}
	// Grafana forwards headers with canonical keys (X-Scope-Orgid), which
	// is how the handler's Header.Get finds them.
	h := http.Header{}
	for k, vs := range headers {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	err := inst.CallResource(context.Background(), &backend.CallResourceRequest{
		Path: path, Method: method, URL: u, Headers: h, Body: body,
	}, backend.CallResourceResponseSenderFunc(func(r *backend.CallResourceResponse) error {
		got = append(got, r)
		return nil
	}))
	if err != nil {
		if len(got) != 0 {
			tb.Fatalf("%s %s: error %v after %d responses", method, u, err, len(got))
		}
		return nil, err
	}
	if len(got) != 1 {
		tb.Fatalf("%s %s: %d responses, want 1", method, u, len(got))
	}
	return got[0], nil
}

// TestTenantIsolationPlugin: two datasources with tenants team-a and
// team-b over one engine. Whatever header the request carries, QueryData
// and the resources of instance b only ever show team-b's series, and a's
// only team-a's.
func TestTenantIsolationPlugin(t *testing.T) {
	a, b := twoTenants(t, Options{})
	from, to := t0.Add(-time.Minute), t0.Add(time.Minute)
	orgA := map[string][]string{"X-Scope-OrgID": {"team-a"}}

	services := func(f *fixture, orgID string) []string {
		t.Helper()
		req := &backend.QueryDataRequest{Queries: []backend.DataQuery{
			dataQuery("A", from, to, map[string]any{"expr": `count by (service) (traces_spanmetrics_calls_total)`, "instant": true}),
		}}
		if orgID != "" {
			req.SetHTTPHeader("X-Scope-OrgID", orgID)
		}
		resp, err := f.inst.QueryData(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		r := resp.Responses["A"]
		if r.Error != nil {
			t.Fatal(r.Error)
		}
		var out []string
		for _, fr := range r.Frames {
			for _, fl := range fr.Fields {
				if s := fl.Labels["service"]; s != "" {
					out = append(out, s)
				}
			}
		}
		sort.Strings(out)
		return out
	}
	// Positive controls: each instance sees its own data.
	if got := services(b, ""); strings.Join(got, ",") != "bravo-backend,"+secretService {
		t.Fatalf("team-b's services: %v", got)
	}
	if got := services(a, ""); len(got) < 5 || strings.Contains(strings.Join(got, ","), secretService) {
		t.Fatalf("team-a's services: %v", got)
	}
	// A header naming the other tenant changes nothing.
	if got := services(b, "team-a"); strings.Join(got, ",") != "bravo-backend,"+secretService {
		t.Errorf("instance b with X-Scope-OrgID team-a: %v", got)
	}
	if got := services(a, "team-b"); strings.Contains(strings.Join(got, ","), secretService) {
		t.Errorf("instance a with X-Scope-OrgID team-b sees %v", got)
	}

	// Every query type of instance b, with team-a's header.
	req := &backend.QueryDataRequest{Queries: []backend.DataQuery{
		dataQuery("range", from, to, map[string]any{"expr": `sum by (service, span_name) (rate(traces_spanmetrics_calls_total[1m]))`}),
		dataQuery("table", from, to, map[string]any{"expr": `traces_spanmetrics_calls_total`, "instant": true, "format": "table"}),
		dataQuery("exemplars", from, to, map[string]any{"expr": `traces_spanmetrics_latency_bucket`, "exemplar": true}),
		dataQuery("graph", from, to, map[string]any{"queryType": "serviceGraph"}),
		dataQuery("red", from, to, map[string]any{"queryType": "redTable", "groupBy": "span_name"}),
	}}
	req.SetHTTPHeader("X-Scope-OrgID", "team-a")
	resp, err := b.inst.QueryData(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	for ref, r := range resp.Responses {
		if r.Error != nil {
			t.Errorf("%s: %v", ref, r.Error)
			continue
		}
		text := frameText(r.Frames)
		for _, s := range shopServices {
			if strings.Contains(text, `"`+s+`"`) || strings.Contains(text, s+"\n") {
				t.Errorf("instance b, query %s shows team-a's service %s:\n%s", ref, s, text)
			}
		}
		if ref != "exemplars" && !strings.Contains(text, "bravo-") {
			t.Errorf("instance b, query %s does not show its own service:\n%s", ref, text)
		}
	}

	// The resources of instance b, with team-a's header.
	for _, tc := range []struct{ path, query string }{
		{"api/v1/labels", "match[]=" + url.QueryEscape(`{service="frontend"}`)},
		{"api/v1/labels", ""},
		{"api/v1/label/service/values", ""},
		{"api/v1/label/server/values", ""},
		{"api/v1/query", "query=" + url.QueryEscape(`count by (service) (traces_spanmetrics_calls_total)`) + "&time=" + t0.Add(time.Minute).Format(time.RFC3339)},
		{"api/v1/query_range", "query=" + url.QueryEscape(`traces_spanmetrics_calls_total`) + "&start=" + t0.Add(-time.Minute).Format(time.RFC3339) + "&end=" + t0.Add(time.Minute).Format(time.RFC3339) + "&step=15"},
		{"api/v1/series", "match[]=" + url.QueryEscape(`{__name__=~".+"}`)},
		{"api/v1/query_exemplars", "query=" + url.QueryEscape(`traces_spanmetrics_latency_bucket`)},
		{"api/v1/service-graph", "start=" + t0.Add(-time.Minute).Format(time.RFC3339) + "&end=" + t0.Add(time.Minute).Format(time.RFC3339)},
		{"api/v1/red", "start=" + t0.Add(-time.Minute).Format(time.RFC3339) + "&end=" + t0.Add(time.Minute).Format(time.RFC3339)},
	} {
		for _, side := range []struct {
			f            *fixture
			own, foreign string
		}{{b, secretService, "frontend"}, {a, "frontend", secretService}} {
			r, err := callResource(t, side.f.inst, http.MethodGet, tc.path, tc.query, orgA, nil)
			if err != nil {
				t.Fatalf("%s: %v", tc.path, err)
			}
			body := string(r.Body)
			if r.Status != http.StatusOK || !json.Valid(r.Body) {
				t.Errorf("%s %s?%s: %d %s", side.f.inst.settings.Tenant, tc.path, tc.query, r.Status, body)
				continue
			}
			if strings.Contains(body, side.foreign) {
				t.Errorf("%s %s?%s shows %s: %s", side.f.inst.settings.Tenant, tc.path, tc.query, side.foreign, body)
			}
		}
	}
	// Positive control for the resources: b's own service is there.
	if r, _ := callResource(t, b.inst, http.MethodGet, "api/v1/label/service/values", "", orgA, nil); !strings.Contains(string(r.Body), secretService) {
		t.Errorf("instance b's own label values: %s", r.Body)
	}

	// OTLP through instance b's resource, with team-a's header, lands in
	// team-b; no other tenant appears.
	raw := otlptest.Marshal(t, secretRequest(time.Now(), 9))
	r, err := callResource(t, b.inst, http.MethodPost, "otlp/v1/traces", "",
		map[string][]string{"X-Scope-OrgID": {"team-a"}, "Content-Type": {"application/x-protobuf"}}, raw)
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("otlp through instance b: %v %+v", err, r)
	}
	if got := a.eng.Tenants(); strings.Join(got, ",") != "team-a,team-b" {
		t.Errorf("tenants after requests naming others: %v", got)
	}
	if n := a.eng.Receiver().Received(); n != 2 {
		t.Errorf("receiver took %d spans, want 2", n)
	}
}

// FuzzResourceParams sends random resource paths, query strings, methods,
// headers and bodies through instance b's CallResource (the
// Prometheus-compatible API and the OTLP intake). It must never panic; an
// answer under api/v1/ is valid JSON in Prometheus' envelope, and never a
// 5xx other than a query timeout; nothing ever shows team-a's data or
// creates another tenant. CallResource may return an error only for a URL
// the SDK cannot turn into an HTTP request (Grafana then answers itself).
//
// Seeds: testdata/fuzz/FuzzResourceParams (every endpoint with valid and
// invalid parameters, encoded and dot segments, OTLP bodies).
func FuzzResourceParams(f *testing.F) {
	f.Add("api/v1/query", "query=up&time=1735732800", uint8(0), "", []byte(nil))
	f.Add("api/v1/label/service/values", "match[]=%7Bservice%3D%22frontend%22%7D", uint8(0), "team-a", []byte(nil))
	f.Add("otlp/v1/traces", "", uint8(1), "team-a", []byte("{}"))
	qc := query.DefaultConfig()
	qc.Timeout, qc.MaxSamples = 2*time.Second, 200_000
	_, b := twoTenants(f, Options{Query: qc})
	methods := []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead, http.MethodOptions}
	contentTypes := []string{"", "application/x-www-form-urlencoded", "application/json", "application/x-protobuf", "text/plain"}
	f.Fuzz(func(t *testing.T, path, rawQuery string, method uint8, orgID string, body []byte) {
		headers := map[string][]string{"Content-Type": {contentTypes[int(method>>4)%len(contentTypes)]}}
		if orgID != "" {
			headers["X-Scope-OrgID"] = []string{orgID}
		}
		m := methods[int(method&0x0f)%len(methods)]
		r, err := callResource(t, b.inst, m, path, rawQuery, headers, body)
		if err != nil {
			return // the SDK refused the URL; Grafana answers
		}
		if r.Status < 100 || r.Status > 599 {
			t.Fatalf("status %d", r.Status)
		}
		// A redirect or an error may quote the request back, names and
		// all, without any data of team-a's; any other answer naming
		// team-a's services leaks.
		quotes := r.Status/100 == 3 || bytes.Contains(r.Body, []byte(`"status":"error"`))
		request := path + "?" + rawQuery + orgID + string(body)
		for _, name := range []string{"frontend", "checkout"} {
			if bytes.Contains(r.Body, []byte(name)) && !(quotes && strings.Contains(request, name)) {
				t.Fatalf("%s %s?%s shows team-a's data: %s", m, path, rawQuery, r.Body)
			}
		}
		if tenants := b.eng.Tenants(); len(tenants) != 2 {
			t.Fatalf("%s %s?%s (X-Scope-OrgID %q) made tenants %v", m, path, rawQuery, orgID, tenants)
		}
		clean := "/" + strings.TrimPrefix(path, "/")
		if !strings.HasPrefix(clean, "/api/v1/") || r.Status/100 == 3 || m == http.MethodHead {
			return
		}
		if ct := strings.Join(r.Headers["Content-Type"], ","); ct != "application/json" {
			t.Fatalf("%s %s?%s: %d with Content-Type %q: %q", m, path, rawQuery, r.Status, ct, r.Body)
		}
		var pr struct {
			Status    string `json:"status"`
			ErrorType string `json:"errorType"`
		}
		if err := json.Unmarshal(r.Body, &pr); err != nil {
			t.Fatalf("%s %s?%s: %d, not JSON (%v): %q", m, path, rawQuery, r.Status, err, r.Body)
		}
		switch {
		case pr.Status == "success" && r.Status == http.StatusOK:
		case pr.Status == "error" && pr.ErrorType != "" && r.Status >= 400 && r.Status < 500:
		case pr.Status == "error" && (pr.ErrorType == query.ErrorTimeout || pr.ErrorType == query.ErrorUnavailable) && r.Status == http.StatusServiceUnavailable:
		default:
			t.Fatalf("%s %s?%s: %d %s", m, path, rawQuery, r.Status, r.Body)
		}
	})
}

// TestOTLPResourceEmptyBody: Grafana forwards a POST without a body to
// CallResource with an empty Body, which the SDK's adapter turns into an
// http.Request whose Body is nil. The OTLP intake must answer it (an empty
// export is valid: 200 with an empty response, or 400) rather than
// dereference the nil body.
func TestOTLPResourceEmptyBody(t *testing.T) {
	f := newFixture(t, `{"tenant":"team-a"}`)
	for _, ct := range []string{"application/x-protobuf", "application/json"} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("empty POST (%s) to otlp/v1/traces panicked: %v", ct, p)
				}
			}()
			r, err := callResource(t, f.inst, http.MethodPost, "otlp/v1/traces", "", map[string][]string{"Content-Type": {ct}}, nil)
			if err != nil || (r.Status != http.StatusOK && r.Status != http.StatusBadRequest) {
				t.Errorf("empty POST (%s): %v %+v", ct, err, r)
			}
		}()
	}
}
