package plugin

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/data"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/spangraph/spangraph/pkg/config"
)

func TestLoadConfigInsideGrafana(t *testing.T) {
	c, err := LoadConfig([]string{"GF_PATHS_DATA=/var/lib/grafana", "GF_PLUGIN_OTLP_GRPC=:14317"})
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/var/lib/grafana/spangraph" || c.HTTP != "" || c.OTLPGRPC != ":14317" || c.OTLPHTTP != config.Default().OTLPHTTP {
		t.Fatalf("got %+v", c)
	}
	c, err = LoadConfig([]string{"GF_PLUGIN_DATA_DIR=/d", "GF_PATHS_DATA=/var/lib/grafana"})
	if err != nil || c.DataDir != "/d" {
		t.Fatalf("GF_PLUGIN_DATA_DIR must win over GF_PATHS_DATA: %q %v", c.DataDir, err)
	}
	if c, _ := LoadConfig(nil); c.DataDir != "./data" {
		t.Fatalf("outside Grafana: %q", c.DataDir)
	}
	if _, err := LoadConfig([]string{"GF_PLUGIN_COLLECTION_INTERVAL=100ms"}); err == nil || !strings.HasPrefix(err.Error(), "collection_interval:") {
		t.Fatalf("got %v", err)
	}
}

func TestParseSettings(t *testing.T) {
	st, err := ParseSettings(nil)
	if err != nil || st.Tenant != "single-tenant" || st.DefaultQueryType != QueryTypePromQL {
		t.Fatalf("defaults: %+v %v", st, err)
	}
	for _, bad := range []string{`{"tenant":"../etc"}`, `{"defaultQueryType":"logs"}`, `{`} {
		if _, err := ParseSettings([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestInterpolate(t *testing.T) {
	step, scrape := 30*time.Second, 15*time.Second
	got := interpolate(`rate(x[$__rate_interval]) / rate(x[${__interval}]) $__interval_ms $__rate_interval_ms $__range $__range_s $__range_ms`,
		step, time.Hour, scrape)
	want := `rate(x[1m]) / rate(x[30s]) 30000 60000 3600s 3600 3600000`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// A long step: $__rate_interval is one step plus one scrape.
	if got := interpolate(`[$__rate_interval]`, 5*time.Minute, 24*time.Hour, scrape); got != `[5m15s]` {
		t.Fatalf("got %s", got)
	}
}

func TestStepAndAlignment(t *testing.T) {
	from := time.Date(2025, 1, 1, 0, 0, 7, 0, time.UTC)
	q := backend.DataQuery{TimeRange: backend.TimeRange{From: from, To: from.Add(6 * time.Hour)}, Interval: 15 * time.Second, MaxDataPoints: 720}
	p, err := newPromParams(q, queryModel{Expr: "x"}, 0, 15*time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	// 6h / 720 points = 30s, above the 15s interval.
	if p.step != 30*time.Second || !p.start.Equal(from.Add(-7*time.Second)) || !p.withRange || p.withInstant {
		t.Fatalf("got %+v", p)
	}
	short := backend.DataQuery{TimeRange: backend.TimeRange{From: from, To: from.Add(time.Hour)}, MaxDataPoints: 1000}
	for _, tc := range []struct {
		name       string
		q          backend.DataQuery
		m          queryModel
		dsInterval time.Duration
		scrape     time.Duration
		want       time.Duration
	}{
		{"min step wins", q, queryModel{Interval: "2m"}, 0, 15 * time.Second, 2 * time.Minute},
		{"a variable as min step is none", short, queryModel{Interval: "$__interval"}, 0, 15 * time.Second, 15 * time.Second},
		{"the datasource's min interval", short, queryModel{}, time.Minute, 15 * time.Second, time.Minute},
		{"Grafana's interval before the datasource's", backend.DataQuery{TimeRange: short.TimeRange, Interval: 30 * time.Second}, queryModel{}, time.Minute, 15 * time.Second, 30 * time.Second},
		// A min step below the collection interval would ask rate() for
		// windows of one sample.
		{"never below the collection interval", short, queryModel{Interval: "1s"}, time.Second, 15 * time.Second, 15 * time.Second},
	} {
		tc.m.Expr = "rate(x[$__interval])"
		p, err := newPromParams(tc.q, tc.m, tc.dsInterval, tc.scrape, false)
		if err != nil {
			t.Fatal(err)
		}
		if p.step != tc.want || p.expr != "rate(x["+promDuration(tc.want)+"])" {
			t.Errorf("%s: step %s, expr %s, want %s", tc.name, p.step, p.expr, tc.want)
		}
	}
	p, _ = newPromParams(q, queryModel{Expr: "x", Interval: "2m", Instant: true, Range: true, Exemplar: true}, 0, 15*time.Second, false)
	if !p.withRange || !p.withInstant || !p.withExemplars {
		t.Fatalf("range, instant and exemplars: %+v", p)
	}
	// Alert rules never evaluate exemplars.
	if p, _ := newPromParams(q, queryModel{Expr: "x", Exemplar: true}, 0, 15*time.Second, true); p.withExemplars {
		t.Fatal("exemplars for an alert rule")
	}
	if _, err := newPromParams(q, queryModel{Expr: "x", Interval: "often"}, 0, time.Second, false); err == nil {
		t.Fatal("bad interval accepted")
	}
}

func TestLegendName(t *testing.T) {
	m := labels.FromStrings("__name__", "up", "service", "cart", "span_name", "GET /")
	for _, tc := range []struct{ legend, want string }{
		{"{{service}} {{ span_name }} {{missing}}", "cart GET / "},
		{"", `up{service="cart", span_name="GET /"}`},
		{legendAuto, ""},
	} {
		if got := legendName(tc.legend, m, "expr"); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.legend, got, tc.want)
		}
	}
	if got := legendName("", labels.EmptyLabels(), "sum(x)"); got != "sum(x)" {
		t.Errorf("no labels: %q", got)
	}
	if got := legendName(legendAuto, labels.EmptyLabels(), "sum(x)"); got != "sum(x)" {
		t.Errorf("auto, no labels: %q", got)
	}
}

func TestPromQLFrames(t *testing.T) {
	f := newFixture(t, `{}`)
	f.feedShop(t, 5, 10)
	from, to := t0, t0.Add(time.Minute)
	expr := `sum by (service) (increase(traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER", service=~"cart|frontend"}[1m]))`

	r := f.run(t, dataQuery("A", from, to, map[string]any{"expr": expr, "legendFormat": "{{service}}"}))
	if r.Error != nil || len(r.Frames) != 2 {
		t.Fatalf("range: %v, %d frames", r.Error, len(r.Frames))
	}
	if fr := r.Frames[1]; fr.Name != "frontend" || fr.Rows() != 5 || fr.Meta.Type != data.FrameTypeTimeSeriesMulti ||
		fr.Fields[1].Labels["service"] != "frontend" || !strings.Contains(fr.Meta.ExecutedQueryString, "Step: 15s") {
		t.Fatalf("range frame %s: %d rows, meta %+v", fr.Name, fr.Rows(), fr.Meta)
	}

	total := `sum by (service) (traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER", service=~"cart|frontend"})`
	r = f.run(t, dataQuery("A", from, to, map[string]any{"expr": total, "instant": true}))
	if r.Error != nil || len(r.Frames) != 2 {
		t.Fatalf("instant: %v, %d frames", r.Error, len(r.Frames))
	}
	// The frontend served 10 traces in each of the 5 rounds.
	if fr := r.Frames[1]; fr.Rows() != 1 || fr.Meta.Type != data.FrameTypeNumericMulti || fr.Fields[1].At(0).(float64) != 50 {
		t.Fatalf("instant frame: %d rows, %v, %v", fr.Rows(), fr.Meta.Type, fr.Fields[1].At(0))
	}

	// The table format is shaped in the frontend: the backend answers
	// with series, which alert rules can read.
	r = f.run(t, dataQuery("B", from, to, map[string]any{"expr": expr, "instant": true, "range": false, "format": "table"}))
	if r.Error != nil || len(r.Frames) != 2 || r.Frames[0].Meta.Type != data.FrameTypeNumericMulti {
		t.Fatalf("table: %v %v", r.Error, r.Frames)
	}

	// A query without results still says what was run.
	r = f.run(t, dataQuery("A", from, to, map[string]any{"expr": `nothing_here`}))
	if r.Error != nil || len(r.Frames) != 1 || r.Frames[0].Meta.ExecutedQueryString == "" {
		t.Fatalf("empty: %v %v", r.Error, r.Frames)
	}
}

func TestPerQueryErrors(t *testing.T) {
	f := newFixture(t, `{}`)
	f.feedShop(t, 2, 5)
	from, to := t0, t0.Add(time.Minute)
	resp, err := f.inst.QueryData(context.Background(), &backend.QueryDataRequest{Queries: []backend.DataQuery{
		dataQuery("bad", from, to, map[string]any{"expr": `sum(rate(x[5m])`}),
		dataQuery("good", from, to, map[string]any{"expr": `sum(traces_spanmetrics_calls_total)`}),
		dataQuery("empty", from, to, map[string]any{"queryType": "promql"}),
		dataQuery("type", from, to, map[string]any{"queryType": "logs"}),
		dataQuery("filters", from, to, map[string]any{"queryType": "serviceGraph", "filters": `env=`}),
		dataQuery("group", from, to, map[string]any{"queryType": "redTable", "groupBy": "region"}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]string{
		"bad":     `1:16: parse error: unclosed left parenthesis`,
		"empty":   "expr is empty",
		"type":    `unknown queryType "logs"`,
		"filters": "invalid label filters",
		"group":   `groupBy "region"`,
	} {
		r := resp.Responses[ref]
		if r.Error == nil || !strings.Contains(r.Error.Error(), want) || r.Status != backend.StatusBadRequest {
			t.Errorf("%s: got %v (%d), want %q", ref, r.Error, r.Status, want)
		}
	}
	if r := resp.Responses["good"]; r.Error != nil || len(r.Frames) != 1 {
		t.Errorf("good: %v", r.Error)
	}
}

func TestCheckHealth(t *testing.T) {
	f := newFixture(t, `{"tenant":"team-a"}`)
	res, err := f.inst.CheckHealth(context.Background(), &backend.CheckHealthRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// No listener configured, no spans: told how to send through Grafana,
	// with the tenant's header. No traffic is not an error.
	for _, want := range []string{"receives only through Grafana", "no spans received", "X-Scope-OrgID: team-a",
		"resources/otlp/v1/traces", "first collection within 15s"} {
		if !strings.Contains(res.Message, want) {
			t.Errorf("message lacks %q: %s", want, res.Message)
		}
	}
	if res.Status != backend.HealthStatusOk {
		t.Errorf("status %v", res.Status)
	}

	failed, _ := Failed(errors.New("OTLP/HTTP cannot listen on :4318 (otlp_http): address already in use")).
		NewInstance(context.Background(), backend.DataSourceInstanceSettings{})
	res, _ = failed.(*Instance).CheckHealth(context.Background(), &backend.CheckHealthRequest{})
	if res.Status != backend.HealthStatusError || !strings.Contains(res.Message, "address already in use") ||
		!strings.Contains(res.Message, "[plugin.seed-spangraph-datasource]") {
		t.Errorf("failed start: %v %s", res.Status, res.Message)
	}
}

func TestResources(t *testing.T) {
	f := newFixture(t, `{"tenant":"team-a"}`)
	f.feedShop(t, 2, 5)
	mux := f.inst.resourceMux()

	// The browser's X-Scope-OrgID is ignored: the instance reads team-a.
	req := httptest.NewRequest(http.MethodGet, "/api/v1/label/service/values?start=0", nil)
	req.Header.Set("X-Scope-OrgID", "someone-else")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"frontend"`) {
		t.Fatalf("label values: %d %s", rec.Code, rec.Body)
	}

	// OTLP through the resource lands in the instance's tenant whatever
	// the header says; an empty export is accepted.
	req = httptest.NewRequest(http.MethodPost, "/otlp/v1/traces", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Scope-OrgID", "someone-else")
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("otlp: %d %s", rec.Code, rec.Body)
	}
	if f.eng.Tenant("someone-else") != nil {
		t.Fatal("a browser header created a tenant")
	}
}

func TestParseStream(t *testing.T) {
	sq, err := parseStream("serviceGraph/abc", []byte(`{"service":"cart","window":"15m"}`))
	if err != nil || sq.kind != QueryTypeServiceGraph || sq.model.Service != "cart" || sq.window != 15*time.Minute {
		t.Fatalf("%+v %v", sq, err)
	}
	for _, bad := range []string{"logs/abc", "redTable/", "redTable/a/b"} {
		if _, err := parseStream(bad, nil); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if _, err := parseStream("redTable/x", []byte(`{"window":"-1m"}`)); err == nil {
		t.Error("negative window accepted")
	}
}

func TestRateTracker(t *testing.T) {
	var n int64
	rt := &rateTracker{read: func() int64 { return n }, window: time.Minute, done: make(chan struct{})}
	start := time.Now()
	rt.sample(start)
	for s := 1; s <= 24; s++ {
		n += 10
		rt.sample(start.Add(time.Duration(s) * 5 * time.Second))
	}
	// 24 samples 5 s apart, 10 each: the last minute holds 12 of them.
	got, over := rt.last(start.Add(120 * time.Second))
	if got != 120 || over != time.Minute {
		t.Fatalf("got %d over %s", got, over)
	}
}

func TestLatencyText(t *testing.T) {
	for _, tc := range []struct {
		ms    float64
		under bool
		want  string
	}{
		{100, true, "< 100 ms"},
		{245.26, false, "245 ms"},
		{3.14159, false, "3.1 ms"},
		{math.NaN(), false, ""},
	} {
		got := latencyText(tc.ms, tc.under)
		if (got == nil) != (tc.want == "") || (got != nil && *got != tc.want) {
			t.Errorf("latencyText(%v, %v) = %v, want %q", tc.ms, tc.under, got, tc.want)
		}
	}
}
