package plugin

import (
	"context"
	"fmt"
	"math"
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

// graphSeries are the series of a service graph of services nodes and
// edges edges (13 series an edge: request, failure and server-latency
// series), with what each counts over an hour.
func graphSeries(services, edges int) (ls []labels.Labels, hourly []float64) {
	les := []string{"0.1", "0.2", "0.4", "0.8", "1.6", "3.2", "6.4", "12.8", "+Inf"}
	rng := rand.New(rand.NewPCG(1, 1))
	seen := map[[2]int]bool{}
	for len(seen) < edges {
		c, s := rng.IntN(services), rng.IntN(services)
		if c == s || seen[[2]int{c, s}] {
			continue
		}
		seen[[2]int{c, s}] = true
		client, server := fmt.Sprintf("svc-%04d", c), fmt.Sprintf("svc-%04d", s)
		rate := float64(1 + rng.IntN(100))
		put := func(name string, v float64, extra ...string) {
			ls = append(ls, labels.FromStrings(append([]string{"__name__", name, "client", client, "server", server}, extra...)...))
			hourly = append(hourly, v)
		}
		put("traces_service_graph_request_total", rate*3600)
		put("traces_service_graph_request_failed_total", rate*36)
		put("traces_service_graph_request_server_seconds_sum", rate*3600*0.05)
		put("traces_service_graph_request_server_seconds_count", rate*3600)
		for j, le := range les {
			put("traces_service_graph_request_server_seconds_bucket", rate*3600*float64(j+1)/float64(len(les)), "le", le)
		}
	}
	return ls, hourly
}

// benchGraphQueries runs the node graph of services nodes and edges edges
// over [from, to] through QueryData.
func benchGraphQueries(b *testing.B, f *fixture, from, to time.Time, services, edges int) {
	q := dataQuery("A", from, to, map[string]any{"queryType": "serviceGraph", "maxNodes": 1500})
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

// BenchmarkQueryDataServiceGraph builds the node graph of 1 000 services
// joined by 10 000 edges over a 1h window, from series written straight
// into the store, three samples each, in the past: read from the store.
func BenchmarkQueryDataServiceGraph(b *testing.B) {
	f := newFixture(b, `{"tracesDatasourceUid":"tempo"}`)
	const services, edges = 1000, 10000
	ls, hourly := graphSeries(services, edges)
	f.appendSeries(b, func(app storage.Appender) error {
		for i, l := range ls {
			// Three samples, so that the window, open at its start,
			// still holds two.
			for k := 0; k <= 2; k++ {
				if _, err := app.Append(0, l, t0.Add(time.Duration(k)*30*time.Minute).UnixMilli(), hourly[i]*float64(k)/2); err != nil {
					return err
				}
			}
		}
		return nil
	})
	benchGraphQueries(b, f, t0, t0.Add(time.Hour), services, edges)
}

// BenchmarkQueryDataServiceGraphRolling is BenchmarkQueryDataServiceGraph
// as a live panel sees it: an hour of collections every 15 s written
// through the tenant's collection appender (the store and the rolling
// window behind it, as the engine's collection does), the last of them
// now, so that QueryData answers from the rolling window.
func BenchmarkQueryDataServiceGraphRolling(b *testing.B) {
	f := newFixture(b, `{"tracesDatasourceUid":"tempo"}`)
	const services, edges = 1000, 10000
	ls, hourly := graphSeries(services, edges)
	inst := f.tenant()
	// The window fills from the (empty) store in the background first.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if r, ok := inst.Rolling.Read(time.Now().UnixMilli()-1, time.Now().UnixMilli()); ok {
			r.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the rolling window was not filled within a minute")
		}
	}
	// Collections from the window's start: it holds nothing before.
	start := time.Now().Truncate(time.Second).Add(time.Second)
	for x := 0; x <= 3600; x += 15 {
		ts := start.Add(time.Duration(x) * time.Second).UnixMilli()
		app := inst.Rolling.Appender(inst.Store.Appender(context.Background()), ts)
		for i, l := range ls {
			if _, err := app.Append(0, l, ts, math.Floor(hourly[i]*float64(x)/3600)); err != nil {
				b.Fatal(err)
			}
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	end := start.Add(time.Hour)
	if r, ok := inst.Rolling.Read(start.UnixMilli(), end.UnixMilli()); !ok {
		b.Fatal("the rolling window does not hold the hour")
	} else {
		r.Close()
	}
	benchGraphQueries(b, f, start, end, services, edges)
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
