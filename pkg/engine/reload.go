package engine

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/spangraph/spangraph/pkg/config"
)

// Named as Prometheus names its own, so that the same alerts work.
var (
	reloadSuccessful = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spangraph_config_last_reload_successful",
		Help: "Whether the last configuration reload attempt was successful.",
	})
	reloadTimestamp = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spangraph_config_last_reload_success_timestamp_seconds",
		Help: "Timestamp of the last successful configuration reload (or of the start).",
	})
)

// errStopping refuses a reload during a stop.
var errStopping = errors.New("the engine is stopping")

// liveConfig is the config in force: the one the engine was built with,
// or the last one reloaded. Tenants opened later take their processors,
// limits and remote write from it.
func (e *Engine) liveConfig() *config.Config { return e.live.Load() }

// Reload applies next to the running engine: credentials, ingestion
// limits, registry limits, processors and remote-write endpoints. A next
// that fails validation, or changes a key only a restart can apply, is
// refused whole with an error naming the key, and nothing changes.
//
// Listeners and stores stay up. Every open tenant gets a new pipeline
// built from next, between two of its spans' batches: its old registry
// writes a last collection, its series go on in the new one (those whose
// metric keeps its labels and buckets continue without a reset), and its
// waiting half edges move to the new edge store, matched by dimension
// name as across a restart. Spans accepted during the reload are counted
// under the old settings or the new, never lost.
func (e *Engine) Reload(next config.Config) (err error) {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	start := time.Now()
	defer func() { e.reloaded(err, start) }()
	return e.reload(next)
}

// SetConfigSource tells the engine how to read its config again, for
// ReloadConfig: the front door's own loader (file, environment, flags).
func (e *Engine) SetConfigSource(load func() (config.Config, error)) {
	e.reloadMu.Lock()
	e.source = load
	e.reloadMu.Unlock()
}

// ReloadConfig reads the config source again and applies it as Reload
// does; a config that cannot be read (YAML, an unknown key) fails the
// reload the same way.
func (e *Engine) ReloadConfig() (err error) {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	start := time.Now()
	defer func() { e.reloaded(err, start) }()
	if e.source == nil {
		return errors.New("this engine has no config source to read again")
	}
	next, err := e.source()
	if err != nil {
		return err
	}
	return e.reload(next)
}

// reloaded records the outcome of a reload, as Prometheus does.
func (e *Engine) reloaded(err error, start time.Time) {
	if err != nil {
		reloadSuccessful.Set(0)
		e.logger.Error("configuration reload failed; the running configuration stays", "err", err)
		return
	}
	reloadSuccessful.Set(1)
	reloadTimestamp.Set(float64(time.Now().Unix()))
	e.logger.Info("configuration reloaded", "took", time.Since(start).Round(time.Millisecond))
}

func (e *Engine) reload(next config.Config) error {
	if e.stopped.Load() {
		return errStopping
	}
	if err := next.Validate(); err != nil {
		return err
	}
	cur := e.liveConfig()
	if err := cur.CheckReload(&next); err != nil {
		return err
	}
	// Credentials first: reading their files is the last thing that can
	// still refuse the reload before anything changed.
	if err := e.auth.Update(next.Auth); err != nil {
		return err
	}
	if err := e.limits.Update(next.Limits); err != nil {
		return err // validated above; kept for safety
	}
	e.live.Store(&next)
	pipelineChanged := !reflect.DeepEqual(cur.Registry, next.Registry) ||
		!reflect.DeepEqual(cur.SpanMetrics, next.SpanMetrics) ||
		!reflect.DeepEqual(cur.ServiceGraph, next.ServiceGraph) ||
		!reflect.DeepEqual(cur.Overrides, next.Overrides)
	rwChanged := !reflect.DeepEqual(cur.RemoteWrite, next.RemoteWrite)
	if !pipelineChanged && !rwChanged {
		return nil
	}
	insts := e.acquireOpen()
	defer e.releaseAll(insts)
	var errs []error
	for _, inst := range insts {
		if pipelineChanged {
			if err := e.reloadPipeline(inst, &next); err != nil {
				errs = append(errs, fmt.Errorf("tenant %q keeps its processors: %w", inst.Tenant, err))
			}
		}
		if rwChanged {
			if err := e.reloadRemoteWrite(inst, &next); err != nil {
				errs = append(errs, fmt.Errorf("tenant %q: remote write: %w", inst.Tenant, err))
			}
		}
	}
	return errors.Join(errs...)
}

// reloadPipeline replaces a tenant's registry and processors with ones
// built from cfg.
func (e *Engine) reloadPipeline(inst *Instance, cfg *config.Config) error {
	p, err := e.newPipeline(cfg, inst.Tenant, inst.Store)
	if err != nil {
		return err
	}
	inst.pipeMu.Lock()
	defer inst.pipeMu.Unlock()
	inst.collectMu.Lock()
	if !e.collect(inst, e.stamp()) {
		inst.collectMu.Unlock()
		p.close()
		return errors.New("its last collection under the old settings failed (see above)")
	}
	oldSG := inst.ServiceGraph
	if oldSG != nil {
		// Through the file the next start would read, so that a crash
		// during the move loses no more than one would anyway.
		e.savePending(inst)
	}
	moved, err := inst.Registry.MoveTo(p.reg)
	if err != nil {
		// Cannot happen with an in-memory buffer; the new registry
		// starts empty and its series reset, which counts right.
		e.logger.Warn("series not handed to the reloaded registry; they start again with a reset", "tenant", inst.Tenant, "err", err)
	}
	inst.setPipeline(p)
	if p.sg != nil {
		e.restorePending(inst)
	}
	inst.collectMu.Unlock()
	if oldSG != nil {
		if e.promReg != nil {
			e.promReg.Unregister(oldSG)
		}
		oldSG.Close()
	}
	if p.sg != nil {
		e.registerServiceGraph(inst)
	}
	e.logger.Info("tenant's processors rebuilt with the reloaded config", "tenant", inst.Tenant,
		"series_kept", moved.Series, "series_ended_labels_or_buckets_changed", moved.Skipped)
	return nil
}

// close releases a pipeline that never ran.
func (p *pipeline) close() {
	if p.sg != nil {
		p.sg.Close()
	}
	p.reg.Close()
}

// reloadRemoteWrite stops a tenant's remote write and starts it again
// with cfg's endpoints. The old queues flush what they can and save their
// markers; the new ones resume from the markers of endpoints they share
// with the old, and catch up from the store.
func (e *Engine) reloadRemoteWrite(inst *Instance, cfg *config.Config) error {
	inst.pipeMu.Lock()
	inst.collectMu.Lock()
	old := inst.RemoteWrite
	inst.RemoteWrite = nil
	inst.collectMu.Unlock()
	inst.pipeMu.Unlock()
	if old != nil {
		// Not under the collection lock: a queue switching to live
		// shipping takes it.
		old.Stop()
	}
	rw, err := e.openRemoteWrite(cfg, inst)
	inst.pipeMu.Lock()
	inst.collectMu.Lock()
	inst.RemoteWrite = rw
	inst.collectMu.Unlock()
	inst.pipeMu.Unlock()
	return err
}
