package engine

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/spangraph/spangraph/pkg/atomicfile"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/store"
)

var (
	checkpointDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "spangraph_checkpoint_duration_seconds",
		Help:    "Time to save the series counted since the last collection (checkpoint_interval), by tenant.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8),
	}, []string{"tenant"})
	checkpointSeries = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spangraph_checkpoint_series",
		Help: "Series in the tenant's last registry checkpoint: those updated since the collection before the last.",
	}, []string{"tenant"})
	checkpointFailures = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spangraph_checkpoint_failures_total",
		Help: "Registry checkpoints that could not be saved; while they fail, a crash loses up to collection_interval of counts.",
	}, []string{"tenant"})
)

// checkpointFile is where a tenant's registry checkpoint is kept.
func (e *Engine) checkpointFile(tenant string) string {
	return filepath.Join(store.Dir(e.cfg.DataDir, tenant), "registry-checkpoint")
}

// checkpointing reports whether checkpoints bound the loss of a crash
// better than collections do on their own.
func (e *Engine) checkpointing() bool {
	return e.cfg.CheckpointInterval > 0 && e.cfg.CheckpointInterval < e.cfg.CollectionInterval
}

// checkpointAll saves every open tenant's recent counts.
func (e *Engine) checkpointAll() {
	insts := e.acquireOpen()
	defer e.releaseAll(insts)
	for _, inst := range insts {
		e.checkpoint(inst)
	}
}

// checkpoint saves the series a tenant counted since its last collection.
// It holds the collection lock and takes a collection timestamp, so that
// a checkpoint is ordered with collections: restored only when no
// collection committed after it.
func (e *Engine) checkpoint(inst *Instance) {
	inst.collectMu.Lock()
	defer inst.collectMu.Unlock()
	start := time.Now()
	at := e.stamp().UnixMilli()
	var stats registry.CheckpointStats
	err := atomicfile.WriteUnsynced(e.checkpointFile(inst.Tenant), func(w io.Writer) (err error) {
		stats, err = inst.Registry.WriteCheckpoint(w, at)
		return err
	})
	checkpointDuration.WithLabelValues(inst.Tenant).Observe(time.Since(start).Seconds())
	if err != nil {
		checkpointFailures.WithLabelValues(inst.Tenant).Inc()
		if !inst.checkpointFailing {
			e.logger.Warn("could not save the registry checkpoint; until it works again a crash loses up to collection_interval of counts instead of checkpoint_interval (free space in data_dir?)",
				"tenant", inst.Tenant, "err", err)
		}
		inst.checkpointFailing = true
		return
	}
	if inst.checkpointFailing {
		e.logger.Info("registry checkpoint saved again", "tenant", inst.Tenant)
		inst.checkpointFailing = false
	}
	checkpointSeries.WithLabelValues(inst.Tenant).Set(float64(stats.Series))
}

// restoreCheckpoint brings back what a tenant counted between its last
// collection and a crash. After a clean stop the checkpoint is older than
// the last collection and is ignored.
func (e *Engine) restoreCheckpoint(inst *Instance) {
	path := e.checkpointFile(inst.Tenant)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil {
		defer f.Close()
		start := time.Now()
		var stats registry.CheckpointStats
		stats, err = inst.Registry.RestoreCheckpoint(f, inst.Store.NewestSample())
		switch {
		case err != nil:
		case stats.Stale:
			e.logger.Debug("registry checkpoint older than the last collection: nothing to restore", "tenant", inst.Tenant)
			return
		default:
			e.logger.Info("restored the series counted between the last collection and a crash from the registry checkpoint",
				"tenant", inst.Tenant, "series", stats.Series, "skipped_changed_or_over_limits", stats.Skipped,
				"took", time.Since(start).Round(time.Millisecond))
			return
		}
	}
	e.logger.Warn("registry checkpoint unreadable: what was counted between the last collection and the crash is lost; the series go on from the store",
		"tenant", inst.Tenant, "file", path, "err", err)
}

// forgetCheckpointMetrics drops a closed tenant's checkpoint series.
func forgetCheckpointMetrics(tenant string) {
	checkpointDuration.DeleteLabelValues(tenant)
	checkpointSeries.DeleteLabelValues(tenant)
	checkpointFailures.DeleteLabelValues(tenant)
}
