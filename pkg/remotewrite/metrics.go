package remotewrite

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// teeRegisterer registers Prometheus' remote-storage metrics both on a
// private registry, which the Writer reads (highest sent timestamp,
// counters), and on the process registerer (wrapped with the tenant label),
// which exports them. A failure on the process side (say two Writers of one
// tenant in one process) only costs the export, never the Writer.
type teeRegisterer struct {
	private *prometheus.Registry
	public  prometheus.Registerer // nil: not exported

	mu       sync.Mutex
	exported map[prometheus.Collector]bool
}

func newTee(public prometheus.Registerer) *teeRegisterer {
	return &teeRegisterer{
		private:  prometheus.NewRegistry(),
		public:   public,
		exported: map[prometheus.Collector]bool{},
	}
}

func (t *teeRegisterer) Register(c prometheus.Collector) error {
	if err := t.private.Register(c); err != nil {
		return err
	}
	if t.public != nil && t.public.Register(c) == nil {
		t.mu.Lock()
		t.exported[c] = true
		t.mu.Unlock()
	}
	return nil
}

func (t *teeRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := t.Register(c); err != nil {
			panic(err)
		}
	}
}

func (t *teeRegisterer) Unregister(c prometheus.Collector) bool {
	t.mu.Lock()
	exported := t.exported[c]
	delete(t.exported, c)
	t.mu.Unlock()
	// Only what this tee registered: Unregister matches by descriptors, so
	// an unconditional call could remove another Writer's metrics.
	if exported {
		t.public.Unregister(c)
	}
	return t.private.Unregister(c)
}

// selfMetrics exports Spangraph's own view of each endpoint: the lag the
// design asks for, and what the catch-up did (the queue's metrics do not
// see it).
type selfMetrics struct {
	w        *Writer
	lag      *prometheus.Desc
	catching *prometheus.Desc
	catchup  *prometheus.Desc
}

func newSelfMetrics(w *Writer) *selfMetrics {
	return &selfMetrics{
		w: w,
		lag: prometheus.NewDesc("spangraph_remote_write_lag_seconds",
			"Newest collection in the store minus the highest timestamp the endpoint is known to have.",
			[]string{"remote_name"}, nil),
		catching: prometheus.NewDesc("spangraph_remote_write_catching_up",
			"1 while the endpoint is being caught up from the store, before live shipping.",
			[]string{"remote_name"}, nil),
		catchup: prometheus.NewDesc("spangraph_remote_write_catchup_samples_total",
			"Samples the catch-up after a restart handled, by result (sent, failed, dropped by relabelling, refused as already delivered).",
			[]string{"remote_name", "result"}, nil),
	}
}

func (m *selfMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.lag
	ch <- m.catching
	ch <- m.catchup
}

func (m *selfMetrics) Collect(ch chan<- prometheus.Metric) {
	stats := gatherQueues(m.w.tee.private)
	for _, ep := range m.w.eps {
		st := m.w.endpointStatus(ep, stats)
		catching := 0.0
		if st.CatchingUp {
			catching = 1
		}
		ep.mu.Lock()
		c := ep.catchup
		ep.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(m.lag, prometheus.GaugeValue, st.Lag.Seconds(), ep.name)
		ch <- prometheus.MustNewConstMetric(m.catching, prometheus.GaugeValue, catching, ep.name)
		ch <- prometheus.MustNewConstMetric(m.catchup, prometheus.CounterValue, c.sent, ep.name, "sent")
		ch <- prometheus.MustNewConstMetric(m.catchup, prometheus.CounterValue, c.failed, ep.name, "failed")
		ch <- prometheus.MustNewConstMetric(m.catchup, prometheus.CounterValue, c.dropped, ep.name, "dropped")
		ch <- prometheus.MustNewConstMetric(m.catchup, prometheus.CounterValue, c.refused, ep.name, "already_delivered")
	}
}
