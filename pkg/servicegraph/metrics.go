package servicegraph

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spangraph/spangraph/pkg/otlp"
)

// selfMetrics describe the processor in the process's own registry.
type selfMetrics struct {
	pending, fill, expired, silent, completed, dropped *prometheus.Desc
}

func newSelfMetrics(tenant string) selfMetrics {
	l := prometheus.Labels{"tenant": tenant}
	return selfMetrics{
		pending: prometheus.NewDesc("spangraph_servicegraph_pending_edges",
			"Half edges waiting in the edge store for their other side.", nil, l),
		fill: prometheus.NewDesc("spangraph_servicegraph_store_fill_ratio",
			"Pending half edges divided by max_items.", nil, l),
		expired: prometheus.NewDesc("spangraph_servicegraph_expired_edges_total",
			"Half edges that waited the whole wait, by the span kind of the side seen.", []string{"span_kind"}, l),
		silent: prometheus.NewDesc("spangraph_servicegraph_silent_edges_total",
			"Half edges of silent call sites (peers that never answer) settled at once rather than after the wait; counted in expired too.", nil, l),
		completed: prometheus.NewDesc("spangraph_servicegraph_completed_edges_total",
			"Edges recorded: paired, database and virtual.", nil, l),
		dropped: prometheus.NewDesc("spangraph_servicegraph_dropped_spans_total",
			"Spans refused because the edge store was full.", nil, l),
	}
}

// Describe implements prometheus.Collector. The engine registers the
// processor in its own registry and unregisters it with its tenant; the
// tenant is a constant label, so every tenant's processor can be
// registered side by side.
func (p *Processor) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.self.pending
	ch <- p.self.fill
	ch <- p.self.expired
	ch <- p.self.silent
	ch <- p.self.completed
	ch <- p.self.dropped
}

// Collect implements prometheus.Collector. The figures are read at scrape
// time, so the hot path pays nothing for them.
func (p *Processor) Collect(ch chan<- prometheus.Metric) {
	s := p.Stats()
	ch <- prometheus.MustNewConstMetric(p.self.pending, prometheus.GaugeValue, float64(s.Pending))
	ch <- prometheus.MustNewConstMetric(p.self.fill, prometheus.GaugeValue, float64(s.Pending)/float64(s.Capacity))
	for _, k := range []otlp.SpanKind{otlp.SpanKindClient, otlp.SpanKindProducer, otlp.SpanKindServer, otlp.SpanKindConsumer} {
		ch <- prometheus.MustNewConstMetric(p.self.expired, prometheus.CounterValue, float64(p.expired[k].Load()), k.String())
	}
	ch <- prometheus.MustNewConstMetric(p.self.silent, prometheus.CounterValue, float64(s.Silent))
	ch <- prometheus.MustNewConstMetric(p.self.completed, prometheus.CounterValue, float64(s.Completed))
	ch <- prometheus.MustNewConstMetric(p.self.dropped, prometheus.CounterValue, float64(s.Dropped))
}
