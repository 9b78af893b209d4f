package engine

import "github.com/spangraph/spangraph/pkg/registry"

// NativeLatency reports whether the span metrics and the service graph
// write native latency histograms (generate_native_histograms native or
// both), for the node graph and the RED table (query.NativeSource). The
// setting is the same for every tenant.
func (e *Engine) NativeLatency(string) (spanMetrics, serviceGraph bool) {
	cfg := e.liveConfig()
	return cfg.SpanMetrics.Enabled && cfg.SpanMetrics.Histograms.Options().Mode != registry.Classic,
		cfg.ServiceGraph.Enabled && cfg.ServiceGraph.Histograms.Options().Mode != registry.Classic
}
