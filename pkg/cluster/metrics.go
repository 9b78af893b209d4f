package cluster

import (
	"time"

	"github.com/grafana/dskit/ring"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Forward outcomes besides gRPC status code names ("Unavailable", ...).
const (
	outcomeSuccess        = "success"
	outcomePartialSuccess = "partial_success"
)

// unhealthyState labels members whose heartbeat is older than the timeout,
// whatever their state, as dskit's ring_members does.
const unhealthyState = "Unhealthy"

type metrics struct {
	forwardRequests *prometheus.CounterVec
	forwardBytes    prometheus.Counter
	forwardDuration prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, c *Cluster) *metrics {
	m := &metrics{
		forwardRequests: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "spangraph_cluster_forward_requests_total",
			Help: "Requests forwarded to the ring member owning their traces, by outcome (success, partial_success, or the gRPC status code).",
		}, []string{"outcome"}),
		forwardBytes: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "spangraph_cluster_forward_sent_bytes_total",
			Help: "Encoded request bytes sent to ring members, whatever the outcome.",
		}),
		forwardDuration: promauto.With(reg).NewHistogram(prometheus.HistogramOpts{
			Name:                            "spangraph_cluster_forward_duration_seconds",
			Help:                            "Time to forward one request to its owner and get the answer.",
			Buckets:                         prometheus.ExponentialBuckets(0.0005, 2, 15), // 0.5 ms … 8.2 s
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  100,
			NativeHistogramMinResetDuration: time.Hour,
		}),
	}
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "spangraph_cluster_peer_connections",
		Help: "gRPC client connections held to ring members for forwarding.",
	}, func() float64 {
		c.connsMu.Lock()
		defer c.connsMu.Unlock()
		return float64(len(c.conns))
	})
	if reg != nil {
		reg.MustRegister(membersCollector{c})
	}
	return m
}

// observeForward records one forwarded request. Its spans are counted by
// the receiver, which knows them without reading the body again
// (spangraph_receiver_spans_forwarded_total, and spans_rejected_total with
// reason="forward_failed").
func (m *metrics) observeForward(outcome string, bytes int, took time.Duration) {
	m.forwardRequests.WithLabelValues(outcome).Inc()
	m.forwardBytes.Add(float64(bytes))
	m.forwardDuration.Observe(took.Seconds())
}

var membersDesc = prometheus.NewDesc(
	"spangraph_cluster_members",
	"Ring members in this instance's view, by state; members whose heartbeat is older than heartbeat_timeout count as Unhealthy whatever their state.",
	[]string{"state"}, nil)

// membersCollector counts members at scrape time, so that a member whose
// heartbeats stopped shows as Unhealthy even when nothing is gossiped.
type membersCollector struct{ c *Cluster }

func (mc membersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- membersDesc }

func (mc membersCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{unhealthyState: 0}
	for _, s := range []ring.InstanceState{ring.ACTIVE, ring.LEAVING, ring.PENDING, ring.JOINING} {
		counts[s.String()] = 0
	}
	now := time.Now()
	if v := mc.c.view.Load(); v != nil && v.desc != nil {
		for _, inst := range v.desc.Ingesters {
			s := inst.State.String()
			if !inst.IsHeartbeatHealthy(mc.c.cfg.HeartbeatTimeout, now) {
				s = unhealthyState
			}
			counts[s]++
		}
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(n), s)
	}
}
