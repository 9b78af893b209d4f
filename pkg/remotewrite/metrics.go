package remotewrite

import (
	"context"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// teeRegisterer registers Prometheus' remote-storage metrics both on a
// private registry, which the Writer reads (highest sent timestamp,
// counters), and on the process registerer (wrapped with the tenant label),
// which exports them. A failure on the process side (say two Writers of one
// tenant in one process) only costs the export, never the Writer.
type teeRegisterer struct {
	private *prometheus.Registry
	public  prometheus.Registerer // nil: not exported

	// beforeUnregister runs before a collector goes: the queue unregisters
	// its metrics as its last act on Stop, after the final flush, so this
	// is the only moment that flush's highest sent timestamp can be read.
	beforeUnregister func()

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
	if t.beforeUnregister != nil {
		t.beforeUnregister()
	}
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

// queueStats are one queue's metrics, read from the private registry.
type queueStats struct {
	samplesTotal, retried, failed, dropped, pending float64
	highestSent                                     float64 // seconds
}

const (
	mHighestSent = "prometheus_remote_storage_queue_highest_sent_timestamp_seconds"
	mRecordsRead = "prometheus_wal_watcher_records_read_total"
)

// gatherQueues reads every queue's stats, keyed by remote_name, and the WAL
// watchers' records read, keyed by consumer (the queue name).
func gatherQueues(reg *prometheus.Registry) (map[string]*queueStats, map[string]float64) {
	// On error Gather still returns what it could; that is what we want.
	mfs, _ := reg.Gather()
	stats := map[string]*queueStats{}
	read := map[string]float64{}
	get := func(name string) *queueStats {
		s := stats[name]
		if s == nil {
			s = &queueStats{}
			stats[name] = s
		}
		return s
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := metricValue(m)
			if mf.GetName() == mRecordsRead {
				read[labelValue(m, "consumer")] += v
				continue
			}
			name := labelValue(m, "remote_name")
			if name == "" {
				continue
			}
			switch mf.GetName() {
			case "prometheus_remote_storage_samples_total":
				get(name).samplesTotal = v
			case "prometheus_remote_storage_samples_retried_total":
				get(name).retried = v
			case "prometheus_remote_storage_samples_failed_total":
				get(name).failed = v
			case "prometheus_remote_storage_samples_dropped_total":
				get(name).dropped = v
			case "prometheus_remote_storage_samples_pending":
				get(name).pending = v
			case mHighestSent:
				get(name).highestSent = v
			}
		}
	}
	return stats, read
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// errorTap passes log records through and hands warnings and errors of a
// queue ("Failed to send batch, retrying", "non-recoverable error") to
// onError, so that Status can say why an endpoint fails: the queue exposes
// counters, not reasons.
type errorTap struct {
	inner   slog.Handler
	queue   string // the queue's remote_name, from its logger's attributes
	onError func(queue, msg string)
}

func (h *errorTap) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.inner.Enabled(ctx, l)
}

func (h *errorTap) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn && h.queue != "" {
		var errText string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "err" {
				errText = a.Value.String()
				return false
			}
			return true
		})
		if errText != "" {
			h.onError(h.queue, r.Message+": "+errText)
		}
	}
	if h.inner.Enabled(ctx, r.Level) {
		return h.inner.Handle(ctx, r)
	}
	return nil
}

func (h *errorTap) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(as)
	for _, a := range as {
		if a.Key == "remote_name" {
			c.queue = a.Value.String()
		}
	}
	return &c
}

func (h *errorTap) WithGroup(name string) slog.Handler {
	c := *h
	c.inner = h.inner.WithGroup(name)
	return &c
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
	stats, _ := gatherQueues(m.w.tee.private)
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
