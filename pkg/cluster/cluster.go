// Package cluster makes several Spangraph instances one ring, so that every
// span of a trace is processed by the one instance that owns the trace id:
// service-graph edges pair the client and server spans of a trace, and the
// two halves must meet in one edge store.
//
// Membership is dskit's ring over dskit's memberlist KV, the layer Mimir,
// Loki and Tempo run on: each instance registers itself with random tokens
// and heartbeats its ring entry; Owner hashes (tenant, trace id) to a token
// and walks the ring to the first ACTIVE member with a fresh heartbeat.
// Forward sends an already-encoded OTLP request to that member's OTLP gRPC
// listener, as Tempo's distributor sends spans to its generators.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	kitlog "github.com/go-kit/log"
	"github.com/grafana/dskit/dns"
	"github.com/grafana/dskit/flagext"
	"github.com/grafana/dskit/kv/memberlist"
	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

const (
	// ringName labels dskit's ring metrics; ringKey is the KV key the ring
	// is gossiped under.
	ringName = "spangraph"
	ringKey  = "spangraph-ring"

	// ownerReplication is how many ACTIVE members Owner looks at along the
	// ring before it walks the whole ring: with three, two consecutive dead
	// members still resolve on the cheap path.
	ownerReplication = 3

	// autoForgetPeriods: a member silent for this many heartbeat timeouts
	// is removed from the ring by the survivors, so that killed instances
	// (new pod names each time) do not pile up in the ring and in Health.
	autoForgetPeriods = 10

	// Gossip timings: leave and last-broadcast waits bound Stop.
	leaveTimeout          = 5 * time.Second
	shutdownBroadcastWait = 5 * time.Second
	rejoinInterval        = time.Minute
	leftMembersTimeout    = 5 * time.Minute
	advertiseLookupWait   = 5 * time.Second
)

// ownerOp accepts ACTIVE members only and walks past members in any other
// state (JOINING, LEAVING, PENDING), so their keys go to the next ACTIVE one.
var ownerOp = ring.NewOp([]ring.InstanceState{ring.ACTIVE}, func(s ring.InstanceState) bool { return s != ring.ACTIVE })

// ErrNoOwner is returned by Owner when no member of the ring is ACTIVE with
// a fresh heartbeat (including this one): the caller should process the
// spans itself rather than drop them.
var ErrNoOwner = errors.New("cluster: no healthy ACTIVE member in the ring")

// Cluster is this instance's membership in the ring, its view of the ring,
// and its client to forward spans to other members.
type Cluster struct {
	cfg         Config
	id          string
	forwardAddr string
	logger      *slog.Logger
	metrics     *metrics

	kv         *memberlist.KV
	kvClient   *memberlist.Client
	ring       *ring.Ring
	lifecycler *ring.BasicLifecycler

	view   atomic.Pointer[memberView]
	routes atomic.Pointer[routes]

	connsMu sync.Mutex
	conns   map[string]*grpc.ClientConn
	closed  bool

	lifeMu      sync.Mutex
	started     bool
	stopped     bool
	watchCancel context.CancelFunc
	watchDone   chan struct{}
}

// memberView is the ring as last gossiped, kept for IsMember, Health,
// metrics, and closing connections to members that left.
type memberView struct {
	desc  *ring.Desc // read only
	addrs map[string]string
	hosts map[netip.Addr]struct{}
}

// routes is the ring as Owner reads it: every token in order with the
// member that holds it, and whether each member owns keys now. dskit's
// ring.Get answers the same but builds a replication set per call
// (0.65-0.75 µs, BenchmarkOwner), too much for a lookup per span; this
// is a binary search and, while every member is healthy, one step.
type routes struct {
	tokens  []uint32 // sorted
	holder  []uint16 // member of each token
	members []route
}

type route struct {
	addr string
	self bool
	// owns: ACTIVE with a heartbeat within heartbeat_timeout.
	owns bool
}

// buildRoutes makes the table of desc as of now.
func (c *Cluster) buildRoutes(desc *ring.Desc, now time.Time) *routes {
	ids := make([]string, 0, len(desc.Ingesters))
	for id := range desc.Ingesters {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	r := &routes{members: make([]route, len(ids))}
	type held struct {
		token  uint32
		member uint16
	}
	var all []held
	for i, id := range ids {
		inst := desc.Ingesters[id]
		r.members[i] = route{addr: inst.Addr, self: id == c.id, owns: inst.IsHealthy(ownerOp, c.cfg.HeartbeatTimeout, now)}
		for _, t := range inst.Tokens {
			all = append(all, held{t, uint16(i)})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].token != all[j].token {
			return all[i].token < all[j].token
		}
		return all[i].member < all[j].member
	})
	r.tokens = make([]uint32, len(all))
	r.holder = make([]uint16, len(all))
	for i, h := range all {
		r.tokens[i], r.holder[i] = h.token, h.member
	}
	return r
}

// New builds the ring member; nothing binds or gossips until Start.
// forwardAddr is the host:port of this instance's OTLP gRPC listener as
// peers must dial it (see ForwardAddr). reg may be nil.
func New(cfg Config, forwardAddr string, logger *slog.Logger, reg prometheus.Registerer) (*Cluster, error) {
	if !cfg.Enabled() {
		return nil, errors.New("cluster: no cluster.join configured; check Enabled before calling New")
	}
	if err := cfg.Validate("cluster"); err != nil {
		return nil, err
	}
	if _, port, err := net.SplitHostPort(forwardAddr); err != nil || validPort(port) != nil {
		return nil, fmt.Errorf("cluster: forward address %q must be the host:port peers dial to reach the OTLP gRPC listener", forwardAddr)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "cluster")
	klog := kitLogger{logger}

	id := cfg.InstanceID
	if id == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return nil, fmt.Errorf("cluster.instance_id: empty and the hostname is unknown (%v); set it", err)
		}
		id = h
	}

	kvCfg, err := memberlistConfig(cfg, id, klog)
	if err != nil {
		return nil, err
	}

	c := &Cluster{
		cfg:         cfg,
		id:          id,
		forwardAddr: forwardAddr,
		logger:      logger,
		conns:       map[string]*grpc.ClientConn{},
	}
	c.metrics = newMetrics(reg, c)

	// dskit's own metrics, under the names Mimir and Tempo operators know
	// with our prefix: spangraph_ring_members, spangraph_memberlist_client_*...
	var dskitReg prometheus.Registerer
	if reg != nil {
		dskitReg = prometheus.WrapRegistererWithPrefix("spangraph_", reg)
	}
	var dnsReg prometheus.Registerer
	if dskitReg != nil {
		dnsReg = prometheus.WrapRegistererWith(prometheus.Labels{"name": "memberlist"}, dskitReg)
	}
	dnsProvider := dns.NewProvider(klog, dnsReg, dns.GolangResolverType)

	c.kv = memberlist.NewKV(kvCfg, klog, dnsProvider, dskitReg)
	if c.kvClient, err = memberlist.NewClient(c.kv, ring.GetCodec()); err != nil {
		return nil, fmt.Errorf("cluster: memberlist client: %w", err)
	}

	ringCfg := ring.Config{
		HeartbeatTimeout:  cfg.HeartbeatTimeout,
		ReplicationFactor: ownerReplication,
	}
	if c.ring, err = ring.NewWithStoreClientAndStrategy(ringCfg, ringName, ringKey, c.kvClient,
		ring.NewIgnoreUnhealthyInstancesReplicationStrategy(), dskitReg, klog); err != nil {
		return nil, fmt.Errorf("cluster: ring client: %w", err)
	}

	var delegate ring.BasicLifecyclerDelegate = ring.NewInstanceRegisterDelegate(ring.ACTIVE, cfg.Tokens)
	delegate = leaveDelegate{next: delegate, c: c}
	delegate = ring.NewAutoForgetDelegate(autoForgetPeriods*cfg.HeartbeatTimeout, delegate, klog)
	lcCfg := ring.BasicLifecyclerConfig{
		ID:                              id,
		Addr:                            forwardAddr,
		HeartbeatPeriod:                 cfg.HeartbeatPeriod,
		HeartbeatTimeout:                cfg.HeartbeatTimeout,
		NumTokens:                       cfg.Tokens,
		KeepInstanceInTheRingOnShutdown: false,
	}
	if c.lifecycler, err = ring.NewBasicLifecycler(lcCfg, ringName, ringKey, c.kvClient, delegate, klog, dskitReg); err != nil {
		return nil, fmt.Errorf("cluster: ring lifecycler: %w", err)
	}
	return c, nil
}

// memberlistConfig starts from dskit's flag defaults (some settings, like
// the DNS discovery backoff, can only be set that way) and applies ours.
func memberlistConfig(cfg Config, id string, logger kitlog.Logger) (memberlist.KVConfig, error) {
	var kvCfg memberlist.KVConfig
	flagext.DefaultValues(&kvCfg)

	listenIP, listenPort, err := parseListen(cfg.Listen)
	if err != nil {
		return kvCfg, fmt.Errorf("cluster.listen: %w", err)
	}
	kvCfg.TCPTransport.BindAddrs = flagext.StringSlice{listenIP.String()}
	kvCfg.TCPTransport.BindPort = listenPort

	// Left empty, memberlist advertises the bound IP and port, which is
	// right for a specific Listen IP (and the only way with port 0).
	if cfg.Advertise != "" || listenIP.IsUnspecified() {
		host, err := advertiseHost(cfg, logger)
		if err != nil {
			return kvCfg, fmt.Errorf("cluster.advertise: %w", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), advertiseLookupWait)
		ip, err := resolveAdvertiseIP(ctx, host)
		cancel()
		if err != nil {
			return kvCfg, fmt.Errorf("cluster.advertise: %w", err)
		}
		_, port, _ := splitAdvertise(cfg.Advertise)
		if port == 0 {
			port = listenPort
		}
		kvCfg.AdvertiseAddr = ip
		kvCfg.AdvertisePort = port
	}

	kvCfg.NodeName = id
	kvCfg.RandomizeNodeName = true // a restarted member must not be taken for its dead self
	kvCfg.JoinMembers = append(flagext.StringSlice(nil), cfg.Join...)
	kvCfg.AbortIfJoinFails = false // the first member finds nobody: it is the cluster
	kvCfg.AbortIfFastJoinFails = false
	kvCfg.RejoinInterval = rejoinInterval // heals partitions when Join lists a few seeds
	kvCfg.LeftIngestersTimeout = leftMembersTimeout
	kvCfg.LeaveTimeout = leaveTimeout
	kvCfg.BroadcastTimeoutForLocalUpdatesOnShutdown = shutdownBroadcastWait
	kvCfg.Codecs = append(kvCfg.Codecs, ring.GetCodec())
	return kvCfg, kvCfg.Validate()
}

// leaveDelegate turns this instance LEAVING when its lifecycler stops,
// before the lifecycler removes it from the ring. It replaces dskit's
// LeaveOnStoppingDelegate, whose state change is lost whenever it falls in
// the same second as the last heartbeat (the ring merges entries by
// whole-second timestamps). With one-second heartbeats that happens often,
// and then its one-second retries keep colliding with the heartbeats until
// it gives up after ten seconds.
type leaveDelegate struct {
	next ring.BasicLifecyclerDelegate
	c    *Cluster
}

func (d leaveDelegate) OnRingInstanceRegister(l *ring.BasicLifecycler, desc ring.Desc, exists bool, id string, inst ring.InstanceDesc) (ring.InstanceState, ring.Tokens) {
	return d.next.OnRingInstanceRegister(l, desc, exists, id, inst)
}

func (d leaveDelegate) OnRingInstanceTokens(l *ring.BasicLifecycler, tokens ring.Tokens) {
	d.next.OnRingInstanceTokens(l, tokens)
}

func (d leaveDelegate) OnRingInstanceHeartbeat(l *ring.BasicLifecycler, desc *ring.Desc, inst *ring.InstanceDesc) {
	d.next.OnRingInstanceHeartbeat(l, desc, inst)
}

func (d leaveDelegate) OnRingInstanceStopping(l *ring.BasicLifecycler) {
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	id := l.GetInstanceID()
	var stamped int64
	err := d.c.kvClient.CAS(ctx, ringKey, func(in any) (any, bool, error) {
		desc := ring.GetOrCreateRingDesc(in)
		inst, ok := desc.Ingesters[id]
		if !ok || inst.State == ring.LEAVING {
			return nil, false, nil
		}
		inst.State = ring.LEAVING
		// Stamp the change after the last heartbeat's second so that it
		// wins the merge, here and on every peer.
		stamped = max(time.Now().Unix(), inst.Timestamp+1)
		inst.Timestamp = stamped
		desc.Ingesters[id] = inst
		return desc, true, nil
	})
	if err != nil {
		d.c.logger.Warn("could not mark this instance LEAVING; removing it from the ring anyway", "err", err)
	} else if stamped > 0 {
		d.c.logger.Info("instance is LEAVING the ring", "instance", id)
		// The removal that follows is stamped with the time it happens:
		// it must not be older than LEAVING, or peers would keep LEAVING.
		if wait := time.Until(time.Unix(stamped, 0)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
	}
	d.next.OnRingInstanceStopping(l)
}

// InstanceID is this member's name in the ring.
func (c *Cluster) InstanceID() string { return c.id }

// Start binds the gossip listener, joins the members in Join (in the
// background, retrying with dskit's backoff; finding nobody is not an
// error: this is then the first member), registers this instance ACTIVE
// with its tokens and waits, bounded by ctx, until it sees itself ACTIVE in
// its own view of the ring. On error everything started is stopped again.
func (c *Cluster) Start(ctx context.Context) (err error) {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.started {
		return errors.New("cluster: Start called twice")
	}
	c.started = true
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), leaveTimeout+shutdownBroadcastWait)
			defer cancel()
			_ = c.stopLocked(sctx)
		}
	}()

	if err := startService(ctx, c.kv); err != nil {
		return fmt.Errorf("cluster: start memberlist on %s: %w", c.cfg.Listen, err)
	}
	if err := startService(ctx, c.ring); err != nil {
		return fmt.Errorf("cluster: start ring client: %w", err)
	}
	if err := startService(ctx, c.lifecycler); err != nil {
		return fmt.Errorf("cluster: register %s in the ring: %w", c.id, err)
	}
	watchCtx, cancel := context.WithCancel(context.Background())
	c.watchCancel, c.watchDone = cancel, make(chan struct{})
	go c.watch(watchCtx)

	if err := ring.WaitInstanceState(ctx, c.ring, c.id, ring.ACTIVE); err != nil {
		return fmt.Errorf("cluster: %s not ACTIVE in its own ring view: %w", c.id, err)
	}
	// Health and IsMember read the watcher's view: wait for it too.
	for !c.selfActiveInView() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: %s not ACTIVE in its own member view: %w", c.id, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	c.logger.Info("joined the ring", "instance", c.id, "forward_addr", c.forwardAddr,
		"gossip_port", c.kv.GetListeningPort(), "members", c.ring.InstancesCount())
	return nil
}

func (c *Cluster) selfActiveInView() bool {
	v := c.view.Load()
	if v == nil || v.desc == nil {
		return false
	}
	inst, ok := v.desc.Ingesters[c.id]
	return ok && inst.State == ring.ACTIVE
}

// startService starts s for the life of the Cluster (a dskit service stops
// when the context it was started with ends) and waits, bounded by ctx,
// until it runs.
func startService(ctx context.Context, s services.Service) error {
	if err := s.StartAsync(context.Background()); err != nil {
		return err
	}
	err := s.AwaitRunning(ctx)
	if err != nil && s.State() == services.Failed {
		return s.FailureCase() // the cause, without dskit's state wording
	}
	return err
}

// Stop leaves the ring cleanly: this instance turns LEAVING, then removes
// itself from the ring; memberlist waits (bounded) until that change has
// been gossiped, then leaves the memberlist cluster. Forwarding connections
// are closed. ctx bounds the wait; the rest continues in the background.
func (c *Cluster) Stop(ctx context.Context) error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	return c.stopLocked(ctx)
}

func (c *Cluster) stopLocked(ctx context.Context) error {
	if c.stopped {
		return nil
	}
	c.stopped = true
	var errs []error
	if err := services.StopAndAwaitTerminated(ctx, c.lifecycler); err != nil {
		errs = append(errs, fmt.Errorf("cluster: leave the ring: %w", err))
	}
	if c.watchCancel != nil {
		c.watchCancel()
		select {
		case <-c.watchDone:
		case <-ctx.Done():
		}
	}
	// A stopped instance is in no ring, but the members it knew may still
	// forward to it until they see it leave: IsMember keeps knowing them,
	// so that what they forward is taken, not routed again.
	if v := c.view.Load(); v != nil {
		c.view.Store(&memberView{hosts: v.hosts})
	}
	if err := services.StopAndAwaitTerminated(ctx, c.ring); err != nil {
		errs = append(errs, fmt.Errorf("cluster: stop ring client: %w", err))
	}
	if err := services.StopAndAwaitTerminated(ctx, c.kv); err != nil {
		errs = append(errs, fmt.Errorf("cluster: leave memberlist: %w", err))
	}
	c.connsMu.Lock()
	c.closed = true
	for addr, cc := range c.conns {
		_ = cc.Close()
		delete(c.conns, addr)
	}
	c.connsMu.Unlock()
	if len(errs) == 0 {
		c.logger.Info("left the ring", "instance", c.id)
	}
	return errors.Join(errs...)
}

// Owner returns the forward address of the member that owns traceID for
// tenant, and whether that member is this instance. The owner is the first
// ACTIVE member with a fresh heartbeat at or after the key's token on the
// ring, so every instance with the same ring view picks the same one, and a
// member that leaves or dies hands over only its own keys. Owner does not
// allocate; it returns an error wrapping ErrNoOwner when nobody qualifies.
func (c *Cluster) Owner(tenant string, traceID [16]byte) (addr string, self bool, err error) {
	r := c.routes.Load()
	if r == nil || len(r.tokens) == 0 {
		return "", false, ErrNoOwner
	}
	key := traceToken(tenant, traceID)
	// The first token above key, as dskit's ring searches.
	lo, hi := 0, len(r.tokens)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if r.tokens[mid] <= key {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	for n := range len(r.tokens) {
		i := lo + n
		if i >= len(r.tokens) {
			i -= len(r.tokens)
		}
		if m := &r.members[r.holder[i]]; m.owns {
			return m.addr, m.self, nil
		}
	}
	return "", false, ErrNoOwner
}

// traceToken hashes (tenant, trace id) to a ring token: FNV-1a over both
// (Tempo's distributor hashes tenant and trace id with FNV too), the tenant
// mixed in so that tenants spread over the ring, then murmur3's finalizer
// so that ids with constant or zero halves (64-bit ids, X-Ray's timestamp
// prefix) still spread over the whole token space.
func traceToken(tenant string, id [16]byte) uint32 {
	const (
		offset = 2166136261
		prime  = 16777619
	)
	h := uint32(offset)
	for i := 0; i < len(tenant); i++ {
		h ^= uint32(tenant[i])
		h *= prime
	}
	for _, b := range id {
		h ^= uint32(b)
		h *= prime
	}
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// IsMember reports whether host, an IP as seen as a gRPC peer address,
// is the address of a ring member (in any state: a LEAVING member still
// forwards its last requests). The receiver honours the "forwarded" marker
// only from members, so that outside clients cannot skip routing.
func (c *Cluster) IsMember(host string) bool {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	v := c.view.Load()
	if v == nil {
		return false
	}
	_, ok := v.hosts[ip.Unmap()]
	return ok
}

// watch follows the ring in the KV store: it keeps the view for IsMember,
// Health and metrics, and closes connections to members that left.
func (c *Cluster) watch(ctx context.Context) {
	defer close(c.watchDone)
	if v, err := c.kvClient.Get(ctx, ringKey); err == nil {
		c.update(ctx, v)
	}
	// Health changes with time alone (a heartbeat grows old): the routes
	// are rebuilt four times a heartbeat period besides on every change.
	go func() {
		t := time.NewTicker(c.cfg.HeartbeatPeriod / 4)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if v := c.view.Load(); v != nil && v.desc != nil {
					c.routes.Store(c.buildRoutes(v.desc, now))
				}
			}
		}
	}()
	c.kvClient.WatchKey(ctx, ringKey, func(v any) bool {
		c.update(ctx, v)
		return true
	})
}

func (c *Cluster) update(ctx context.Context, v any) {
	desc, _ := v.(*ring.Desc)
	if desc == nil {
		desc = ring.NewDesc()
	}
	prev := c.view.Load()
	addrs := make(map[string]string, len(desc.Ingesters))
	for id, inst := range desc.Ingesters {
		addrs[id] = inst.Addr
	}
	next := &memberView{desc: desc, addrs: addrs}
	c.routes.Store(c.buildRoutes(desc, time.Now()))
	c.redialReturning(prev, desc)
	if prev != nil && sameAddrs(prev.addrs, addrs) {
		next.hosts = prev.hosts
		c.view.Store(next)
		return
	}
	next.hosts = c.resolveHosts(ctx, addrs)
	c.view.Store(next)

	// Close connections to addresses no member has any more.
	live := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		live[a] = true
	}
	c.connsMu.Lock()
	for a, cc := range c.conns {
		if !live[a] {
			// Not at once: closing cancels the forwards still on it, which
			// the member (leaving cleanly) may have counted already, and
			// the senders would be told they were refused.
			time.AfterFunc(c.cfg.ForwardTimeout, func() { _ = cc.Close() })
			delete(c.conns, a)
		}
	}
	c.connsMu.Unlock()
	if prev != nil {
		c.logger.Info("ring members changed", "members", len(addrs))
	}
}

// redialReturning lets the connections to members that (re)joined the ring
// or turned ACTIVE connect at once: after a crash and restart, gRPC's
// reconnect backoff would otherwise refuse the spans of their traces for
// up to its maximum delay after they are back.
func (c *Cluster) redialReturning(prev *memberView, desc *ring.Desc) {
	c.connsMu.Lock()
	defer c.connsMu.Unlock()
	for id, inst := range desc.Ingesters {
		if prev != nil && prev.desc != nil {
			if old, ok := prev.desc.Ingesters[id]; ok && old.State == inst.State && old.RegisteredTimestamp == inst.RegisteredTimestamp {
				continue
			}
		}
		if cc, ok := c.conns[inst.Addr]; ok {
			cc.ResetConnectBackoff()
		}
	}
}

func sameAddrs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// resolveHosts returns the IPs of the members' forward addresses; host
// names (an explicit advertise name) are looked up, only when membership
// changes.
func (c *Cluster) resolveHosts(ctx context.Context, addrs map[string]string) map[netip.Addr]struct{} {
	hosts := make(map[netip.Addr]struct{}, len(addrs))
	for id, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			hosts[ip.Unmap()] = struct{}{}
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ips, err := net.DefaultResolver.LookupNetIP(lctx, "ip", host)
		cancel()
		if err != nil {
			c.logger.Warn("cannot resolve a ring member's address; spans it forwards will be routed again", "member", id, "addr", a, "err", err)
			continue
		}
		for _, ip := range ips {
			hosts[ip.Unmap()] = struct{}{}
		}
	}
	return hosts
}

// Health is this instance's view of the ring, for /-/health and the
// plugin's CheckHealth.
type Health struct {
	InstanceID string `json:"instance_id"`
	// State of this instance in its own view ("" when it is not in the
	// ring: not started, or stopped).
	State string `json:"state"`
	// Members sorted by ID, this instance included.
	Members []Member `json:"members"`
	// Healthy counts members that own keys: ACTIVE with a fresh heartbeat.
	Healthy int `json:"healthy"`
}

// Member is one ring member as this instance sees it.
type Member struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`  // forward address (OTLP gRPC)
	State string `json:"state"` // ACTIVE, LEAVING, JOINING, PENDING
	// Healthy: ACTIVE and heartbeat within heartbeat_timeout; only healthy
	// members own keys.
	Healthy bool `json:"healthy"`
	Tokens  int  `json:"tokens"`
	// OwnedFraction is the share of the token space between this member's
	// tokens and their predecessors, i.e. the keys it owns while all
	// members are healthy.
	OwnedFraction float64   `json:"owned_fraction"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
}

// Health returns the current view of the ring.
func (c *Cluster) Health() Health {
	h := Health{InstanceID: c.id}
	v := c.view.Load()
	if v == nil || v.desc == nil {
		return h
	}
	owned := v.desc.CountTokens()
	now := time.Now()
	for id, inst := range v.desc.Ingesters {
		m := Member{
			ID:            id,
			Addr:          inst.Addr,
			State:         inst.State.String(),
			Healthy:       inst.IsHealthy(ownerOp, c.cfg.HeartbeatTimeout, now),
			Tokens:        len(inst.Tokens),
			OwnedFraction: float64(owned[id]) / (1 << 32),
			LastHeartbeat: time.Unix(inst.Timestamp, 0),
		}
		if m.Healthy {
			h.Healthy++
		}
		if id == c.id {
			h.State = m.State
		}
		h.Members = append(h.Members, m)
	}
	sort.Slice(h.Members, func(i, j int) bool { return h.Members[i].ID < h.Members[j].ID })
	return h
}
