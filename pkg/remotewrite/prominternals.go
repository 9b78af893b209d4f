package remotewrite

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// This file holds everything the Writer reads of Prometheus' remote-write
// queue beyond its exported API: metric names and log lines. Prometheus
// does not promise them, so TestPrometheusInternals pins each one; an
// upgrade that renames one fails that test rather than silently freezing
// markers or losing the watcher's start time.

// Metric names read from the queue manager (per remote_name).
const (
	mSamplesTotal      = "prometheus_remote_storage_samples_total"
	mSamplesRetried    = "prometheus_remote_storage_samples_retried_total"
	mSamplesFailed     = "prometheus_remote_storage_samples_failed_total"
	mSamplesDropped    = "prometheus_remote_storage_samples_dropped_total"
	mSamplesPending    = "prometheus_remote_storage_samples_pending"
	mHistogramsPending = "prometheus_remote_storage_histograms_pending"
	// mHighestSent is the newest timestamp of any batch done with (sent,
	// or refused for good), in whole seconds, over all shards: a shard
	// still retrying an older batch does not hold it back.
	mHighestSent = "prometheus_remote_storage_queue_highest_sent_timestamp_seconds"
)

// queueMetricNames are the names gatherQueues reads.
var queueMetricNames = []string{mSamplesTotal, mSamplesRetried, mSamplesFailed, mSamplesDropped,
	mSamplesPending, mHistogramsPending, mHighestSent}

// Log messages of the queue manager and its WAL watcher that the Writer
// acts on.
const (
	// logWatcherStarted: the watcher's Run logs this right after its loop
	// set the start time, before which it skips every sample. The record's
	// time is therefore an upper bound of that start time.
	logWatcherStarted = "Replaying WAL"
	// logNonRecoverable carries failedSampleCount; with a cancelled
	// context it means a batch was abandoned by a hard shutdown of the
	// shards (on Stop or on resharding), not refused by the endpoint.
	logNonRecoverable = "non-recoverable error"
	// logFlushFailed* carry count: queued data dropped by a hard shutdown.
	logFlushFailedSamples    = "Failed to flush all samples on shutdown"
	logFlushFailedHistograms = "Failed to flush all histograms on shutdown"
	// logResharding: the queue is about to stop its shards, which it
	// hard-stops after the flush deadline.
	logResharding = "Remote storage resharding"
)

// queueStats are one queue's metrics.
type queueStats struct {
	samplesTotal, retried, failed, dropped float64
	pending                                float64 // samples and histograms
	highestSent                            float64 // seconds
}

// gatherQueues reads every queue's stats, keyed by remote_name.
func gatherQueues(reg *prometheus.Registry) map[string]*queueStats {
	// On error Gather still returns what it could; that is what we want.
	mfs, _ := reg.Gather()
	stats := map[string]*queueStats{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := labelValue(m, "remote_name")
			if name == "" {
				continue
			}
			s := stats[name]
			if s == nil {
				s = &queueStats{}
				stats[name] = s
			}
			v := metricValue(m)
			switch mf.GetName() {
			case mSamplesTotal:
				s.samplesTotal = v
			case mSamplesRetried:
				s.retried = v
			case mSamplesFailed:
				s.failed = v
			case mSamplesDropped:
				s.dropped += v // by reason
			case mSamplesPending, mHistogramsPending:
				s.pending += v
			case mHighestSent:
				s.highestSent = v
			}
		}
	}
	return stats
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

// queueEvents is what the Writer learns from the queues' logs: the
// queues expose counters, not reasons, not the watcher's start time, and
// not that a hard shutdown abandoned samples.
type queueEvents interface {
	// watcherStarted: the queue's WAL watcher skips samples at or before
	// a start time no later than at.
	watcherStarted(queue string, at time.Time)
	// sendFailed: a send failed (msg says why); it may be retried.
	sendFailed(queue, msg string)
	// abandoned: a hard shutdown of the shards dropped n samples that
	// the queue will never send.
	abandoned(queue string, n int64)
	// resharding: the queue restarts its shards.
	resharding(queue string)
	// isStopping: the Writer is stopping, so abandoned samples are
	// expected (the marker stays behind them) and not worth an ERROR.
	isStopping() bool
}

// queueLogTap passes the queues' log records through to the Writer's
// logger and reports the ones in queueEvents.
type queueLogTap struct {
	inner  slog.Handler
	queue  string // the queue's remote_name, from its logger's attributes
	events queueEvents
}

func (h *queueLogTap) Enabled(ctx context.Context, l slog.Level) bool {
	// Info for logWatcherStarted, whatever the Writer's level.
	return l >= slog.LevelInfo || h.inner.Enabled(ctx, l)
}

func (h *queueLogTap) Handle(ctx context.Context, r slog.Record) error {
	if h.queue != "" {
		r = h.observe(r)
	}
	if h.inner.Enabled(ctx, r.Level) {
		return h.inner.Handle(ctx, r)
	}
	return nil
}

// observe reports r and returns it, demoted to DEBUG when the Writer
// reports the same thing itself in words that say what to do.
func (h *queueLogTap) observe(r slog.Record) slog.Record {
	var errText string
	var count int64
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "err":
			errText = a.Value.String()
		case "count", "failedSampleCount", "failedHistogramCount":
			switch v := a.Value.Resolve(); v.Kind() {
			case slog.KindInt64:
				count += v.Int64()
			case slog.KindUint64:
				count += int64(v.Uint64())
			}
		}
		return true
	})
	switch {
	case r.Message == logWatcherStarted:
		h.events.watcherStarted(h.queue, r.Time)
		return r
	case r.Message == logResharding:
		h.events.resharding(h.queue)
		return r
	case r.Message == logFlushFailedSamples || r.Message == logFlushFailedHistograms,
		r.Message == logNonRecoverable && strings.Contains(errText, context.Canceled.Error()):
		h.events.abandoned(h.queue, count)
		if h.events.isStopping() {
			return demote(r)
		}
		return r
	case r.Level >= slog.LevelWarn && errText != "":
		h.events.sendFailed(h.queue, r.Message+": "+errText)
	}
	return r
}

func demote(r slog.Record) slog.Record {
	d := slog.NewRecord(r.Time, slog.LevelDebug, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		d.AddAttrs(a)
		return true
	})
	return d
}

func (h *queueLogTap) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(as)
	for _, a := range as {
		if a.Key == "remote_name" {
			c.queue = a.Value.String()
		}
	}
	return &c
}

func (h *queueLogTap) WithGroup(name string) slog.Handler {
	c := *h
	c.inner = h.inner.WithGroup(name)
	return &c
}
