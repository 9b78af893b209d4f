package query

import (
	"context"
	"fmt"
	"math"
	"time"
)

// NativeSource is a Source that says whether the processors write native
// latency histograms (generate_native_histograms: native or both). The
// node graph and the RED table then take their latencies from those,
// which follow the latencies instead of fixed bounds (with Tempo's
// service-graph buckets a 1 ms edge has a classic p90 of "< 100 ms"),
// through PromQL over the store.
type NativeSource interface {
	Source
	NativeLatency(tenant string) (spanMetrics, serviceGraph bool)
}

// native reports which processors of tenant write native histograms.
func (q *Querier) native(tenant string) (spanMetrics, serviceGraph bool) {
	if ns, ok := q.source.(NativeSource); ok {
		return ns.NativeLatency(tenant)
	}
	return false, false
}

// nativeFigures are the latencies the native histograms of a window give.
type nativeFigures struct {
	// avgMs and p90Ms per edge, from the server side, else (an
	// uninstrumented server) the client side.
	avgMs, p90Ms map[edgeKey]float64
	// nodeP90Ms per server, likewise.
	nodeP90Ms map[string]float64
}

// nativeGraph reads the service graph's native latency histograms over
// the window ending at end, as Grafana's Tempo service map would write
// the queries: histogram_avg and histogram_quantile of the summed rates.
func (q *Querier) nativeGraph(ctx context.Context, tenant string, o GraphOptions, end time.Time, instrumented map[string]bool) (*nativeFigures, error) {
	w := window(o.Start, o.End)
	f := &nativeFigures{avgMs: map[edgeKey]float64{}, p90Ms: map[edgeKey]float64{}, nodeP90Ms: map[string]float64{}}
	byEdge := "client, server, connection_type"
	// The client side first: the server side overwrites it where the
	// server is instrumented (or nothing is known to be).
	for _, metric := range []string{metricClientSeconds, metricServerSeconds} {
		sel := selector(metric, o.Matchers)
		server := metric == metricServerSeconds
		keep := func(srv string) bool { return !server || len(instrumented) == 0 || instrumented[srv] }
		avg := fmt.Sprintf("histogram_avg(sum by (%s) (rate(%s[%s])))", byEdge, sel, w)
		if q.Backend() != nil {
			// The same division, in functions every backend with native
			// histograms has (histogram_avg came with Prometheus 2.50).
			sum := fmt.Sprintf("sum by (%s) (rate(%s[%s]))", byEdge, sel, w)
			avg = fmt.Sprintf("histogram_sum(%s) / histogram_count(%s)", sum, sum)
		}
		for expr, into := range map[string]map[edgeKey]float64{
			avg: f.avgMs,
			fmt.Sprintf("histogram_quantile(0.9, sum by (%s) (rate(%s[%s])))", byEdge, sel, w): f.p90Ms,
		} {
			v, err := q.vector(ctx, tenant, expr, end)
			if err != nil {
				return nil, err
			}
			for _, s := range v {
				if k := edgeKeyOf(s.Metric); keep(k.server) && !math.IsNaN(s.F) {
					into[k] = s.F * 1000
				}
			}
		}
		v, err := q.vector(ctx, tenant, fmt.Sprintf("histogram_quantile(0.9, sum by (server) (rate(%s[%s])))", sel, w), end)
		if err != nil {
			return nil, err
		}
		for _, s := range v {
			if srv := s.Metric.Get("server"); keep(srv) && !math.IsNaN(s.F) {
				f.nodeP90Ms[srv] = s.F * 1000
			}
		}
	}
	return f, nil
}

// apply puts the native figures over the classic ones where there are
// native series; a native p90 is the figure itself, never "under" a bound.
func (f *nativeFigures) apply(edges []Edge) {
	for i := range edges {
		k := edgeKey{edges[i].Source, edges[i].Target, edges[i].ConnectionType}
		if v, ok := f.avgMs[k]; ok {
			edges[i].AvgMs = v
		}
		if v, ok := f.p90Ms[k]; ok {
			edges[i].P90Ms, edges[i].P90Under = v, false
		}
	}
}

// nodeP90 is a node's native p90; false without native figures for it.
func (f *nativeFigures) nodeP90(id string) (float64, bool) {
	if f == nil {
		return 0, false
	}
	v, ok := f.nodeP90Ms[id]
	return v, ok
}
