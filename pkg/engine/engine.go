// Package engine wires the receiver, the processors, the registries and the
// stores of every tenant, and runs the collection loop. It is the library
// both front doors share: the standalone server and the Grafana plugin.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/limits"
	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/receiver"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/remotewrite"
	"github.com/spangraph/spangraph/pkg/servicegraph"
	"github.com/spangraph/spangraph/pkg/spanmetrics"
	"github.com/spangraph/spangraph/pkg/store"
)

var (
	collectionDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "spangraph_collection_duration_seconds",
		Help:    "Time to write one tenant's series into its store.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
	}, []string{"tenant"})
	collectionFailures = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spangraph_collection_failures_total",
		Help: "Collections that could not be committed to the store.",
	}, []string{"tenant"})
	activeSeries = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spangraph_registry_active_series",
		Help: "Active series of a tenant (a histogram counts once).",
	}, []string{"tenant"})
	overflowed = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spangraph_registry_overflowed_updates",
		Help: "Updates folded into overflow series because max_active_series was reached.",
	}, []string{"tenant"})
)

// Instance is everything one tenant has.
type Instance struct {
	Tenant       string
	Registry     *registry.Registry
	SpanMetrics  *spanmetrics.Processor
	ServiceGraph *servicegraph.Processor
	Store        *store.Store
	// RemoteWrite is nil without remote_write endpoints.
	RemoteWrite *remotewrite.Writer

	lastCollection atomic.Int64 // unix ms
}

// LastCollection returns the time of the last successful collection.
func (i *Instance) LastCollection() time.Time {
	ms := i.lastCollection.Load()
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// Engine is one Spangraph process's pipeline.
type Engine struct {
	cfg      config.Config
	logger   *slog.Logger
	promReg  prometheus.Registerer
	receiver *receiver.Receiver
	auth     *auth.Authenticator

	mu      sync.RWMutex
	tenants map[string]*Instance

	// collectMu is held around each collection, so that remote write can
	// switch from catching up to live shipping between two collections.
	collectMu   sync.Mutex
	lastCollect time.Time // guarded by collectMu

	stop    chan struct{}
	loops   sync.WaitGroup
	stopped atomic.Bool
}

// New builds an engine from a validated config. promReg receives the
// stores' own metrics; it may be nil.
func New(cfg config.Config, logger *slog.Logger, promReg prometheus.Registerer) (*Engine, error) {
	err := cfg.Validate()
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:     cfg,
		logger:  logger,
		promReg: promReg,
		tenants: map[string]*Instance{},
		stop:    make(chan struct{}),
	}
	rc := cfg.Receiver
	rc.GRPCAddr, rc.HTTPAddr = cfg.OTLPGRPC, cfg.OTLPHTTP
	if rc.Auth, err = auth.New(cfg.Auth); err != nil {
		return nil, err
	}
	if rc.Limits, err = limits.New(cfg.Limits); err != nil {
		return nil, err
	}
	e.auth = rc.Auth
	r, err := receiver.New(rc, e, logger.With("component", "receiver"))
	if err != nil {
		return nil, err
	}
	e.receiver = r
	return e, nil
}

// Authenticator returns the tenants' credentials (nil when auth is off),
// for the query API.
func (e *Engine) Authenticator() *auth.Authenticator { return e.auth }

// Receiver returns the OTLP receiver (for its HTTP handler and addresses).
func (e *Engine) Receiver() *receiver.Receiver { return e.receiver }

// Config returns the engine's config.
func (e *Engine) Config() config.Config { return e.cfg }

// Start opens the stores of the tenants found on disk, so that their data
// is queryable at once, then starts the receiver and the collection loop.
func (e *Engine) Start() error {
	if err := store.CheckDataDir(e.cfg.DataDir); err != nil {
		return err
	}
	tenants, err := store.ListTenants(e.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data_dir %s: %w", e.cfg.DataDir, err)
	}
	for _, t := range tenants {
		if _, err := e.instance(t); err != nil {
			return err
		}
	}
	if err := e.receiver.Start(); err != nil {
		e.closeStores()
		return err
	}
	e.loops.Add(2)
	go e.every(e.cfg.CollectionInterval, e.collectAll)
	// Service-graph edges whose wait is over are settled every second;
	// each call only touches what is due.
	go e.every(time.Second, e.expireAll)
	return nil
}

// Stop stops taking spans, processes what was queued, writes a last
// collection and closes the stores.
func (e *Engine) Stop(ctx context.Context) {
	if e.stopped.Swap(true) {
		return
	}
	e.receiver.Stop(ctx)
	close(e.stop)
	e.loops.Wait()
	// Edges still waiting for their other half are saved, to wait on
	// after the next start; if they cannot be, they are settled now
	// (virtual or unpaired) rather than lost with the process.
	for _, inst := range e.instances() {
		if inst.ServiceGraph != nil {
			e.savePending(inst)
		}
	}
	e.collectAll()
	e.closeStores()
}

// pendingFile is where a tenant's waiting half edges are kept between a
// stop and the next start.
func (e *Engine) pendingFile(tenant string) string {
	return filepath.Join(store.Dir(e.cfg.DataDir, tenant), "servicegraph-pending")
}

func (e *Engine) savePending(inst *Instance) {
	start := time.Now()
	n, err := inst.ServiceGraph.SaveFile(e.pendingFile(inst.Tenant))
	if err != nil {
		e.logger.Error("could not save the half edges waiting for their other side; settling them now as virtual or unpaired", "tenant", inst.Tenant, "err", err)
		inst.ServiceGraph.Flush()
		return
	}
	if n > 0 {
		e.logger.Info("saved half edges waiting for their other side; they wait on after the next start", "tenant", inst.Tenant, "edges", n, "took", time.Since(start).Round(time.Millisecond))
	}
}

func (e *Engine) restorePending(inst *Instance) {
	start := time.Now()
	restored, dropped, err := inst.ServiceGraph.RestoreFile(e.pendingFile(inst.Tenant))
	if err != nil {
		e.logger.Warn("half edges saved at the last stop could not be restored; they are lost, the service graph goes on without them", "tenant", inst.Tenant, "err", err)
		return
	}
	if restored > 0 || dropped > 0 {
		e.logger.Info("restored half edges saved at the last stop", "tenant", inst.Tenant, "edges", restored, "dropped_store_full", dropped, "took", time.Since(start).Round(time.Millisecond))
	}
}

func (e *Engine) closeStores() {
	e.mu.Lock()
	defer e.mu.Unlock()
	// Writers flush (up to their deadline each, so in parallel) before
	// their stores close under them.
	var wg sync.WaitGroup
	for _, inst := range e.tenants {
		if inst.RemoteWrite != nil {
			wg.Add(1)
			go func() { defer wg.Done(); inst.RemoteWrite.Stop() }()
		}
	}
	wg.Wait()
	for _, inst := range e.tenants {
		if err := inst.Store.Close(); err != nil {
			e.logger.Error("closing store", "tenant", inst.Tenant, "err", err)
		}
	}
}

// Admit makes sure the tenant's pipeline exists before the receiver
// accepts its spans, so that a failure is the sender's error, not a loss.
func (e *Engine) Admit(tenant string) error {
	_, err := e.instance(tenant)
	return err
}

// Consume feeds a batch to the tenant's processors.
func (e *Engine) Consume(tenant string, b *otlp.Batch) {
	inst, err := e.instance(tenant)
	if err != nil {
		// Admit succeeded for this tenant, so this cannot happen short of
		// a store closed under us at shutdown.
		e.logger.Error("dropping batch", "tenant", tenant, "spans", b.SpanCount, "err", err)
		return
	}
	if inst.SpanMetrics != nil {
		inst.SpanMetrics.Push(b)
	}
	if inst.ServiceGraph != nil {
		inst.ServiceGraph.Push(b)
	}
}

// ErrTooManyTenants is returned when max_tenants is reached.
var ErrTooManyTenants = errors.New("max_tenants reached")

func (e *Engine) instance(tenant string) (*Instance, error) {
	e.mu.RLock()
	inst := e.tenants[tenant]
	e.mu.RUnlock()
	if inst != nil {
		return inst, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if inst := e.tenants[tenant]; inst != nil {
		return inst, nil
	}
	if e.stopped.Load() {
		return nil, errors.New("engine is stopping")
	}
	if len(e.tenants) >= e.cfg.MaxTenants {
		return nil, fmt.Errorf("%w (%d): tenant %q refused", ErrTooManyTenants, e.cfg.MaxTenants, tenant)
	}
	inst, err := e.newInstance(tenant)
	if err != nil {
		return nil, err
	}
	e.tenants[tenant] = inst
	return inst, nil
}

func (e *Engine) newInstance(tenant string) (*Instance, error) {
	st, err := store.Open(e.cfg.DataDir, tenant, store.Options{
		Retention:    e.cfg.Retention,
		MaxExemplars: e.cfg.MaxExemplars,
	}, e.logger.With("component", "store"), e.promReg)
	if err != nil {
		return nil, err
	}
	reg := registry.New(e.cfg.Registry)
	inst := &Instance{Tenant: tenant, Registry: reg, Store: st}
	if e.cfg.SpanMetrics.Enabled {
		if inst.SpanMetrics, err = spanmetrics.New(e.cfg.SpanMetrics, reg); err != nil {
			_ = st.Close()
			return nil, err
		}
	}
	if e.cfg.ServiceGraph.Enabled {
		if inst.ServiceGraph, err = servicegraph.New(e.cfg.ServiceGraph, reg, servicegraph.Options{Tenant: tenant}); err != nil {
			_ = st.Close()
			return nil, err
		}
		e.restorePending(inst)
		if e.promReg != nil {
			// The processor reports its edge store itself, labelled with
			// its tenant.
			if err := e.promReg.Register(inst.ServiceGraph); err != nil {
				e.logger.Warn("service graph self-metrics not registered", "tenant", tenant, "err", err)
			}
		}
	}
	if len(e.cfg.RemoteWrite) > 0 {
		// Remote write switches from catching up to live shipping between
		// two collections, hence the collection lock.
		rw, err := remotewrite.New(e.cfg.RemoteWrite, tenant, st, &e.collectMu, e.logger.With("component", "remote_write"), e.promReg, remotewrite.Options{})
		if err != nil {
			_ = st.Close()
			return nil, err
		}
		rw.Start(context.Background())
		inst.RemoteWrite = rw
	}
	return inst, nil
}

// Tenant returns a tenant's instance, or nil when it has no data.
func (e *Engine) Tenant(tenant string) *Instance {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.tenants[tenant]
}

// Tenants returns the tenant ids, sorted.
func (e *Engine) Tenants() []string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]string, 0, len(e.tenants))
	for t := range e.tenants {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Queryable returns the store of a tenant for reading; a tenant without
// data reads as empty rather than as an error, as in Prometheus.
func (e *Engine) Queryable(tenant string) (storage.Queryable, storage.ExemplarQueryable) {
	if inst := e.Tenant(tenant); inst != nil {
		return inst.Store, inst.Store
	}
	return emptyQueryable{}, emptyQueryable{}
}

type emptyQueryable struct{}

func (emptyQueryable) Querier(int64, int64) (storage.Querier, error) {
	return storage.NoopQuerier(), nil
}

func (emptyQueryable) ExemplarQuerier(context.Context) (storage.ExemplarQuerier, error) {
	return noExemplars{}, nil
}

type noExemplars struct{}

func (noExemplars) Select(int64, int64, ...[]*labels.Matcher) ([]exemplar.QueryResult, error) {
	return nil, nil
}

// every runs f every d until the engine stops.
func (e *Engine) every(d time.Duration, f func()) {
	defer e.loops.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			f()
		}
	}
}

func (e *Engine) expireAll() {
	for _, inst := range e.instances() {
		if inst.ServiceGraph != nil {
			inst.ServiceGraph.Expire()
		}
	}
}

func (e *Engine) instances() []*Instance {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]*Instance, 0, len(e.tenants))
	for _, inst := range e.tenants {
		out = append(out, inst)
	}
	return out
}

// collectAll writes every tenant's series. The timestamp is taken under
// collectMu, not from the ticker, so that a collection is never stamped
// before a remote-write switch-over that delayed it.
func (e *Engine) collectAll() {
	e.collectMu.Lock()
	defer e.collectMu.Unlock()
	// Two collections in one millisecond (the last one at shutdown right
	// after a tick, or tests) would write a second, different value at
	// the same timestamp, which the store refuses.
	now := time.Now()
	if now.UnixMilli() <= e.lastCollect.UnixMilli() {
		now = e.lastCollect.Add(time.Millisecond)
	}
	e.lastCollect = now
	for _, inst := range e.instances() {
		e.collect(inst, now)
	}
}

// Collect writes every tenant's series now; tests use it instead of
// waiting for the interval.
func (e *Engine) Collect() { e.collectAll() }

func (e *Engine) collect(inst *Instance, now time.Time) {
	app := inst.Store.Appender(context.Background())
	stats, err := inst.Registry.Collect(app, now)
	if err == nil {
		err = app.Commit()
	} else {
		_ = app.Rollback()
	}
	activeSeries.WithLabelValues(inst.Tenant).Set(float64(stats.ActiveSeries))
	overflowed.WithLabelValues(inst.Tenant).Set(float64(inst.Registry.Overflowed()))
	collectionDuration.WithLabelValues(inst.Tenant).Observe(time.Since(now).Seconds())
	if err != nil {
		collectionFailures.WithLabelValues(inst.Tenant).Inc()
		msg := "collection failed; the series stay in memory and the next collection retries"
		if errors.Is(err, syscall.ENOSPC) {
			msg = "collection failed (full disk?): free space in data_dir; the series stay in memory and the next collection retries"
		}
		e.logger.Error(msg, "tenant", inst.Tenant, "data_dir", e.cfg.DataDir, "err", err)
		return
	}
	inst.lastCollection.Store(now.UnixMilli())
	if inst.RemoteWrite != nil {
		inst.RemoteWrite.Notify()
	}
	e.logger.Debug("collected", "tenant", inst.Tenant, "samples", stats.Samples,
		"active_series", stats.ActiveSeries, "removed", stats.Removed, "took", stats.Duration)
}
