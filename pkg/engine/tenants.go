package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/spangraph/spangraph/pkg/receiver"
	"github.com/spangraph/spangraph/pkg/store"
)

// A tenant's life: opened on its first span or query (a query only opens
// a tenant that has a store on disk), closed when it has been idle for
// tenant_idle_timeout, opened again on demand. Only open tenants count
// against max_tenants. A store that cannot be opened quarantines its
// tenant instead of stopping the process.

var (
	tenantsOpen = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spangraph_tenants_open",
		Help: "Tenants whose store is open (at most max_tenants, save for spans accepted just before their tenant closed).",
	})
	tenantsClosed = promauto.NewCounter(prometheus.CounterOpts{
		Name: "spangraph_tenants_closed_idle_total",
		Help: "Tenants closed after tenant_idle_timeout without spans or queries; they reopen on demand.",
	})
	tenantQuarantined = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spangraph_tenant_quarantined",
		Help: "1 for a tenant whose store cannot be opened: its spans and queries are refused until `spangraph repair --tenant <id>` moves the damaged parts aside. The log says which file failed.",
	}, []string{"tenant"})
)

// ErrTooManyTenants is returned when max_tenants is reached.
var ErrTooManyTenants = errors.New("max_tenants reached")

// ErrQuarantined is returned for a tenant whose store cannot be opened.
var ErrQuarantined = errors.New("tenant quarantined")

// quarantineRetry is how often a quarantined tenant is tried again when
// nothing changed in its directory, for causes outside the store (a full
// disk, permissions) that go away by themselves.
const quarantineRetry = time.Minute

// TenantError refuses a tenant. It chooses the sender's answer (it is a
// receiver.Refusal), from the OTLP specification's retry rules:
//   - max_tenants: HTTP 429 with Retry-After / gRPC ResourceExhausted with
//     RetryInfo, retryable: a place frees when an open tenant has been
//     idle for tenant_idle_timeout, and Retry-After says when the first
//     one can (5 s to 60 s).
//   - quarantined with damage found: HTTP 500 / gRPC Internal, which OTLP
//     exporters do not retry: nothing changes until someone runs the
//     repair the message names, and retries would only fill the senders'
//     queues. (4xx would blame the request, which is fine.)
//   - quarantined with no damage found (the cause may be a full disk or
//     permissions and may pass): HTTP 503 / gRPC Unavailable with
//     Retry-After, retryable, until the next attempt to open the store.
type TenantError struct {
	Tenant     string
	kind       error
	retryAfter time.Duration
	msg        string
}

func (e *TenantError) Error() string { return e.msg }

// Unwrap returns ErrTooManyTenants or ErrQuarantined.
func (e *TenantError) Unwrap() error { return e.kind }

// HTTPStatus is the OTLP/HTTP status to answer.
func (e *TenantError) HTTPStatus() int {
	switch {
	case e.kind == ErrTooManyTenants:
		return http.StatusTooManyRequests
	case e.retryAfter > 0:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// RetryAfterHeader is the Retry-After value in seconds, "" when retrying
// cannot help.
func (e *TenantError) RetryAfterHeader() string {
	if e.retryAfter <= 0 {
		return ""
	}
	return strconv.FormatInt(int64((e.retryAfter+time.Second-1)/time.Second), 10)
}

// GRPCStatus is the OTLP/gRPC answer (grpc-go asks through
// status.FromError).
func (e *TenantError) GRPCStatus() *status.Status {
	code := codes.Internal
	switch {
	case e.kind == ErrTooManyTenants:
		code = codes.ResourceExhausted
	case e.retryAfter > 0:
		code = codes.Unavailable
	}
	st := status.New(code, e.msg)
	if e.retryAfter > 0 {
		// OTLP exporters retry ResourceExhausted only with RetryInfo.
		if withInfo, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(e.retryAfter)}); err == nil {
			return withInfo
		}
	}
	return st
}

// RefusalReason is the receiver's self-metric reason.
func (e *TenantError) RefusalReason() string {
	if e.kind == ErrTooManyTenants {
		return "too_many_tenants"
	}
	return "tenant_quarantined"
}

var _ receiver.Refusal = (*TenantError)(nil)

type slotState int

const (
	slotOpening slotState = iota
	slotOpen
	slotClosing
)

// slot is a tenant that is open, or being opened or closed.
type slot struct {
	tenant string
	state  slotState     // guarded by Engine.mu
	done   chan struct{} // closed when opening or closing ends; guarded by Engine.mu
	inst   *Instance     // set when open

	// refs counts users of the open instance (a batch being pushed, a
	// querier, a collection); it is taken under Engine.mu read-locked, and
	// eviction, holding Engine.mu, only takes slots without any.
	refs     atomic.Int64
	lastUsed atomic.Int64 // unix ns of the last span or query
}

type quarantined struct {
	err     *TenantError
	since   time.Time
	stamp   string    // store.ChangeStamp after the failure
	checked time.Time // when stamp was last compared
}

type openMode int

const (
	// forSpans creates the tenant, within max_tenants.
	forSpans openMode = iota
	// forAccepted is for spans already accepted: they must land, even
	// past max_tenants (their tenant closed between admission and
	// processing, which takes an idle timeout shorter than the queue).
	forAccepted
	// forRead opens a tenant that has a store on disk, within
	// max_tenants; a tenant without one reads as empty.
	forRead
)

// acquire returns the tenant's open instance, opening it if need be, with
// a reference that release gives back; eviction never closes an instance
// that has one. For forRead, a tenant with no store returns nil, nil.
func (e *Engine) acquire(tenant string, mode openMode) (*Instance, error) {
	for {
		now := e.now()
		e.mu.RLock()
		if s := e.slots[tenant]; s != nil && s.state == slotOpen {
			s.refs.Add(1)
			s.lastUsed.Store(now.UnixNano())
			e.mu.RUnlock()
			return s.inst, nil
		}
		e.mu.RUnlock()
		if mode == forRead && !store.Exists(e.cfg.DataDir, tenant) {
			return nil, nil
		}
		r, err := e.reserve(tenant, mode, now)
		switch {
		case err != nil:
			return nil, err
		case r.inst != nil:
			return r.inst, nil
		case len(r.victims) > 0:
			e.evict(r.victims)
		case r.wait != nil:
			<-r.wait
		default:
			return e.open(r.opening, now)
		}
	}
}

// reservation is what reserve decided: use inst, or evict victims and
// try again, or wait and try again, or open the slot opening.
type reservation struct {
	inst    *Instance
	victims []*slot
	wait    <-chan struct{}
	opening *slot
}

func (e *Engine) reserve(tenant string, mode openMode, now time.Time) (reservation, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.slots[tenant]; s != nil {
		if s.state == slotOpen {
			s.refs.Add(1)
			s.lastUsed.Store(now.UnixNano())
			return reservation{inst: s.inst}, nil
		}
		return reservation{wait: s.done}, nil
	}
	if e.closing {
		return reservation{}, errors.New("engine is stopping")
	}
	if q := e.quarantine[tenant]; q != nil && !e.retryDue(tenant, q, now) {
		return reservation{}, q.err
	}
	if mode != forAccepted && len(e.slots) >= e.cfg.MaxTenants {
		// Make room by closing the tenant idle the longest, if one is
		// idle enough; else wait for one being closed; else refuse.
		if victims := e.markIdle(now, 1); len(victims) > 0 {
			return reservation{victims: victims}, nil
		}
		for _, s := range e.slots {
			if s.state == slotClosing {
				return reservation{wait: s.done}, nil
			}
		}
		return reservation{}, e.tooMany(tenant, now)
	}
	s := &slot{tenant: tenant, state: slotOpening, done: make(chan struct{})}
	e.slots[tenant] = s
	return reservation{opening: s}, nil
}

// open opens the store of a slot reserve created, outside Engine.mu (a WAL
// replay takes a while; other tenants go on meanwhile).
func (e *Engine) open(s *slot, now time.Time) (*Instance, error) {
	start := time.Now()
	inst, err := e.newInstance(s.tenant)
	e.mu.Lock()
	defer e.mu.Unlock()
	defer close(s.done)
	if err != nil {
		delete(e.slots, s.tenant)
		var oe *store.OpenError
		if !errors.As(err, &oe) {
			return nil, err
		}
		return nil, e.quarantineLocked(oe, now)
	}
	inst.slot = s
	s.inst = inst
	s.state = slotOpen
	s.refs.Add(1)
	s.lastUsed.Store(now.UnixNano())
	if _, ok := e.quarantine[s.tenant]; ok {
		delete(e.quarantine, s.tenant)
		tenantQuarantined.DeleteLabelValues(s.tenant)
		e.logger.Info("quarantined tenant opens again", "tenant", s.tenant)
	}
	e.setOpenGauge()
	e.logger.Debug("tenant open", "tenant", s.tenant, "took", time.Since(start).Round(time.Millisecond))
	return inst, nil
}

func (e *Engine) quarantineLocked(oe *store.OpenError, now time.Time) *TenantError {
	te := &TenantError{Tenant: oe.Tenant, kind: ErrQuarantined,
		msg: fmt.Sprintf("tenant %q is quarantined, its spans and queries are refused: %v", oe.Tenant, oe)}
	if len(oe.Damage) == 0 {
		te.retryAfter = quarantineRetry
	}
	e.quarantine[oe.Tenant] = &quarantined{err: te, since: now, checked: now, stamp: store.ChangeStamp(e.cfg.DataDir, oe.Tenant)}
	tenantQuarantined.WithLabelValues(oe.Tenant).Set(1)
	damaged := make([]string, len(oe.Damage))
	for i, d := range oe.Damage {
		damaged[i] = d.String()
	}
	e.logger.Error("tenant store cannot be opened: tenant quarantined, the others go on; its spans and queries are refused until the repair",
		"tenant", oe.Tenant, "dir", store.Dir(e.cfg.DataDir, oe.Tenant), "damaged", damaged, "repair", oe.RepairCommand(), "err", oe.Err)
	return te
}

// retryDue says whether a quarantined tenant should be tried again: its
// directory changed (a repair moved something) or a while has passed.
// The directory is looked at once a second at most.
func (e *Engine) retryDue(tenant string, q *quarantined, now time.Time) bool {
	if now.Sub(q.since) >= quarantineRetry {
		return true
	}
	if now.Sub(q.checked) < time.Second {
		return false
	}
	q.checked = now
	return store.ChangeStamp(e.cfg.DataDir, tenant) != q.stamp
}

func (e *Engine) tooMany(tenant string, now time.Time) *TenantError {
	idle := e.cfg.TenantIdleTimeout
	wait := time.Minute
	why := "open tenants are never closed (tenant_idle_timeout is 0): raise max_tenants or set tenant_idle_timeout"
	if idle > 0 {
		for _, s := range e.slots {
			if d := time.Unix(0, s.lastUsed.Load()).Add(idle).Sub(now); d < wait {
				wait = d
			}
		}
		wait = min(max(wait, 5*time.Second), time.Minute)
		why = fmt.Sprintf("no open tenant has been idle for tenant_idle_timeout (%s) yet: retry in %s, or raise max_tenants", idle, wait.Round(time.Second))
	}
	return &TenantError{Tenant: tenant, kind: ErrTooManyTenants, retryAfter: wait,
		msg: fmt.Sprintf("max_tenants (%d) reached, tenant %q refused; %s", e.cfg.MaxTenants, tenant, why)}
}

// release gives back a reference acquire took.
func (e *Engine) release(inst *Instance) { inst.slot.refs.Add(-1) }

// markIdle marks up to n open tenants idle for tenant_idle_timeout and
// unused as closing, those idle the longest first, and returns them for
// evict. Engine.mu must be held.
func (e *Engine) markIdle(now time.Time, n int) []*slot {
	idle := e.cfg.TenantIdleTimeout
	if idle <= 0 {
		return nil
	}
	var out []*slot
	for _, s := range e.slots {
		if s.state == slotOpen && s.refs.Load() == 0 && now.Sub(time.Unix(0, s.lastUsed.Load())) >= idle {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].lastUsed.Load() < out[j].lastUsed.Load() })
	if len(out) > n {
		out = out[:n]
	}
	for _, s := range out {
		s.state = slotClosing
		s.done = make(chan struct{})
	}
	return out
}

// evictIdle closes every tenant idle for tenant_idle_timeout.
func (e *Engine) evictIdle() {
	e.mu.Lock()
	victims := e.markIdle(e.now(), len(e.slots))
	e.mu.Unlock()
	e.evict(victims)
}

// evict closes slots markIdle marked. A tenant whose last collection
// fails stays open, so that its series are not lost with it.
func (e *Engine) evict(victims []*slot) {
	for _, s := range victims {
		closed := e.closeIdle(s.inst)
		e.mu.Lock()
		if closed {
			delete(e.slots, s.tenant)
		} else {
			s.state = slotOpen
			s.lastUsed.Store(e.now().UnixNano())
		}
		close(s.done)
		e.setOpenGauge()
		e.mu.Unlock()
	}
}

// closeIdle writes a last collection, saves the waiting half edges, stops
// remote write, closes the store and forgets the tenant's self-metric
// series. The TSDB head is not compacted: its WAL brings it back when the
// tenant reopens.
func (e *Engine) closeIdle(inst *Instance) bool {
	start := time.Now()
	series := inst.Store.HeadSeries()
	if inst.ServiceGraph != nil {
		e.savePending(inst)
	}
	ok := e.collectTenant(inst)
	if !ok {
		if inst.ServiceGraph != nil {
			e.restorePending(inst)
		}
		e.logger.Warn("idle tenant kept open: its last collection failed (see above), closing it now would lose its series; tried again after another tenant_idle_timeout",
			"tenant", inst.Tenant)
		return false
	}
	if inst.RemoteWrite != nil {
		inst.RemoteWrite.Stop()
	}
	inst.Rolling.Close() // first: it may be reading the store
	if err := inst.Store.Close(); err != nil {
		e.logger.Error("closing the store of an idle tenant", "tenant", inst.Tenant, "err", err)
	}
	inst.Registry.Close()
	if inst.ServiceGraph != nil {
		inst.ServiceGraph.Close()
		if e.promReg != nil {
			e.promReg.Unregister(inst.ServiceGraph)
		}
	}
	for _, v := range []interface{ DeleteLabelValues(...string) bool }{activeSeries, overflowed, collectionDuration, collectionFailures} {
		v.DeleteLabelValues(inst.Tenant)
	}
	forgetCheckpointMetrics(inst.Tenant)
	receiver.ForgetTenant(inst.Tenant)
	e.limits.Forget(inst.Tenant)
	tenantsClosed.Inc()
	e.logger.Info("idle tenant closed: no spans or queries for tenant_idle_timeout; its memory and its place under max_tenants are free, it reopens on its next span or query",
		"tenant", inst.Tenant, "idle_timeout", e.cfg.TenantIdleTimeout, "series", series, "took", time.Since(start).Round(time.Millisecond))
	return true
}

func (e *Engine) setOpenGauge() {
	n := 0
	for _, s := range e.slots {
		if s.state != slotOpening {
			n++
		}
	}
	tenantsOpen.Set(float64(n))
}

// TenantState is where a tenant is in its life.
type TenantState string

// Tenant states.
const (
	// TenantUnknown: no store on disk and not open.
	TenantUnknown TenantState = ""
	// TenantOpen: its store is open (or being opened or closed).
	TenantOpen TenantState = "open"
	// TenantClosed: its store is on disk, closed; it opens on its next
	// span or query.
	TenantClosed TenantState = "closed"
	// TenantQuarantined: its store cannot be opened; Problem says why
	// and how to repair it.
	TenantQuarantined TenantState = "quarantined"
)

// TenantStatus describes one tenant.
type TenantStatus struct {
	ID    string      `json:"id"`
	State TenantState `json:"state"`
	// Problem is what failed and the repair, for a quarantined tenant.
	Problem string `json:"problem,omitempty"`
}

// TenantStatus returns the state of one tenant.
func (e *Engine) TenantStatus(tenant string) TenantStatus {
	e.mu.RLock()
	_, open := e.slots[tenant]
	q := e.quarantine[tenant]
	e.mu.RUnlock()
	switch {
	case open:
		return TenantStatus{ID: tenant, State: TenantOpen}
	case q != nil:
		return TenantStatus{ID: tenant, State: TenantQuarantined, Problem: q.err.Error()}
	case store.Exists(e.cfg.DataDir, tenant):
		return TenantStatus{ID: tenant, State: TenantClosed}
	}
	return TenantStatus{ID: tenant, State: TenantUnknown}
}

// Tenants returns the ids of every tenant open, quarantined or with a
// store on disk, sorted; TenantStatuses says which is which.
func (e *Engine) Tenants() []string {
	st := e.TenantStatuses()
	out := make([]string, len(st))
	for i, s := range st {
		out[i] = s.ID
	}
	return out
}

// TenantStatuses returns every tenant open, quarantined or with a store on
// disk, sorted by id.
func (e *Engine) TenantStatuses() []TenantStatus {
	onDisk, err := store.ListTenants(e.cfg.DataDir)
	if err != nil {
		e.logger.Warn("listing the tenants on disk", "data_dir", e.cfg.DataDir, "err", err)
	}
	byID := map[string]TenantStatus{}
	for _, t := range onDisk {
		byID[t] = TenantStatus{ID: t, State: TenantClosed}
	}
	e.mu.RLock()
	for t := range e.slots {
		byID[t] = TenantStatus{ID: t, State: TenantOpen}
	}
	for t, q := range e.quarantine {
		byID[t] = TenantStatus{ID: t, State: TenantQuarantined, Problem: q.err.Error()}
	}
	e.mu.RUnlock()
	out := make([]TenantStatus, 0, len(byID))
	for _, s := range byID {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Queryable returns a tenant's store for reading. A tenant with a store on
// disk is opened by the first querier (counting against max_tenants) and
// cannot be closed while a querier is open; a tenant without one reads as
// empty rather than as an error, as in Prometheus.
func (e *Engine) Queryable(tenant string) (storage.Queryable, storage.ExemplarQueryable) {
	q := tenantQueryable{e: e, tenant: tenant}
	return q, q
}

type tenantQueryable struct {
	e      *Engine
	tenant string
}

func (q tenantQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	inst, err := q.e.acquire(q.tenant, forRead)
	if err != nil {
		return nil, err
	}
	if inst == nil {
		return storage.NoopQuerier(), nil
	}
	qr, err := inst.Store.Querier(mint, maxt)
	if err != nil {
		q.e.release(inst)
		return nil, err
	}
	return &releasingQuerier{Querier: qr, release: func() { q.e.release(inst) }}, nil
}

// ExemplarQuerier returns a querier that holds the tenant open during each
// Select: an exemplar querier has no Close to give a reference back.
func (q tenantQueryable) ExemplarQuerier(ctx context.Context) (storage.ExemplarQuerier, error) {
	return tenantExemplars{q: q, ctx: ctx}, nil
}

type tenantExemplars struct {
	q   tenantQueryable
	ctx context.Context
}

func (x tenantExemplars) Select(start, end int64, matchers ...[]*labels.Matcher) ([]exemplar.QueryResult, error) {
	inst, err := x.q.e.acquire(x.q.tenant, forRead)
	if err != nil || inst == nil {
		return nil, err
	}
	defer x.q.e.release(inst)
	eq, err := inst.Store.ExemplarQuerier(x.ctx)
	if err != nil {
		return nil, err
	}
	return eq.Select(start, end, matchers...)
}

// releasingQuerier gives its tenant's reference back when closed, once.
type releasingQuerier struct {
	storage.Querier
	release func()
	closed  atomic.Bool
}

func (q *releasingQuerier) Close() error {
	err := q.Querier.Close()
	if !q.closed.Swap(true) {
		q.release()
	}
	return err
}
