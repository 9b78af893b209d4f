package plugin

import (
	"testing"
	"time"

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
	}{
		{"promql_range", map[string]any{
			"expr":         `sum by (service) (rate(traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER", service=~"frontend|checkout"}[$__rate_interval]))`,
			"legendFormat": "{{service}}", "range": true,
		}},
		{"promql_range_default_legend", map[string]any{
			"queryType": "promql",
			"expr":      `sum by (service, span_name) (increase(traces_spanmetrics_calls_total{service="checkout"}[$__range]))`,
		}},
		{"promql_instant", map[string]any{
			"expr":    `sum by (service) (increase(traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER", service=~"cart|payment"}[$__range]))`,
			"instant": true, "range": false, "legendFormat": "__auto",
		}},
		{"promql_table", map[string]any{
			"expr":    `sum by (service) (increase(traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER", service=~"cart|payment"}[$__range]))`,
			"instant": true, "range": false, "format": "table",
		}},
		{"promql_heatmap", map[string]any{
			"expr":   `sum by (le) (increase(traces_spanmetrics_latency_bucket{service="currency"}[1m]))`,
			"format": "heatmap",
		}},
		{"promql_exemplars", map[string]any{
			"expr":     `histogram_quantile(0.9, sum by (le) (rate(traces_spanmetrics_latency_bucket{service="payment", span_kind="SPAN_KIND_SERVER"}[1m])))`,
			"exemplar": true, "legendFormat": "p90",
		}},
		{"service_graph", map[string]any{"queryType": "serviceGraph"}},
		{"service_graph_checkout", map[string]any{"queryType": "serviceGraph", "service": "checkout", "depth": 1, "connectionTypes": []string{"", "messaging_system"}}},
		{"red_table", map[string]any{"queryType": "redTable"}},
		{"red_table_span_name", map[string]any{"queryType": "redTable", "groupBy": "span_name", "topN": 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.run(t, dataQuery("A", from, to, tc.model))
			if resp.Error != nil {
				t.Fatal(resp.Error)
			}
			experimental.CheckGoldenJSONResponse(t, "testdata", tc.name, &resp, *update)
		})
	}
}
