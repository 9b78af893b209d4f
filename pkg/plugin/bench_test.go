package plugin

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// appendSeries writes samples straight into the tenant's store, for data
// sets far larger than traffic through the processors would build quickly.
func (f *fixture) appendSeries(b *testing.B, write func(app storage.Appender) error) {
	b.Helper()
	app := f.tenant().Store.Appender(context.Background())
	if err := write(app); err != nil {
		b.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkQueryDataServiceGraph builds the node graph of 1 000 services
// joined by 10 000 edges, each with request, failure and server-latency
// series (13 series an edge), over a 1h window.
func BenchmarkQueryDataServiceGraph(b *testing.B) {
	f := newFixture(b, `{"tracesDatasourceUid":"tempo"}`)
	const services, edges = 1000, 10000
	les := []string{"0.1", "0.2", "0.4", "0.8", "1.6", "3.2", "6.4", "12.8", "+Inf"}
	rng := rand.New(rand.NewPCG(1, 1))
	seen := map[[2]int]bool{}
	f.appendSeries(b, func(app storage.Appender) error {
		for len(seen) < edges {
			c, s := rng.IntN(services), rng.IntN(services)
			if c == s || seen[[2]int{c, s}] {
				continue
			}
			seen[[2]int{c, s}] = true
			client, server := fmt.Sprintf("svc-%04d", c), fmt.Sprintf("svc-%04d", s)
			rate := float64(1 + rng.IntN(100))
			put := func(name string, v float64, extra ...string) error {
				l := labels.FromStrings(append([]string{"__name__", name, "client", client, "server", server}, extra...)...)
				// Three samples, so that the window, open at its start,
				// still holds two.
				for k := 0; k <= 2; k++ {
					if _, err := app.Append(0, l, t0.Add(time.Duration(k)*30*time.Minute).UnixMilli(), v*float64(k)/2); err != nil {
						return err
					}
				}
				return nil
			}
			if err := put("traces_service_graph_request_total", rate*3600); err != nil {
				return err
			}
			if err := put("traces_service_graph_request_failed_total", rate*36); err != nil {
				return err
			}
			if err := put("traces_service_graph_request_server_seconds_sum", rate*3600*0.05); err != nil {
				return err
			}
			if err := put("traces_service_graph_request_server_seconds_count", rate*3600); err != nil {
				return err
			}
			for j, le := range les {
				if err := put("traces_service_graph_request_server_seconds_bucket", rate*3600*float64(j+1)/float64(len(les)), "le", le); err != nil {
					return err
				}
			}
		}
		return nil
	})
	q := dataQuery("A", t0, t0.Add(time.Hour), map[string]any{"queryType": "serviceGraph", "maxNodes": 1500})
	req := &backend.QueryDataRequest{Queries: []backend.DataQuery{q}}
	b.ResetTimer()
	for b.Loop() {
		resp, err := f.inst.QueryData(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		r := resp.Responses["A"]
		if r.Error != nil || r.Frames[0].Rows() != services || r.Frames[1].Rows() != edges {
			b.Fatalf("%v: %d nodes, %d edges", r.Error, r.Frames[0].Rows(), r.Frames[1].Rows())
		}
	}
}

// BenchmarkQueryDataPromQLRange evaluates a rate over 10 000 counter
// series, sampled every 15 s for an hour, into 100 frames of 240 points.
func BenchmarkQueryDataPromQLRange(b *testing.B) {
	f := newFixture(b, `{}`)
	const series, points = 10000, 240
	f.appendSeries(b, func(app storage.Appender) error {
		for s := 0; s < series; s++ {
			l := labels.FromStrings("__name__", "traces_spanmetrics_calls_total",
				"service", "svc-"+strconv.Itoa(s%100), "span_name", "op-"+strconv.Itoa(s/100), "span_kind", "SPAN_KIND_SERVER")
			var ref storage.SeriesRef
			for p := 0; p < points; p++ {
				var err error
				if ref, err = app.Append(ref, l, t0.Add(time.Duration(p)*15*time.Second).UnixMilli(), float64(p*(1+s%7))); err != nil {
					return err
				}
			}
		}
		return nil
	})
	q := dataQuery("A", t0, t0.Add(time.Hour), map[string]any{
		"expr": `sum by (service) (rate(traces_spanmetrics_calls_total[$__rate_interval]))`, "legendFormat": "{{service}}",
	})
	q.MaxDataPoints = points
	req := &backend.QueryDataRequest{Queries: []backend.DataQuery{q}}
	b.ResetTimer()
	for b.Loop() {
		resp, err := f.inst.QueryData(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		if r := resp.Responses["A"]; r.Error != nil || len(r.Frames) != 100 {
			b.Fatalf("%v: %d frames", r.Error, len(r.Frames))
		}
	}
}
