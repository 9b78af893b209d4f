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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/budget"
	"github.com/spangraph/spangraph/pkg/cluster"
	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/limits"
	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/receiver"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/remotewrite"
	"github.com/spangraph/spangraph/pkg/rolling"
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
	// Rolling is nil when rolling_window is 0.
	Rolling *rolling.Store

	lastCollection atomic.Int64 // unix ms
	slot           *slot
	// collectMu is held around each of this tenant's collections, and by
	// its remote write (at most remotewrite.LockBound) while it switches
	// from catching up to live shipping, so that no collection falls
	// between the two. One tenant's slow endpoint never holds another's.
	collectMu sync.Mutex
	// checkpointFailing: the last checkpoint failed (logged once until
	// one works again); guarded by collectMu.
	checkpointFailing bool
	// pipeMu guards Registry, SpanMetrics, ServiceGraph and RemoteWrite
	// against a reload, which replaces them holding it and collectMu;
	// spans are pushed under its read lock, so none lands in a pipeline
	// being replaced.
	pipeMu sync.RWMutex
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
	// cluster is the ring this instance shards spans over, nil when it
	// runs alone.
	cluster *cluster.Cluster
	auth    *auth.Authenticator
	limits  *limits.Limits
	now     func() time.Time // the clock of idle timeouts; tests move it

	mu         sync.RWMutex
	slots      map[string]*slot        // open tenants, and those being opened or closed
	quarantine map[string]*quarantined // tenants whose store cannot be opened
	closing    bool                    // Stop is closing the stores: no more opens

	// seriesPool, edgePool and rollingPool are memory_limit's shares for
	// active series, waiting half edges and rolling windows, drawn on by
	// every tenant.
	seriesPool, edgePool, rollingPool *budget.Pool

	// collected tells waiters (live streams) that a collection is done.
	collected collected

	// stampMu keeps collection timestamps increasing across tenants.
	stampMu     sync.Mutex
	lastCollect time.Time // guarded by stampMu

	// live is the config in force (see liveConfig); reloadMu serialises
	// reloads and stops.
	live     atomic.Pointer[config.Config]
	reloadMu sync.Mutex
	source   func() (config.Config, error) // see SetConfigSource; guarded by reloadMu

	stop    chan struct{}
	loops   sync.WaitGroup
	started atomic.Bool
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
		cfg:         cfg,
		logger:      logger,
		promReg:     promReg,
		now:         time.Now,
		slots:       map[string]*slot{},
		quarantine:  map[string]*quarantined{},
		stop:        make(chan struct{}),
		seriesPool:  budget.NewPool("memory_limit", budget.Split(cfg.MemoryLimit).Series),
		edgePool:    budget.NewPool("memory_limit", budget.Split(cfg.MemoryLimit).Edges),
		rollingPool: budget.NewPool("memory_limit", budget.Split(cfg.MemoryLimit).Rolling),
	}
	rc := cfg.Receiver
	rc.GRPCAddr, rc.HTTPAddr = cfg.OTLPGRPC, cfg.OTLPHTTP
	if e.auth, err = auth.New(cfg.Auth); err != nil {
		return nil, err
	}
	if e.limits, err = limits.New(cfg.Limits, cfg.Registry.StaleDuration); err != nil {
		return nil, err
	}
	r, err := receiver.New(rc, receiver.Access{Auth: e.auth, Limits: e.limits}, e, logger.With("component", "receiver"))
	if err != nil {
		return nil, err
	}
	if cfg.Cluster.Enabled() {
		// Until it is in the ring it cannot know which traces are its own.
		r.AwaitRouter()
	}
	e.receiver = r
	e.live.Store(&cfg)
	reloadSuccessful.Set(1)
	reloadTimestamp.Set(float64(time.Now().Unix()))
	return e, nil
}

// LimitProcessMemory makes memory_limit the Go runtime's soft limit
// (unless GOMEMLIMIT is set) and logs how the budget is divided. The
// front doors call it once: the limit is the process's, not an engine's.
func (e *Engine) LimitProcessMemory() {
	limit := e.cfg.MemoryLimit
	shares := budget.Split(limit)
	runtime := "GOMEMLIMIT from the environment"
	if budget.SetRuntimeLimit(limit) {
		runtime = "GOMEMLIMIT=" + limit.String()
	}
	e.logger.Info("memory budget", "memory_limit", limit.String(), "runtime", runtime,
		"requests", shares.Requests.String(), "half_edges", shares.Edges.String(),
		"series", shares.Series.String(), "rolling_windows", shares.Rolling.String(), "queries", shares.Queries.String())
}

// Authenticator returns the tenants' credentials (nil when auth is off),
// for the query API.
func (e *Engine) Authenticator() *auth.Authenticator { return e.auth }

// Receiver returns the OTLP receiver (for its HTTP handler and addresses).
func (e *Engine) Receiver() *receiver.Receiver { return e.receiver }

// Config returns the engine's config.
func (e *Engine) Config() config.Config { return *e.liveConfig() }

// Start checks data_dir, then starts the receiver and the collection
// loop. The stores of the tenants found on disk are not opened here: each
// opens on its first span or query, so that a start costs nothing per
// tenant, more tenants than max_tenants may have data, and one damaged
// store stops only its own tenant.
func (e *Engine) Start() error {
	if err := store.CheckDataDir(e.cfg.DataDir); err != nil {
		return err
	}
	tenants, err := store.ListTenants(e.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data_dir %s: %w", e.cfg.DataDir, err)
	}
	e.logger.Info("tenants with a store on disk; each opens on its first span or query", "tenants", len(tenants),
		"max_tenants", e.cfg.MaxTenants, "tenant_idle_timeout", e.cfg.TenantIdleTimeout)
	if err := e.receiver.Start(); err != nil {
		return err
	}
	if err := e.joinRing(); err != nil {
		e.receiver.Stop(context.Background())
		return err
	}
	for _, l := range []struct{ key, addr string }{{"otlp_grpc", e.receiver.GRPCAddr()}, {"otlp_http", e.receiver.HTTPAddr()}} {
		if l.addr != "" && auth.Exposed(l.addr) && !e.auth.Enabled() {
			e.logger.Warn("an OTLP receiver listens beyond this machine with authentication off: anyone who reaches it writes into any tenant; configure auth.tenants or listen on 127.0.0.1",
				l.key, l.addr)
		}
	}
	e.loops.Add(2)
	go e.every(e.cfg.CollectionInterval, e.collectAll)
	// Service-graph edges whose wait is over are settled every second;
	// each call only touches what is due.
	go e.every(time.Second, e.expireAll)
	if e.checkpointing() {
		e.loops.Add(1)
		go e.every(e.cfg.CheckpointInterval, e.checkpointAll)
	}
	if idle := e.cfg.TenantIdleTimeout; idle > 0 {
		e.loops.Add(1)
		go e.every(min(max(idle/4, 100*time.Millisecond), time.Minute), e.evictIdle)
	}
	e.started.Store(true)
	return nil
}

// joinRing makes the instance a member of its ring, when one is
// configured, and lets the receiver route spans by it.
func (e *Engine) joinRing() error {
	if !e.cfg.Cluster.Enabled() {
		return nil
	}
	addr, err := cluster.ForwardAddr(e.cfg.Cluster, e.receiver.GRPCAddr())
	if err != nil {
		return err
	}
	c, err := cluster.New(e.cfg.Cluster, addr, e.logger.With("component", "cluster"), e.promReg)
	if err != nil {
		return err
	}
	e.receiver.SetRouter(c)
	ctx, cancel := context.WithTimeout(context.Background(), ringJoinTimeout)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		return fmt.Errorf("%w (within %s; check cluster.listen, cluster.advertise and that the members in cluster.join can reach this instance's gossip port)", err, ringJoinTimeout)
	}
	e.cluster = c
	e.receiver.StartRouting()
	return nil
}

// ringJoinTimeout bounds the wait to see this instance ACTIVE in its ring.
const ringJoinTimeout = time.Minute

// Ring returns this instance's view of its ring; false when it runs alone.
func (e *Engine) Ring() (cluster.Health, bool) {
	if e.cluster == nil {
		return cluster.Health{}, false
	}
	return e.cluster.Health(), true
}

// Ready says why the engine cannot take spans and queries yet, or any
// more; nil when it can: the data directory checked, the receivers
// listening, the collection loop running, and no stop begun. Tenants'
// stores open on demand, so none has to be open.
func (e *Engine) Ready() error {
	switch {
	case e.stopped.Load():
		return errors.New("stopping: the receivers take no more spans")
	case !e.started.Load():
		return errors.New("starting: the receivers are not listening yet")
	}
	return nil
}

// Stop stops taking spans, processes what was queued, writes a last
// collection and closes the stores.
func (e *Engine) Stop(ctx context.Context) {
	// A reload under way finishes first; later ones are refused.
	e.reloadMu.Lock()
	stopped := e.stopped.Swap(true)
	e.reloadMu.Unlock()
	if stopped {
		return
	}
	if e.cluster != nil {
		// Out of the ring first, so that the others stop forwarding here
		// before the receiver closes: a clean stop refuses nothing they
		// forward. Its own senders are told to retry (elsewhere) at once,
		// since their spans could not be forwarded once it has left.
		e.receiver.Drain()
		if err := e.cluster.Stop(ctx); err != nil {
			e.logger.Warn("leaving the ring did not finish cleanly; the others skip this instance once its heartbeat is cluster.heartbeat_timeout old", "err", err)
		}
	}
	e.receiver.Stop(ctx)
	close(e.stop)
	e.loops.Wait()
	insts := e.closeSlots()
	// Queries still reading finish first (within ctx): none may read a
	// closed store.
	for e.inUse() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	// Edges still waiting for their other half are saved, to wait on
	// after the next start; if they cannot be, they are settled now
	// (virtual or unpaired) rather than lost with the process.
	for _, inst := range insts {
		if inst.ServiceGraph != nil {
			e.savePending(inst)
		}
	}
	e.collectAll()
	e.closeStores(insts)
}

// inUse reports whether an open tenant has a user (a query).
func (e *Engine) inUse() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, s := range e.slots {
		if s.refs.Load() > 0 {
			return true
		}
	}
	return false
}

// closeSlots stops tenants from opening, waits for those being opened or
// closed, and returns the open ones.
func (e *Engine) closeSlots() []*Instance {
	e.mu.Lock()
	e.closing = true
	for {
		var busy chan struct{}
		for _, s := range e.slots {
			if s.state != slotOpen {
				busy = s.done
			}
		}
		if busy == nil {
			break
		}
		e.mu.Unlock()
		<-busy
		e.mu.Lock()
	}
	defer e.mu.Unlock()
	out := make([]*Instance, 0, len(e.slots))
	for _, s := range e.slots {
		out = append(out, s.inst)
	}
	return out
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

func (e *Engine) closeStores(insts []*Instance) {
	// Writers flush (up to their deadline each, so in parallel) before
	// their stores close under them.
	var wg sync.WaitGroup
	for _, inst := range insts {
		if inst.RemoteWrite != nil {
			wg.Add(1)
			go func() { defer wg.Done(); inst.RemoteWrite.Stop() }()
		}
	}
	wg.Wait()
	for _, inst := range insts {
		inst.Rolling.Close() // first: it may be reading the store
		if err := inst.Store.Close(); err != nil {
			e.logger.Error("closing store", "tenant", inst.Tenant, "err", err)
		}
	}
}

// Admit makes sure the tenant's pipeline is open before the receiver
// accepts its spans, so that a failure is the sender's error, not a loss.
// Refusals for max_tenants and quarantine are *TenantError.
func (e *Engine) Admit(tenant string) error {
	inst, err := e.acquire(tenant, forSpans)
	if err != nil {
		return err
	}
	e.release(inst)
	return nil
}

// Consume feeds a batch to the tenant's processors.
func (e *Engine) Consume(tenant string, b *otlp.Batch) {
	inst, err := e.acquire(tenant, forAccepted)
	if err != nil {
		// Admit succeeded for this tenant; its store has since been
		// closed for being idle and cannot be opened again.
		e.logger.Error("dropping batch", "tenant", tenant, "spans", b.SpanCount, "err", err)
		return
	}
	defer e.release(inst)
	inst.pipeMu.RLock()
	defer inst.pipeMu.RUnlock()
	if inst.SpanMetrics != nil {
		inst.SpanMetrics.Push(b)
	}
	if inst.ServiceGraph != nil {
		inst.ServiceGraph.Push(b)
	}
}

func (e *Engine) newInstance(tenant string) (*Instance, error) {
	st, err := store.Open(e.cfg.DataDir, tenant, store.Options{
		Retention:    e.cfg.Retention,
		MaxExemplars: e.cfg.MaxExemplars,
	}, e.logger.With("component", "store"), e.promReg)
	if err != nil {
		return nil, err
	}
	cfg := e.liveConfig()
	inst := &Instance{Tenant: tenant, Store: st}
	p, err := e.newPipeline(cfg, tenant, st)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	inst.setPipeline(p)
	if inst.ServiceGraph != nil {
		e.restorePending(inst)
		e.registerServiceGraph(inst)
	}
	// Every metric is registered now: restore what a crash interrupted.
	e.restoreCheckpoint(inst)
	if inst.RemoteWrite, err = e.openRemoteWrite(cfg, inst); err != nil {
		_ = st.Close()
		return nil, err
	}
	// Last: it reads the store in the background until the tenant closes.
	e.openRolling(inst)
	return inst, nil
}

// pipeline is what a tenant's spans go through, rebuilt by a reload.
type pipeline struct {
	reg *registry.Registry
	sm  *spanmetrics.Processor // nil when span metrics are off
	sg  *servicegraph.Processor
}

// newPipeline builds a tenant's registry and processors from cfg and the
// tenant's overrides.
func (e *Engine) newPipeline(cfg *config.Config, tenant string, st *store.Store) (*pipeline, error) {
	p := &pipeline{reg: registry.New(cfg.Registry)}
	p.reg.UsePool(e.seriesPool)
	// A series reborn after a restart, an idle close or a reload gets its
	// leading zero after its last stored sample, so that the reset shows.
	p.reg.SetZeroFloor(st.NewestSample())
	var err error
	smCfg, sgCfg := cfg.Processors(tenant)
	if smCfg.Enabled {
		if p.sm, err = spanmetrics.New(smCfg, p.reg); err != nil {
			p.reg.Close()
			return nil, err
		}
	}
	if sgCfg.Enabled {
		if p.sg, err = servicegraph.New(sgCfg, p.reg, servicegraph.Options{Tenant: tenant, Pool: e.edgePool}); err != nil {
			p.reg.Close()
			return nil, err
		}
	}
	return p, nil
}

// setPipeline makes p the instance's; a reload calls it under both of
// the instance's locks.
func (i *Instance) setPipeline(p *pipeline) {
	i.Registry, i.SpanMetrics, i.ServiceGraph = p.reg, p.sm, p.sg
}

// registerServiceGraph lets the tenant's edge store report itself,
// labelled with its tenant.
func (e *Engine) registerServiceGraph(inst *Instance) {
	if e.promReg == nil {
		return
	}
	if err := e.promReg.Register(inst.ServiceGraph); err != nil {
		e.logger.Warn("service graph self-metrics not registered", "tenant", inst.Tenant, "err", err)
	}
}

// openRemoteWrite starts a tenant's remote write to cfg's endpoints; nil
// without endpoints. It switches from catching up to live shipping
// between two collections, hence the collection lock.
func (e *Engine) openRemoteWrite(cfg *config.Config, inst *Instance) (*remotewrite.Writer, error) {
	if len(cfg.RemoteWrite) == 0 {
		return nil, nil
	}
	rw, err := remotewrite.Open(cfg.RemoteWrite, inst.Tenant, inst.Store, remotewrite.Options{
		Lock: &inst.collectMu, Logger: e.logger.With("component", "remote_write"), Registerer: e.promReg,
	})
	if err != nil {
		return nil, err
	}
	rw.Start(context.Background())
	return rw, nil
}

// Tenant returns a tenant's instance, or nil when it is not open (see
// TenantStatus).
func (e *Engine) Tenant(tenant string) *Instance {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if s := e.slots[tenant]; s != nil && s.state == slotOpen {
		return s.inst
	}
	return nil
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
	insts := e.acquireOpen()
	defer e.releaseAll(insts)
	for _, inst := range insts {
		inst.pipeMu.RLock()
		if inst.ServiceGraph != nil {
			inst.ServiceGraph.Expire()
		}
		inst.pipeMu.RUnlock()
	}
}

// acquireOpen returns the open instances with a reference each, so that
// none closes while a loop works on it.
func (e *Engine) acquireOpen() []*Instance {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]*Instance, 0, len(e.slots))
	for _, s := range e.slots {
		if s.state == slotOpen {
			s.refs.Add(1)
			out = append(out, s.inst)
		}
	}
	return out
}

func (e *Engine) releaseAll(insts []*Instance) {
	for _, inst := range insts {
		e.release(inst)
	}
}

// collectAll writes every tenant's series, each under its own lock and in
// its own goroutine, so that a tenant whose remote write holds its lock
// delays no other.
func (e *Engine) collectAll() {
	insts := e.acquireOpen()
	defer e.releaseAll(insts)
	var wg sync.WaitGroup
	for _, inst := range insts {
		wg.Go(func() { e.collectTenant(inst) })
	}
	wg.Wait()
	e.collected.notify()
}

// collectTenant writes one tenant's series under its collection lock. The
// timestamp is taken under the lock, not before, so that a collection is
// never stamped before a remote-write switch-over that delayed it.
func (e *Engine) collectTenant(inst *Instance) bool {
	inst.collectMu.Lock()
	defer inst.collectMu.Unlock()
	now := e.stamp()
	if inst.RemoteWrite != nil {
		// The queue's WAL reader skips samples older than where it
		// started: leading zeros go after that, when there is room.
		if from := inst.RemoteWrite.ShipsFrom(); from < now.UnixMilli() {
			inst.Registry.SetZeroFloor(from - 1)
		}
	}
	return e.collect(inst, now)
}

// stamp returns the timestamp of a collection. Two collections in one
// millisecond (the last one at shutdown right after a tick, an idle
// tenant's last one, or tests) would write a second, different value at
// the same timestamp, which the store refuses.
func (e *Engine) stamp() time.Time {
	e.stampMu.Lock()
	defer e.stampMu.Unlock()
	now := time.Now()
	if now.UnixMilli() <= e.lastCollect.UnixMilli() {
		now = e.lastCollect.Add(time.Millisecond)
	}
	e.lastCollect = now
	return now
}

// Collect writes every tenant's series now; tests use it instead of
// waiting for the interval.
func (e *Engine) Collect() { e.collectAll() }

// collect writes one tenant's series and reports whether they were
// committed.
func (e *Engine) collect(inst *Instance, now time.Time) bool {
	app := e.appender(inst, now)
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
		return false
	}
	inst.lastCollection.Store(now.UnixMilli())
	if inst.RemoteWrite != nil {
		inst.RemoteWrite.Notify()
	}
	e.logger.Debug("collected", "tenant", inst.Tenant, "samples", stats.Samples,
		"active_series", stats.ActiveSeries, "removed", stats.Removed, "took", stats.Duration)
	return true
}
