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
// list, so that pairing costs a map lookup under one of many locks and no
// allocation.
package servicegraph

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spangraph/spangraph/pkg/otlp"
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
}

// Processor pairs spans into edges. Push, Expire, Flush and Stats may be
// called from several goroutines at once.
type Processor struct {
	cfg    Config
	now    func() time.Time
	wait   int64 // ns
	filter *spanfilter.Filter
	dims   *otlp.Dimensions
	nDims  int
	// nValues is the number of label values of an edge series; vnodePos
	// is the position of virtual_node among them, -1 when off.
	nValues, vnodePos int

	shards   []shard
	mask     uint64
	capacity int

	requests, failed, unpaired, dropped        *registry.Counter
	serverSeconds, clientSeconds, messagingSec *registry.Histogram

	// Totals for Stats and the self-metrics, added once per Push or Expire
	// from the scratch state's own counts rather than per span.
	completed, virtual, unpairedN, droppedN atomic.Uint64
	expired                                 [6]atomic.Uint64 // by otlp.SpanKind

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
		dims:     otlp.NewDimensions(cfg.Dimensions),
		nDims:    len(cfg.Dimensions),
		nValues:  len(names),
		vnodePos: -1,
		capacity: cfg.MaxItems,
		self:     newSelfMetrics(opts.Tenant),
	}
	if p.now == nil {
		p.now = time.Now
	}
	if cfg.EnableVirtualNodeLabel {
		p.vnodePos = len(names) - 1
	}
	n := shardCount(cfg.MaxItems)
	p.shards = make([]shard, n)
	p.mask = uint64(n - 1)
	for i := range p.shards {
		c := cfg.MaxItems / n
		if i < cfg.MaxItems%n {
			c++
		}
		p.shards[i].init(c, p.nDims)
	}

	p.requests = reg.NewCounter(MetricRequestTotal, names)
	p.failed = reg.NewCounter(MetricRequestFailedTotal, names)
	p.serverSeconds = reg.NewHistogram(MetricRequestServerSeconds, names, cfg.HistogramBuckets)
	p.clientSeconds = reg.NewHistogram(MetricRequestClientSeconds, names, cfg.HistogramBuckets)
	if cfg.EnableMessagingSystemLatencyHistogram {
		p.messagingSec = reg.NewHistogram(MetricRequestMessagingSeconds, names, cfg.HistogramBuckets)
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
	// Dropped counts spans refused because their shard of the store was
	// full. Anything above zero means max_items is too small for the load.
	Dropped uint64
}

// Stats returns the current figures.
func (p *Processor) Stats() Stats {
	s := Stats{
		Capacity:  p.capacity,
		Completed: p.completed.Load(),
		Virtual:   p.virtual.Load(),
		Unpaired:  p.unpairedN.Load(),
		Dropped:   p.droppedN.Load(),
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
	res   otlp.ResolvedDims
	text  []byte
	// dims holds both sides' dimension values of the edge being completed.
	dims []string
	e    edge
	// strs maps request strings to owned copies (see own).
	strs map[string]string
	// batch and batchDims carry expired edges out of a shard's lock.
	batch     []edge
	batchDims []string

	completed, virtual, unpaired, dropped uint64
	expired                               [6]uint64
}

const (
	expireBatch = 256
	// maxOwned bounds a state's string cache: high-cardinality dimension
	// values would otherwise grow it without end.
	maxOwned = 4096
)

func (p *Processor) newState() *state {
	return &state{
		vals:      make([]string, p.nValues),
		sides:     make([]string, 2),
		res:       p.dims.NewResolved(),
		text:      make([]byte, 0, 256),
		dims:      make([]string, 2*p.nDims),
		strs:      make(map[string]string),
		batch:     make([]edge, expireBatch),
		batchDims: make([]string, expireBatch*2*p.nDims),
	}
}

// own returns a copy of s that does not point into the request. Copies are
// cached per scratch state, so the steady state neither allocates nor takes
// a lock shared with other goroutines; the cache is dropped when it grows
// too large, and edges keep the copies they hold alive on their own.
func (st *state) own(s string) string {
	if s == "" {
		return ""
	}
	if c, ok := st.strs[s]; ok {
		return c
	}
	if len(st.strs) >= maxOwned {
		clear(st.strs)
	}
	c := strings.Clone(s)
	st.strs[c] = c
	return c
}

// text returns v as label text, formatting non-string values into st.text;
// the result is valid until st.text is reset.
func (st *state) textOf(v otlp.Value) string {
	if v.Type == otlp.ValueString {
		return v.Str
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
	for i := range st.expired {
		add(&p.expired[i], &st.expired[i])
	}
}

// side is one span's contribution to an edge.
type side struct {
	service string
	span    *otlp.Span
	peer    string
	weight  float64
	client  bool
}

// Push pairs the CLIENT, PRODUCER, SERVER and CONSUMER spans of b. It keeps
// nothing that points into b.
func (p *Processor) Push(b *otlp.Batch) {
	st := p.scratch.Get().(*state)
	now := p.now().UnixNano()
	for ri := range b.Resources {
		p.pushResource(st, &b.Resources[ri], now)
	}
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
	if p.nDims > 0 {
		p.dims.ResolveResource(&st.res, rs.Attributes)
	}
	for si := range rs.Spans {
		s := &rs.Spans[si]
		sd := side{service: service, span: s}
		switch s.Kind {
		case otlp.SpanKindClient, otlp.SpanKindProducer:
			sd.client = true
		case otlp.SpanKindServer, otlp.SpanKindConsumer:
		default:
			continue
		}
		if s.IDError() != "" || !p.filter.Keep(rs.Attributes, s) {
			continue
		}
		st.text = st.text[:0]
		if p.nDims > 0 {
			st.text = p.dims.ResolveSpan(&st.res, s.Attributes, st.text)
		}
		sd.weight = p.weight(rs.Attributes, s)
		if sd.client {
			if p.database(st, rs.Attributes, &sd) {
				continue
			}
			sd.peer = p.peer(st, s)
			p.pushSide(st, makeKey(&s.TraceID, &s.SpanID), &sd, now)
			continue
		}
		if !s.HasParent() {
			sd.peer = p.peer(st, s)
		}
		p.pushSide(st, makeKey(&s.TraceID, &s.ParentSpanID), &sd, now)
	}
}

// pushSide adds one side to the edge under k: it completes the edge when
// the other side waits there, and otherwise leaves the side waiting.
func (p *Processor) pushSide(st *state, k key, sd *side, now int64) {
	sh := &p.shards[shardIndex(k.traceID(), p.mask)]
	sh.mu.Lock()
	if i, ok := sh.index[k]; ok {
		e := sh.edge(i)
		if (sd.client && e.serverKind != 0) || (!sd.client && e.clientKind != 0) {
			// Copy the edge out so that the registry is updated after the
			// lock is released.
			st.e = *e
			copy(st.dims, sh.dims(i))
			sh.remove(i)
			sh.mu.Unlock()
			p.fill(st, &st.e, st.dims, sd, false)
			p.complete(st, &st.e, st.dims)
			return
		}
		// Another span of the same side, such as a second server span under
		// one client span: like Tempo, the latest one stands in for both,
		// so the edge is counted once.
		p.fill(st, e, sh.dims(i), sd, true)
		sh.mu.Unlock()
		return
	}
	i := sh.insert(k, now+p.wait)
	if i == none {
		sh.mu.Unlock()
		p.drop(st, sd)
		return
	}
	p.fill(st, sh.edge(i), sh.dims(i), sd, true)
	sh.mu.Unlock()
}

// fill writes sd into e and its dimension values into dims. owned says
// that e stays in the store, so its strings must be copied.
func (p *Processor) fill(st *state, e *edge, dims []string, sd *side, owned bool) {
	s := sd.span
	service, peer := sd.service, sd.peer
	if owned {
		service, peer = st.own(service), st.own(peer)
	}
	off := 0
	if !sd.client {
		off = p.nDims
	}
	for i := 0; i < p.nDims; i++ {
		v := st.res.Value(i)
		if owned {
			v = st.own(v)
		}
		dims[off+i] = v
	}
	if sd.client {
		e.clientService = service
		e.clientStart, e.clientEnd = s.Start, s.End
		e.clientKind = uint8(s.Kind)
	} else {
		e.serverService = service
		e.serverStart, e.serverEnd = s.Start, s.End
		e.serverKind = uint8(s.Kind)
		e.root = !s.HasParent()
	}
	e.peer = peer
	e.failed = e.failed || s.StatusCode == otlp.StatusError
	e.weight = sd.weight
}

func isMessaging(kind uint8) bool {
	return kind == uint8(otlp.SpanKindProducer) || kind == uint8(otlp.SpanKindConsumer)
}

func (p *Processor) complete(st *state, e *edge, dims []string) {
	conn := ""
	if isMessaging(e.clientKind) || isMessaging(e.serverKind) {
		conn = ConnectionMessaging
	}
	p.record(st, e, dims, e.clientService, e.serverService, conn, "")
}

// database records a client span that carries a database attribute as a
// database edge at once: databases send no spans to wait for. It reports
// whether the span was one.
func (p *Processor) database(st *state, resource []otlp.KeyValue, sd *side) bool {
	s := sd.span
	dbName := ""
	for _, k := range p.cfg.DatabaseNameAttributes {
		if dbName = p.lookup(st, resource, s.Attributes, k); dbName != "" {
			break
		}
	}
	if dbName == "" {
		return false
	}
	server := p.lookup(st, resource, s.Attributes, "peer.service")
	if server == "" {
		server = p.lookup(st, resource, s.Attributes, "server.address")
	}
	if server == "" {
		if host := p.lookup(st, resource, s.Attributes, "network.peer.address"); host != "" {
			server = host
			if port := p.lookup(st, resource, s.Attributes, "network.peer.port"); port != "" {
				start := len(st.text)
				st.text = append(append(append(st.text, host...), ':'), port...)
				server = unsafe.String(&st.text[start], len(st.text)-start)
			}
		}
	}
	if server == "" {
		server = dbName
	}
	st.e = edge{key: makeKey(&s.TraceID, &s.SpanID)}
	clear(st.dims)
	p.fill(st, &st.e, st.dims, sd, false)
	// The client span measured the database call: Tempo records its
	// duration as the server's too.
	st.e.serverStart, st.e.serverEnd, st.e.serverKind = s.Start, s.End, st.e.clientKind
	p.record(st, &st.e, st.dims, sd.service, server, ConnectionDatabase, "")
	return true
}

// lookup returns the text of key, resource first, then span, "" if absent.
func (p *Processor) lookup(st *state, resource, span []otlp.KeyValue, key string) string {
	if v, ok := otlp.Lookup(resource, key); ok {
		if t := st.textOf(v); t != "" {
			return t
		}
	}
	if v, ok := otlp.Lookup(span, key); ok {
		return st.textOf(v)
	}
	return ""
}

// peer returns the first peer attribute of the span. Like Tempo it reads
// only the span's own attributes: the resource describes the span's own
// service, not the one it talks to.
func (p *Processor) peer(st *state, s *otlp.Span) string {
	for _, k := range p.cfg.PeerAttributes {
		if v, ok := otlp.Lookup(s.Attributes, k); ok {
			if t := st.textOf(v); t != "" {
				return t
			}
		}
	}
	return ""
}

// weight is the number of spans s stands for: the span multiplier
// attribute (resource first, then span) times the tracestate's sampling
// multiplier, as for span metrics.
func (p *Processor) weight(resource []otlp.KeyValue, s *otlp.Span) float64 {
	w := 1.0
	if p.cfg.SpanMultiplierKey != "" {
		v, ok := otlp.Lookup(resource, p.cfg.SpanMultiplierKey)
		if !ok {
			v, ok = otlp.Lookup(s.Attributes, p.cfg.SpanMultiplierKey)
		}
		if ok {
			switch v.Type {
			case otlp.ValueDouble:
				w = v.Double
			case otlp.ValueInt:
				w = float64(v.Int)
			}
		}
	}
	if s.TraceState != "" {
		w *= otlp.SamplingMultiplier(s.TraceState)
	}
	if w <= 0 || w != w || math.IsInf(w, 0) {
		return 1
	}
	return w
}

func seconds(start, end uint64) float64 {
	if end <= start {
		return 0
	}
	return float64(end-start) / 1e9
}

// record writes an edge to the registry. Only the sides that were seen get
// a latency observation: a virtual node's duration was never measured, and
// a zero would drag its averages down.
func (p *Processor) record(st *state, e *edge, dims []string, client, server, conn, vnode string) {
	vals := st.vals
	vals[0], vals[1], vals[2] = client, server, conn
	n := p.nDims
	for i := 0; i < n; i++ {
		cv, sv := dims[i], dims[n+i]
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
	p.requests.Add(lv, w)
	if e.failed {
		p.failed.Add(lv, w)
	}
	trace := e.key.traceID()
	if e.clientKind != 0 {
		p.clientSeconds.Observe(lv, seconds(e.clientStart, e.clientEnd), w, trace, int64(e.clientEnd/1e6))
	}
	if e.serverKind != 0 {
		p.serverSeconds.Observe(lv, seconds(e.serverStart, e.serverEnd), w, trace, int64(e.serverEnd/1e6))
	}
	if p.messagingSec != nil && conn == ConnectionMessaging && e.clientKind != 0 && e.serverKind != 0 {
		// A consumer that starts before its producer ends means skewed
		// clocks; Tempo skips those rather than record a zero.
		if d := seconds(e.clientEnd, e.serverStart); d > 0 {
			p.messagingSec.Observe(lv, d, w, trace, int64(e.serverStart/1e6))
		}
	}
	st.completed++
}

// drop counts a span refused by a full store.
func (p *Processor) drop(st *state, sd *side) {
	st.sides[0], st.sides[1] = "", ""
	if sd.client {
		st.sides[0] = sd.service
	} else {
		st.sides[1] = sd.service
	}
	p.dropped.Add(registry.MakeLabelValues(st.sides), 1)
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
	w := 2 * p.nDims
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
				st.batch[n] = *e
				copy(st.batchDims[n*w:(n+1)*w], sh.dims(sh.head))
				sh.remove(sh.head)
				n++
			}
			sh.mu.Unlock()
			for j := 0; j < n; j++ {
				p.settle(st, &st.batch[j], st.batchDims[j*w:(j+1)*w])
			}
			if n < expireBatch {
				break
			}
		}
	}
	p.flush(st)
	p.scratch.Put(st)
}

// settle handles a half edge whose wait is over: a client that names its
// peer becomes an edge to that peer, a root server an edge from its peer or
// from "user"; anything else is an unpaired span.
func (p *Processor) settle(st *state, e *edge, dims []string) {
	kind := e.clientKind
	if kind == 0 {
		kind = e.serverKind
	}
	st.expired[kind]++
	switch {
	case e.clientKind != 0 && e.peer != "":
		p.record(st, e, dims, e.clientService, e.peer, ConnectionVirtualNode, "server")
		st.virtual++
	case e.serverKind != 0 && e.root:
		client := e.peer
		if client == "" {
			client = "user"
		}
		p.record(st, e, dims, client, e.serverService, ConnectionVirtualNode, "client")
		st.virtual++
	default:
		st.sides[0], st.sides[1] = e.clientService, e.serverService
		p.unpaired.Add(registry.MakeLabelValues(st.sides), 1)
		st.unpaired++
	}
}

// selfMetrics describe the processor in the process's own registry.
type selfMetrics struct {
	pending, fill, expired, completed, dropped *prometheus.Desc
}

func newSelfMetrics(tenant string) selfMetrics {
	l := prometheus.Labels{"tenant": tenant}
	return selfMetrics{
		pending: prometheus.NewDesc("spangraph_servicegraph_pending_edges",
			"Half edges waiting in the edge store for their other side.", nil, l),
		fill: prometheus.NewDesc("spangraph_servicegraph_store_fill_ratio",
			"Pending half edges divided by max_items.", nil, l),
		expired: prometheus.NewDesc("spangraph_servicegraph_expired_edges_total",
			"Half edges that waited the whole wait, by the span kind of the side seen.", []string{"span_kind"}, l),
		completed: prometheus.NewDesc("spangraph_servicegraph_completed_edges_total",
			"Edges recorded: paired, database and virtual.", nil, l),
		dropped: prometheus.NewDesc("spangraph_servicegraph_dropped_spans_total",
			"Spans refused because the edge store was full.", nil, l),
	}
}

// Describe implements prometheus.Collector. The engine registers the
// processor in its own registry and unregisters it with its tenant; the
// tenant is a constant label, so every tenant's processor can be
// registered side by side.
func (p *Processor) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.self.pending
	ch <- p.self.fill
	ch <- p.self.expired
	ch <- p.self.completed
	ch <- p.self.dropped
}

// Collect implements prometheus.Collector. The figures are read at scrape
// time, so the hot path pays nothing for them.
func (p *Processor) Collect(ch chan<- prometheus.Metric) {
	s := p.Stats()
	ch <- prometheus.MustNewConstMetric(p.self.pending, prometheus.GaugeValue, float64(s.Pending))
	ch <- prometheus.MustNewConstMetric(p.self.fill, prometheus.GaugeValue, float64(s.Pending)/float64(s.Capacity))
	for _, k := range []otlp.SpanKind{otlp.SpanKindClient, otlp.SpanKindProducer, otlp.SpanKindServer, otlp.SpanKindConsumer} {
		ch <- prometheus.MustNewConstMetric(p.self.expired, prometheus.CounterValue, float64(p.expired[k].Load()), k.String())
	}
	ch <- prometheus.MustNewConstMetric(p.self.completed, prometheus.CounterValue, float64(s.Completed))
	ch <- prometheus.MustNewConstMetric(p.self.dropped, prometheus.CounterValue, float64(s.Dropped))
}
