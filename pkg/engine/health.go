package engine

import (
	"sync"
	"time"

	"github.com/spangraph/spangraph/pkg/cluster"
	"github.com/spangraph/spangraph/pkg/remotewrite"
	"github.com/spangraph/spangraph/pkg/servicegraph"
)

// Health is what a health check reports for one tenant: the engine's
// facts, which the front doors (the plugin's CheckHealth, the read API)
// only render.
type Health struct {
	// Receivers are the OTLP listeners that are configured.
	Receivers []Receiver `json:"receivers"`
	// SpansReceived is the number of spans accepted since start, all
	// tenants together.
	SpansReceived int64 `json:"spans_received"`
	// Tenant is the tenant's state: open, closed on disk, quarantined or
	// unknown.
	Tenant TenantStatus `json:"tenant"`
	// Open describes the tenant while it is open; nil otherwise.
	Open *OpenHealth `json:"open,omitempty"`
	// Ring is this instance's view of its ring; nil when it runs alone.
	Ring *cluster.Health `json:"ring,omitempty"`
}

// Receiver is one OTLP listener: the address configured under Key and
// the one bound, "" when it is not listening.
type Receiver struct {
	Name  string `json:"name"`
	Key   string `json:"key"`
	Want  string `json:"want"`
	Bound string `json:"bound"`
}

// OpenHealth is the state of an open tenant.
type OpenHealth struct {
	ActiveSeries int64 `json:"active_series"`
	// LastCollection is zero until the first collection.
	LastCollection time.Time `json:"last_collection"`
	// CollectionLate: no collection for three intervals and more, so
	// writing the store fails (see the log).
	CollectionLate bool `json:"collection_late"`
	// EdgeStore is the service graph's, nil when it is off.
	EdgeStore *servicegraph.Stats `json:"edge_store,omitempty"`
	// RemoteWrite has one entry per endpoint.
	RemoteWrite []remotewrite.EndpointStatus `json:"remote_write,omitempty"`
}

// OK reports whether nothing in h needs a person: every configured
// receiver listens, the tenant is not quarantined, collections run and
// the edge store has dropped nothing. Remote write is judged by its
// renderer, which knows what lag it tolerates.
func (h Health) OK() bool {
	for _, r := range h.Receivers {
		if r.Bound == "" {
			return false
		}
	}
	if h.Tenant.State == TenantQuarantined {
		return false
	}
	if h.Ring != nil && h.Ring.State != "ACTIVE" {
		return false
	}
	if o := h.Open; o != nil && (o.CollectionLate || (o.EdgeStore != nil && o.EdgeStore.Dropped > 0)) {
		return false
	}
	return true
}

// Health returns tenant's health. It never opens the tenant.
func (e *Engine) Health(tenant string) Health {
	h := Health{SpansReceived: e.receiver.Received(), Tenant: e.TenantStatus(tenant)}
	if ring, ok := e.Ring(); ok {
		h.Ring = &ring
	}
	for _, r := range []Receiver{
		{Name: "OTLP gRPC", Key: "otlp_grpc", Want: e.cfg.OTLPGRPC, Bound: e.receiver.GRPCAddr()},
		{Name: "OTLP HTTP", Key: "otlp_http", Want: e.cfg.OTLPHTTP, Bound: e.receiver.HTTPAddr()},
	} {
		if r.Want != "" {
			h.Receivers = append(h.Receivers, r)
		}
	}
	inst := e.Tenant(tenant)
	if inst == nil {
		return h
	}
	inst.pipeMu.RLock()
	defer inst.pipeMu.RUnlock()
	o := &OpenHealth{ActiveSeries: inst.Registry.ActiveSeries(), LastCollection: inst.LastCollection()}
	o.CollectionLate = !o.LastCollection.IsZero() && time.Since(o.LastCollection) > 3*e.cfg.CollectionInterval+time.Second
	if inst.ServiceGraph != nil {
		st := inst.ServiceGraph.Stats()
		o.EdgeStore = &st
	}
	if inst.RemoteWrite != nil {
		o.RemoteWrite = inst.RemoteWrite.Status()
	}
	h.Open = o
	return h
}

// collected is a broadcast: each collection closes the channel readers
// wait on and makes a new one.
type collected struct {
	mu sync.Mutex
	ch chan struct{}
}

func (c *collected) wait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

func (c *collected) notify() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}

// Collected returns a channel that is closed when the next collection
// has written every tenant's series: live panels refresh then, when their
// figures can have changed, rather than on a clock of their own.
func (e *Engine) Collected() <-chan struct{} { return e.collected.wait() }
