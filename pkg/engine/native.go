package engine

import "github.com/spangraph/spangraph/pkg/registry"

// NativeLatency reports whether tenant's span metrics and service graph
// write native latency histograms (generate_native_histograms native or
// both, the tenant's override first), for the node graph and the RED
// table (query.NativeSource).
func (e *Engine) NativeLatency(tenant string) (spanMetrics, serviceGraph bool) {
	sm, sg := e.liveConfig().Processors(tenant)
	return sm.Enabled && sm.Histograms.Options().Mode != registry.Classic,
		sg.Enabled && sg.Histograms.Options().Mode != registry.Classic
}
