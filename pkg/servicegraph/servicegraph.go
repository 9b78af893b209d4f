// Package servicegraph pairs client and server spans into service graph
// edges and records them with the names and labels of Tempo's
// metrics-generator: traces_service_graph_request_total,
// ..._request_failed_total, ..._request_server_seconds,
// ..._request_client_seconds, optionally ..._request_messaging_system_seconds,
// and the ..._unpaired_spans_total and ..._dropped_spans_total that Tempo
// documents but never emits.
//
// A CLIENT or PRODUCER span waits in the edge store under (trace id, span
// id), a SERVER or CONSUMER span under (trace id, parent span id); whichever
// comes second completes the edge. The store is sharded by trace id, keyed
// by fixed-size arrays, recycles its slots and expires from a time-ordered
// list, so that pairing costs a lookup under one of many locks and no
// allocation. A client span whose call site is known to be silent (its
// peer never answers) is settled at once instead of waiting: see sites.go.
package servicegraph

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/spangraph/spangraph/pkg/budget"
	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/processor"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/spanfilter"
)

// Metric names, byte for byte those of Tempo.
const (
	MetricRequestTotal            = "traces_service_graph_request_total"
	MetricRequestFailedTotal      = "traces_service_graph_request_failed_total"
	MetricRequestServerSeconds    = "traces_service_graph_request_server_seconds"
	MetricRequestClientSeconds    = "traces_service_graph_request_client_seconds"
	MetricRequestMessagingSeconds = "traces_service_graph_request_messaging_system_seconds"
	MetricUnpairedSpans           = "traces_service_graph_unpaired_spans_total"
	MetricDroppedSpans            = "traces_service_graph_dropped_spans_total"
)

// connection_type values; plain RPC has none, so the label is dropped.
const (
	ConnectionMessaging   = "messaging_system"
	ConnectionDatabase    = "database"
	ConnectionVirtualNode = "virtual_node"
)

// Options are what New needs besides the config.
type Options struct {
	// Tenant labels the self-metrics.
	Tenant string
	// Now is the clock; nil means time.Now. Tests pass a fake one to
	// control expiry.
	Now func() time.Time
	// Pool is the process's memory share for half edges, shared by every
	// tenant's processor; nil means max_items alone bounds the store. A
	// span that finds no room is dropped and counted, as at max_items.
	Pool *budget.Pool
}

// Close gives the store's memory back to the pool. Save or Flush the
// waiting half edges first: the processor must not be used afterwards.
func (p *Processor) Close() {
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		sh.releaseChunks()
		sh.mu.Unlock()
	}
}

// Processor pairs spans into edges. Push, Expire, Flush and Stats may be
// called from several goroutines at once. Nothing expires unless the owner
// calls Expire: the processor runs no goroutine of its own, so the engine
// decides its pace and tests decide time.
type Processor struct {
	cfg    Config
	now    func() time.Time
	wait   int64 // ns
	filter *spanfilter.Filter
	dims   *processor.Dimensions
	nDims  int
	// nValues is the number of label values of an edge series; vnodePos
	// is the position of virtual_node among them, -1 when off.
	nValues, vnodePos int

	shards    []shard
	shardBits uint

	// keys holds the attributes a client or root server span is searched
	// for; the indices say which is which.
	keys                                      keySet
	dbNames, peers                            []int
	peerService, serverAddr, netAddr, netPort int

	requests, failed, unpaired, dropped        *registry.Counter
	serverSeconds, clientSeconds, messagingSec *registry.Histogram

	// Totals for Stats and the self-metrics, added once per Push or Expire
	// from the scratch state's own counts rather than per span.
	completed, virtual, unpairedN, droppedN atomic.Uint64
	expired                                 [6]atomic.Uint64 // by otlp.SpanKind

	sites   sites
	self    selfMetrics
	scratch sync.Pool
}

// New validates cfg and registers the metrics in reg.
func New(cfg Config, reg *registry.Registry, opts Options) (*Processor, error) {
	if err := cfg.Validate("servicegraph"); err != nil {
		return nil, err
	}
	filter, err := spanfilter.New("servicegraph.filter_policies", cfg.FilterPolicies)
	if err != nil {
		return nil, err
	}
	names, err := cfg.labelNames()
	if err != nil {
		return nil, err
	}
	p := &Processor{
		cfg:      cfg,
		now:      opts.Now,
		wait:     int64(cfg.Wait),
		filter:   filter,
		dims:     processor.NewDimensions(cfg.Dimensions),
		nDims:    len(cfg.Dimensions),
		nValues:  len(names),
		vnodePos: -1,
		self:     newSelfMetrics(opts.Tenant),
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.sites.init(p.wait)
	for _, k := range cfg.DatabaseNameAttributes {
		p.dbNames = append(p.dbNames, p.keys.add(k))
	}
	for _, k := range cfg.PeerAttributes {
		p.peers = append(p.peers, p.keys.add(k))
	}
	p.peerService = p.keys.add("peer.service")
	p.serverAddr = p.keys.add("server.address")
	p.netAddr = p.keys.add("network.peer.address")
	p.netPort = p.keys.add("network.peer.port")
	if cfg.EnableVirtualNodeLabel {
		p.vnodePos = len(names) - 1
	}
	n := shardCount(cfg.MaxItems)
	p.shards = make([]shard, n)
	p.shardBits = uint(bits.TrailingZeros(uint(n)))
	for i := range p.shards {
		c := cfg.MaxItems / n
		if i < cfg.MaxItems%n {
			c++
		}
		p.shards[i].init(c, p.nDims, opts.Pool)
	}

	p.requests = reg.NewCounter(MetricRequestTotal, names)
	p.failed = reg.NewCounter(MetricRequestFailedTotal, names)
	hopts := cfg.Histograms.Options()
	p.serverSeconds = reg.NewHistogramWith(MetricRequestServerSeconds, names, cfg.HistogramBuckets, hopts)
	p.clientSeconds = reg.NewHistogramWith(MetricRequestClientSeconds, names, cfg.HistogramBuckets, hopts)
	if cfg.EnableMessagingSystemLatencyHistogram {
		p.messagingSec = reg.NewHistogramWith(MetricRequestMessagingSeconds, names, cfg.HistogramBuckets, hopts)
	}
	sides := []string{LabelClient, LabelServer}
	p.unpaired = reg.NewCounter(MetricUnpairedSpans, sides)
	p.dropped = reg.NewCounter(MetricDroppedSpans, sides)
	p.scratch.New = func() any { return p.newState() }
	return p, nil
}

// Stats describes the edge store, for health and self-metrics.
type Stats struct {
	// Pending is the number of half edges waiting for their other side.
	Pending int
	// Capacity is max_items.
	Capacity int
	// Completed counts edges recorded: paired, database and virtual.
	Completed uint64
	// Virtual counts the virtual_node edges among Completed.
	Virtual uint64
	// Expired counts half edges that waited the whole wait.
	Expired uint64
	// Unpaired counts expired half edges that named no peer, so became no
	// edge.
	Unpaired uint64
	// Silent counts the half edges among Expired that were settled at
	// once, their call site being silent, rather than after waiting.
	Silent uint64
	// Dropped counts spans refused because their shard of the store was
	// full. Anything above zero means max_items is too small for the load.
	Dropped uint64
}

// Stats returns the current figures.
func (p *Processor) Stats() Stats {
	s := Stats{
		Capacity:  p.cfg.MaxItems,
		Completed: p.completed.Load(),
		Virtual:   p.virtual.Load(),
		Unpaired:  p.unpairedN.Load(),
		Dropped:   p.droppedN.Load(),
		Silent:    p.sites.silent.Load(),
	}
	for i := range p.expired {
		s.Expired += p.expired[i].Load()
	}
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		s.Pending += sh.n
		sh.mu.Unlock()
	}
	return s
}

// state is the per-goroutine scratch space of Push and Expire.
type state struct {
	vals  []string // label values of an edge series
	sides []string // client, server: labels of unpaired and dropped spans
	res   processor.ResolvedDims
	text  []byte
	// cur holds the dimension values of the span at hand, other those of
	// the half edge it completes, none empty values for a side not seen.
	cur, other, none []string
	// resAttrs and spanAttrs hold the values of p.keys on the resource
	// and on the span at hand.
	resAttrs, spanAttrs []otlp.Value
	// batch and batchDims carry expired half edges out of a shard's lock.
	batch     []localHalf
	batchDims []string
	// halves, halfDims and local hold a request's half edges while they
	// are paired among themselves (see pairLocal).
	halves   []localHalf
	halfDims []string
	local    map[key]int32
	// mixed says the halves come from more than one service: only then
	// can they pair among themselves.
	mixed bool

	completed, virtual, unpaired, dropped, silent uint64
	expired                                       [6]uint64
}

const expireBatch = 256

func (p *Processor) newState() *state {
	return &state{
		vals:      make([]string, p.nValues),
		sides:     make([]string, 2),
		res:       p.dims.NewResolved(),
		text:      make([]byte, 0, 256),
		cur:       make([]string, p.nDims),
		other:     make([]string, p.nDims),
		none:      make([]string, p.nDims),
		resAttrs:  make([]otlp.Value, len(p.keys.keys)),
		spanAttrs: make([]otlp.Value, len(p.keys.keys)),
		batch:     make([]localHalf, expireBatch),
		batchDims: make([]string, expireBatch*p.nDims),
		local:     make(map[key]int32),
	}
}

// localHalf is a half edge of the request at hand. Its strings may point
// into the request; the store copies them if it is left waiting.
type localHalf struct {
	k    key
	h    half
	done bool
}

// textOf returns v as label text, formatting non-string values into
// st.text; the result is valid until st.text is reset.
func (st *state) textOf(v otlp.Value) string {
	switch v.Type {
	case otlp.ValueString:
		return v.Str
	case otlp.ValueEmpty:
		return ""
	}
	start := len(st.text)
	st.text, _ = v.AppendText(st.text)
	if len(st.text) == start {
		return ""
	}
	return unsafe.String(&st.text[start], len(st.text)-start)
}

// flush adds the state's counts to the processor's totals.
func (p *Processor) flush(st *state) {
	add := func(c *atomic.Uint64, n *uint64) {
		if *n != 0 {
			c.Add(*n)
			*n = 0
		}
	}
	add(&p.completed, &st.completed)
	add(&p.virtual, &st.virtual)
	add(&p.unpairedN, &st.unpaired)
	add(&p.droppedN, &st.dropped)
	add(&p.sites.silent, &st.silent)
	for i := range st.expired {
		add(&p.expired[i], &st.expired[i])
	}
}

func isClientSide(k otlp.SpanKind) bool {
	return k == otlp.SpanKindClient || k == otlp.SpanKindProducer
}

func isMessaging(k otlp.SpanKind) bool {
	return k == otlp.SpanKindProducer || k == otlp.SpanKindConsumer
}

// Push pairs the CLIENT, PRODUCER, SERVER and CONSUMER spans of b. It keeps
// nothing that points into b.
func (p *Processor) Push(b *otlp.Batch) {
	st := p.scratch.Get().(*state)
	now := p.now().UnixNano()
	// Formatted attribute values live in st.text until the halves that
	// refer to them are paired or stored, at the end of the request.
	st.text = st.text[:0]
	for ri := range b.Resources {
		p.pushResource(st, &b.Resources[ri], now)
	}
	p.pairLocal(st, now)
	p.flush(st)
	p.scratch.Put(st)
}

func (p *Processor) pushResource(st *state, rs *otlp.ResourceSpans, now int64) {
	// Tempo skips resources without a service: an edge needs both names.
	v, ok := otlp.Lookup(rs.Attributes, "service.name")
	if !ok {
		return
	}
	service := v.Text()
	if service == "" {
		return
	}
	svcHash := p.sites.hash(service)
	served := false
	if p.nDims > 0 {
		p.dims.ResolveResource(&st.res, rs.Attributes)
	}
	p.keys.scan(rs.Attributes, st.resAttrs)
	for si := range rs.Spans {
		s := &rs.Spans[si]
		switch s.Kind {
		case otlp.SpanKindClient, otlp.SpanKindProducer, otlp.SpanKindServer, otlp.SpanKindConsumer:
		default:
			continue
		}
		if s.IDError() != "" || !p.filter.Keep(rs.Attributes, s) {
			continue
		}
		if p.nDims > 0 {
			st.text = p.dims.ResolveSpan(&st.res, s.Attributes, st.text)
			for i := range st.cur {
				st.cur[i] = st.res.Value(i)
			}
		}
		h := half{
			service: service,
			start:   s.Start,
			end:     s.End,
			weight:  processor.SpanMultiplier(p.cfg.SpanMultiplierKey, p.cfg.EnableTraceStateSpanMultiplier, rs.Attributes, s),
			kind:    s.Kind,
			failed:  s.StatusCode == otlp.StatusError,
			root:    !s.HasParent(),
		}
		if isClientSide(s.Kind) {
			p.keys.scan(s.Attributes, st.spanAttrs)
			if p.database(st, s, &h) {
				continue
			}
			h.peer = p.peer(st)
			addr := ""
			if h.peer == "" {
				addr = st.attr(p.serverAddr)
			}
			h.site = p.sites.site(svcHash, s.Kind == otlp.SpanKindClient, h.peer, s.Name, addr)
			st.addHalf(makeKey(&s.TraceID, &s.SpanID), &h)
			continue
		}
		if !served {
			// Once per resource: a peer of this name is not silent.
			p.sites.serve(service)
			served = true
		}
		if h.root {
			// A root span waits under an empty parent id, which no client
			// span has: it can never pair, so it becomes its virtual edge
			// now rather than after wait. Tempo stores it for the whole
			// wait; at full rate that is most of the edge store.
			p.keys.scan(s.Attributes, st.spanAttrs)
			h.peer = p.peer(st)
			p.rootEdge(st, &h, st.cur, &s.TraceID)
			continue
		}
		st.addHalf(makeKey(&s.TraceID, &s.ParentSpanID), &h)
	}
}

// addHalf keeps h, with the span's dimension values in st.cur, for
// pairLocal.
func (st *state) addHalf(k key, h *half) {
	if len(st.halves) > 0 && h.service != st.halves[0].h.service {
		st.mixed = true
	}
	st.halves = append(st.halves, localHalf{k: k, h: *h})
	st.halfDims = append(st.halfDims, st.cur...)
}

// pairLocal pairs the request's half edges among themselves, in arrival
// order and by pushHalf's rules, and only then sends those left over to
// the shared store. When whole traces arrive in one request (from a
// Collector that batches by trace), most edges complete in this small
// request-local map instead of taking a shard lock and two lookups, an
// insert and a delete in the large one, where cache misses were a third
// of the service graph's time.
func (p *Processor) pairLocal(st *state, now int64) {
	n := p.nDims
	dims := func(i int32) []string { return st.halfDims[int(i)*n : int(i)*n+n : int(i)*n+n] }
	// A request from one service (an SDK exporting its own spans) holds
	// no pairs, short of the service calling itself: it goes straight to
	// the store.
	for i := 0; st.mixed && i < len(st.halves); i++ {
		cur := &st.halves[i]
		j, ok := st.local[cur.k]
		if !ok {
			st.local[cur.k] = int32(i)
			continue
		}
		prev := &st.halves[j]
		if isClientSide(prev.h.kind) == isClientSide(cur.h.kind) {
			// As in pushHalf: the latest span of a side stands in for both.
			cur.h.failed = cur.h.failed || prev.h.failed
			prev.done = true
			st.local[cur.k] = int32(i)
			continue
		}
		prev.done, cur.done = true, true
		delete(st.local, cur.k)
		p.sites.paired(cur.h.site | prev.h.site)
		p.complete(st, &cur.k, &cur.h, dims(int32(i)), &prev.h, dims(j))
	}
	for i := range st.halves {
		lh := &st.halves[i]
		if lh.done {
			continue
		}
		if lh.h.site != 0 {
			settle, watched := p.sites.settleNow(lh.h.site, lh.h.peer, now)
			if settle {
				p.settle(st, lh.k.traceID(), &lh.h, dims(int32(i)))
				st.silent++
				continue
			}
			lh.h.watched = watched
		}
		p.pushHalf(st, lh.k, &lh.h, dims(int32(i)), now)
	}
	// Drop the references into the request. What a huge request grew is
	// not kept in the pooled state: the map costs its size at every clear,
	// and the slices would hold megabytes for the next small request.
	clear(st.halves)
	st.halves = st.halves[:0]
	clear(st.halfDims)
	st.halfDims = st.halfDims[:0]
	st.mixed = false
	if len(st.local) > 4096 {
		st.local = make(map[key]int32)
	} else {
		clear(st.local)
	}
	if cap(st.halves) > 1<<14 {
		st.halves, st.halfDims = nil, nil
	}
}

// complete records the edge that h completes with other, the side that
// waited for it. The weight is the latest span's, as in Tempo.
func (p *Processor) complete(st *state, k *key, h *half, hDims []string, other *half, otherDims []string) {
	ed := edge{trace: k.traceID(), weight: h.weight}
	if isClientSide(h.kind) {
		ed.client, ed.clientDims, ed.server, ed.serverDims = h, hDims, other, otherDims
	} else {
		ed.client, ed.clientDims, ed.server, ed.serverDims = other, otherDims, h, hDims
	}
	conn := ""
	if isMessaging(h.kind) || isMessaging(other.kind) {
		conn = ConnectionMessaging
	}
	p.record(st, &ed, ed.client.service, ed.server.service, conn, "")
}

// pushHalf completes the edge under k when its other side waits there, and
// otherwise leaves h waiting.
func (p *Processor) pushHalf(st *state, k key, h *half, dims []string, now int64) {
	sh := &p.shards[shardIndex(k.traceID(), p.shardBits)]
	client := isClientSide(h.kind)
	sh.mu.Lock()
	if i := sh.find(&k); i != none {
		e := sh.edge(i)
		if isClientSide(otlp.SpanKind(e.kind)) != client {
			// Copy the other side out so that the registry is updated after
			// the lock is released.
			var other half
			sh.get(i, &other, st.other)
			sh.remove(i)
			sh.mu.Unlock()
			if other.watched || h.watched {
				p.sites.paired(other.site | h.site)
			}
			p.complete(st, &k, h, dims, &other, st.other)
			return
		}
		// Another span of the same side, such as a second server span under
		// one client span: like Tempo, the latest one stands in for both,
		// so the edge is counted once.
		h.failed = h.failed || e.flags&flagFailed != 0
		sh.release(i)
		sh.put(i, h, dims)
		sh.mu.Unlock()
		return
	}
	i := sh.insert(&k, now+p.wait)
	if i == none {
		sh.mu.Unlock()
		p.drop(st, h)
		return
	}
	sh.put(i, h, dims)
	sh.mu.Unlock()
}

// database records a client span that carries a database attribute as a
// database edge at once: databases send no spans to wait for. It reports
// whether the span was one. st.spanAttrs must hold the span's keys.
func (p *Processor) database(st *state, s *otlp.Span, h *half) bool {
	dbName := ""
	for _, i := range p.dbNames {
		if dbName = st.attr(i); dbName != "" {
			break
		}
	}
	if dbName == "" {
		return false
	}
	server := st.attr(p.peerService)
	if server == "" {
		server = st.attr(p.serverAddr)
	}
	if server == "" {
		if host := st.attr(p.netAddr); host != "" {
			server = host
			if port := st.attr(p.netPort); port != "" {
				start := len(st.text)
				st.text = append(append(append(st.text, host...), ':'), port...)
				server = unsafe.String(&st.text[start], len(st.text)-start)
			}
		}
	}
	if server == "" {
		server = dbName
	}
	// The client span measured the database call: Tempo records its
	// duration as the server's too.
	p.record(st, &edge{
		trace:  &s.TraceID,
		weight: h.weight,
		client: h, clientDims: st.cur,
		server: h, serverDims: st.none,
	}, h.service, server, ConnectionDatabase, "")
	return true
}

// attr returns the text of key i, resource first, then span, "" if absent.
func (st *state) attr(i int) string {
	if t := st.textOf(st.resAttrs[i]); t != "" {
		return t
	}
	return st.textOf(st.spanAttrs[i])
}

// peer returns the first peer attribute of the span. Like Tempo it reads
// only the span's own attributes: the resource describes the span's own
// service, not the one it talks to.
func (p *Processor) peer(st *state) string {
	for _, i := range p.peers {
		if t := st.textOf(st.spanAttrs[i]); t != "" {
			return t
		}
	}
	return ""
}

func seconds(start, end uint64) float64 {
	if end <= start {
		return 0
	}
	return float64(end-start) / 1e9
}

// edge is a whole edge on its way to the registry. A virtual edge has one
// side nil.
type edge struct {
	trace                  *[16]byte
	client, server         *half
	clientDims, serverDims []string
	weight                 float64
}

// record writes an edge to the registry. Both latency histograms get an
// observation, as in Tempo; on a virtual_node edge the side that sent no
// span gets what virtual_node_latency says (see observeLatency).
func (p *Processor) record(st *state, e *edge, client, server, conn, vnode string) {
	vals := st.vals
	vals[0], vals[1], vals[2] = client, server, conn
	for i := 0; i < p.nDims; i++ {
		cv, sv := e.clientDims[i], e.serverDims[i]
		switch {
		case p.cfg.EnableClientServerPrefix:
			vals[3+2*i], vals[4+2*i] = cv, sv
		case cv != "":
			vals[3+i] = cv
		default:
			vals[3+i] = sv
		}
	}
	if p.vnodePos >= 0 {
		vals[p.vnodePos] = vnode
	}
	lv := registry.MakeLabelValues(vals)
	w := e.weight
	c, s := e.client, e.server
	p.requests.Add(lv, w)
	if (c != nil && c.failed) || (s != nil && s.failed) {
		p.failed.Add(lv, w)
	}
	p.observeLatency(p.clientSeconds, lv, c, s, w, e.trace)
	p.observeLatency(p.serverSeconds, lv, s, c, w, e.trace)
	if p.messagingSec != nil && conn == ConnectionMessaging && c != nil && s != nil {
		// A consumer that starts before its producer ends means skewed
		// clocks; Tempo skips those rather than record a zero.
		if d := seconds(c.end, s.start); d > 0 {
			p.messagingSec.Observe(lv, d, w, e.trace, int64(s.start/1e6))
		}
	}
	st.completed++
}

// observeLatency records the latency of one side of an edge in h: side's
// duration when it was seen, else (a virtual node, whose other side, seen,
// is never nil) by virtual_node_latency: zero seconds as Tempo records it,
// seen's duration (mirror), or nothing (omit). The exemplar of an unseen
// side carries the seen side's end time.
func (p *Processor) observeLatency(h *registry.Histogram, lv registry.LabelValues, side, seen *half, w float64, trace *[16]byte) {
	d := 0.0
	switch {
	case side != nil:
		d = seconds(side.start, side.end)
	case p.cfg.VirtualNodeLatency == VirtualNodeLatencyOmit:
		return
	case p.cfg.VirtualNodeLatency == VirtualNodeLatencyMirror:
		d = seconds(seen.start, seen.end)
	}
	if side == nil {
		side = seen
	}
	h.Observe(lv, d, w, trace, int64(side.end/1e6))
}

// countSide adds one span of service to a counter labelled by its side.
func (p *Processor) countSide(st *state, c *registry.Counter, h *half) {
	st.sides[0], st.sides[1] = "", ""
	if isClientSide(h.kind) {
		st.sides[0] = h.service
	} else {
		st.sides[1] = h.service
	}
	c.Add(registry.MakeLabelValues(st.sides), 1)
}

// drop counts a span refused by a full store.
func (p *Processor) drop(st *state, h *half) {
	p.countSide(st, p.dropped, h)
	st.dropped++
}

// Expire settles the half edges whose wait is over. The engine calls it
// about once a second; it visits only the edges that are due.
func (p *Processor) Expire() { p.expire(p.now().UnixNano()) }

// Flush settles every pending half edge as if its wait were over: on
// shutdown nothing is left unrecorded.
func (p *Processor) Flush() { p.expire(math.MaxInt64) }

func (p *Processor) expire(now int64) {
	st := p.scratch.Get().(*state)
	d := p.nDims
	// Flush settles edges before their time: that says nothing of their
	// call sites.
	timely := now != math.MaxInt64
	for i := range p.shards {
		sh := &p.shards[i]
		for {
			// Take a batch out under the lock and record it after, so that
			// pushes to the shard wait for copying only.
			n := 0
			sh.mu.Lock()
			for n < expireBatch && sh.head != none {
				e := sh.edge(sh.head)
				if e.deadline > now {
					break
				}
				b := &st.batch[n]
				b.k = e.key
				sh.get(sh.head, &b.h, st.batchDims[n*d:(n+1)*d])
				sh.remove(sh.head)
				n++
			}
			sh.mu.Unlock()
			// Half edges of one call site tend to expire together: they
			// are told to the site table a run at a time.
			site, run := uint64(0), uint64(0)
			for j := 0; j < n; j++ {
				b := &st.batch[j]
				if timely && b.h.site != site {
					p.sites.expired(site, run, now)
					site, run = b.h.site, 0
				}
				run++
				p.settle(st, b.k.traceID(), &b.h, st.batchDims[j*d:(j+1)*d])
			}
			if timely {
				p.sites.expired(site, run, now)
			}
			if n < expireBatch {
				break
			}
		}
		sh.mu.Lock()
		if sh.sparse() {
			sh.compact()
		}
		sh.mu.Unlock()
	}
	p.flush(st)
	p.scratch.Put(st)
}

// rootEdge records the edge into a root server (or consumer) span: from
// the peer its attributes name, else from "user".
func (p *Processor) rootEdge(st *state, h *half, dims []string, trace *[16]byte) {
	client := h.peer
	if client == "" {
		client = "user"
	}
	e := edge{trace: trace, weight: h.weight, server: h, clientDims: st.none, serverDims: dims}
	p.record(st, &e, client, h.service, ConnectionVirtualNode, "client")
	st.virtual++
}

// settle handles a half edge whose wait is over, or that would wait in
// vain (see sites): a client that names its peer becomes an edge to that
// peer; anything else is an unpaired span. (Root server spans never wait:
// see rootEdge.)
func (p *Processor) settle(st *state, trace *[16]byte, h *half, dims []string) {
	st.expired[h.kind]++
	e := edge{trace: trace, weight: h.weight}
	switch {
	case isClientSide(h.kind) && h.peer != "":
		e.client, e.clientDims, e.serverDims = h, dims, st.none
		p.record(st, &e, h.service, h.peer, ConnectionVirtualNode, "server")
		st.virtual++
	default:
		p.countSide(st, p.unpaired, h)
		st.unpaired++
	}
}
