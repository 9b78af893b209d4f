package plugin

import (
	"context"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/experimental"
)

// TestGoldenFrames pins every frame type the datasource returns; run
// `go test ./pkg/plugin -run Golden -update` to rewrite testdata/ after a
// deliberate change, and review the diff.
func TestGoldenFrames(t *testing.T) {
	f := newFixture(t, `{"tracesDatasourceUid":"tempo-uid"}`)
	f.feedShop(t, 9, 20)
	from, to := t0, t0.Add(2*time.Minute)

	for _, tc := range []struct {
		name  string
		model map[string]any
		// alert sends the request as Grafana's alert evaluation does.
		alert bool
	}{
		{name: "promql_range", model: map[string]any{
			"expr":         `sum by (service) (rate(traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER", service=~"frontend|checkout"}[$__rate_interval]))`,
			"legendFormat": "{{service}}", "range": true,
		}},
		{name: "promql_range_default_legend", model: map[string]any{
			"queryType": "promql",
			"expr":      `sum by (service, span_name) (increase(traces_spanmetrics_calls_total{service="checkout"}[$__range]))`,
		}},
		{name: "promql_instant", model: map[string]any{
			"expr":    `sum by (service) (increase(traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER", service=~"cart|payment"}[$__range]))`,
			"instant": true, "range": false, "legendFormat": "__auto",
		}},
		{name: "promql_table", model: map[string]any{
			"expr":    `sum by (service) (increase(traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER", service=~"cart|payment"}[$__range]))`,
			"instant": true, "range": false, "format": "table",
		}},
		{name: "promql_heatmap", model: map[string]any{
			"expr":   `sum by (le) (increase(traces_spanmetrics_latency_bucket{service="currency"}[1m]))`,
			"format": "heatmap",
		}},
		{name: "promql_exemplars", model: map[string]any{
			"expr":     `histogram_quantile(0.9, sum by (le) (rate(traces_spanmetrics_latency_bucket{service="payment", span_kind="SPAN_KIND_SERVER"}[1m])))`,
			"exemplar": true, "legendFormat": "p90",
		}},
		{name: "promql_alert", model: map[string]any{
			"expr":   `histogram_quantile(0.9, sum by (le, service) (rate(traces_spanmetrics_latency_bucket{service=~"payment|cart", span_kind="SPAN_KIND_SERVER"}[1m])))`,
			"format": "table", "exemplar": true, "legendFormat": "{{service}}",
		}, alert: true},
		{name: "promql_metric_name_only", model: map[string]any{
			"expr": `max by (__name__) (traces_spanmetrics_calls_total{service="cart"})`, "instant": true, "range": false,
		}},
		{name: "service_graph", model: map[string]any{"queryType": "serviceGraph"}},
		{name: "service_graph_checkout", model: map[string]any{"queryType": "serviceGraph", "service": "checkout", "depth": 1, "connectionTypes": []string{"", "messaging_system"}}},
		{name: "red_table", model: map[string]any{"queryType": "redTable"}},
		{name: "red_table_span_name", model: map[string]any{"queryType": "redTable", "groupBy": "span_name", "topN": 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &backend.QueryDataRequest{Queries: []backend.DataQuery{dataQuery("A", from, to, tc.model)}}
			if tc.alert {
				req.Headers = map[string]string{"FromAlert": "true"}
			}
			r, err := f.inst.QueryData(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			resp := r.Responses["A"]
			if resp.Error != nil {
				t.Fatal(resp.Error)
			}
			experimental.CheckGoldenJSONResponse(t, "testdata", tc.name, &resp, *update)
		})
	}
}
