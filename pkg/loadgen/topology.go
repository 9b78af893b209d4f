// Package loadgen makes realistic traces and sends them over OTLP. It feeds
// `spangraph demo` and `spangraph loadgen`, and the end-to-end tests and
// benchmarks.
package loadgen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// CallKind is how one service reaches another.
type CallKind int

// The kinds of calls in a topology.
const (
	// RPC is a CLIENT span in the caller and a SERVER span in the callee.
	RPC CallKind = iota
	// Database is a CLIENT span with db.* attributes and no server side.
	Database
	// Messaging is a PRODUCER span and a CONSUMER span in the callee.
	Messaging
	// External is a CLIENT span to an uninstrumented peer (peer.service).
	External
)

// Call is an edge of the topology.
type Call struct {
	To   string
	Kind CallKind
	// Op is the operation the callee serves (or the db statement / topic).
	Op string
	// System is db.system or messaging.system.
	System string
}

// Service is a node of the topology.
type Service struct {
	Name string
	// Ops are the server operations (span names) it serves.
	Ops   []string
	Calls []Call
	// ErrorRatio is the share of its server spans that fail.
	ErrorRatio float64
	// Latency is the median of its own work.
	Latency time.Duration
}

// Topology is a set of services; Entry is called by users.
type Topology struct {
	Services map[string]*Service
	Entry    string
}

// Shop returns a web shop: a frontend, nine backend services, Postgres,
// Redis, a Kafka topic and an external payment provider. Beyond its ten
// services, extra ones are added as a random call tree below it, up to
// services in all.
func Shop(services int, rng *rand.Rand) *Topology {
	t := &Topology{Entry: "frontend", Services: map[string]*Service{}}
	add := func(s *Service) { t.Services[s.Name] = s }
	add(&Service{Name: "frontend", Ops: []string{"GET /", "GET /product/{id}", "POST /cart", "POST /checkout"}, Latency: 4 * time.Millisecond,
		ErrorRatio: 0.005,
		Calls: []Call{
			{To: "productcatalog", Op: "GetProduct"}, {To: "cart", Op: "GetCart"},
			{To: "recommendation", Op: "ListRecommendations"}, {To: "ad", Op: "GetAds"},
			{To: "checkout", Op: "PlaceOrder"}, {To: "currency", Op: "Convert"},
		}})
	add(&Service{Name: "checkout", Ops: []string{"PlaceOrder"}, Latency: 8 * time.Millisecond, ErrorRatio: 0.02,
		Calls: []Call{
			{To: "cart", Op: "EmptyCart"}, {To: "payment", Op: "Charge"}, {To: "shipping", Op: "ShipOrder"},
			{To: "email", Kind: Messaging, Op: "orders", System: "kafka"}, {To: "currency", Op: "Convert"},
		}})
	add(&Service{Name: "cart", Ops: []string{"GetCart", "EmptyCart", "AddItem"}, Latency: 2 * time.Millisecond, ErrorRatio: 0.001,
		Calls: []Call{{To: "redis", Kind: Database, Op: "HGET", System: "redis"}}})
	add(&Service{Name: "productcatalog", Ops: []string{"GetProduct", "ListProducts"}, Latency: 3 * time.Millisecond, ErrorRatio: 0.001,
		Calls: []Call{{To: "catalog", Kind: Database, Op: "SELECT products", System: "postgresql"}}})
	add(&Service{Name: "recommendation", Ops: []string{"ListRecommendations"}, Latency: 6 * time.Millisecond, ErrorRatio: 0.01,
		Calls: []Call{{To: "productcatalog", Op: "ListProducts"}}})
	add(&Service{Name: "payment", Ops: []string{"Charge"}, Latency: 5 * time.Millisecond, ErrorRatio: 0.03,
		Calls: []Call{{To: "stripe", Kind: External, Op: "POST /v1/charges"}}})
	add(&Service{Name: "shipping", Ops: []string{"ShipOrder", "GetQuote"}, Latency: 3 * time.Millisecond, ErrorRatio: 0.005})
	add(&Service{Name: "email", Ops: []string{"orders process"}, Latency: 10 * time.Millisecond, ErrorRatio: 0.002})
	add(&Service{Name: "currency", Ops: []string{"Convert"}, Latency: time.Millisecond})
	add(&Service{Name: "ad", Ops: []string{"GetAds"}, Latency: 2 * time.Millisecond, ErrorRatio: 0.001})
	names := []string{"frontend", "checkout", "cart", "productcatalog", "recommendation", "payment", "shipping", "email", "currency", "ad"}
	for i := len(names); i < services; i++ {
		name := fmt.Sprintf("service-%03d", i)
		parent := t.Services[names[rng.IntN(len(names))]]
		parent.Calls = append(parent.Calls, Call{To: name, Op: "Handle"})
		add(&Service{Name: name, Ops: []string{"Handle"}, Latency: time.Duration(1+rng.IntN(5)) * time.Millisecond, ErrorRatio: 0.01})
		names = append(names, name)
	}
	return t
}

// Generator builds export requests from a topology.
type Generator struct {
	top *Topology
	rng *rand.Rand
	// MaxDepth bounds the call depth of a trace.
	MaxDepth int
	// SpanNames adds a random suffix out of this many to server span
	// names, to stress span-name cardinality; 0 keeps names as they are.
	SpanNames int
	// ErrorScale multiplies every service's error ratio.
	ErrorScale float64
	// AttributeValues, when positive, gives every span an attribute
	// app.customer with this many distinct values, for stressing
	// attribute dimensions.
	AttributeValues int
	// SilentFraction, when positive, adds client calls that never pair
	// until they are this share of all spans: half to uninstrumented
	// peers named by peer.service (virtual edges), half to hosts known
	// only by server.address, which is no peer attribute (unpaired spans).
	// They are what waits the whole wait in an edge store.
	SilentFraction float64

	byService map[string]*tracepb.ResourceSpans
	order     []string
	// spans counts the spans emitted; servers are the server spans of the
	// trace at hand, which silent calls hang below.
	spans   int
	servers []served
}

// served is a server span that silent calls can be made from.
type served struct {
	service    string
	id         []byte
	start, end time.Time
}

// Peers that send no spans, for SilentFraction: named ones and bare hosts.
var (
	silentPeers = []string{"maps-api", "fraud-score", "sms-gateway"}
	silentHosts = []string{"api.partner.example", "cdn.assets.example", "10.0.3.17"}
)

// NewGenerator returns a generator over top, deterministic for a seed.
func NewGenerator(top *Topology, seed uint64) *Generator {
	return &Generator{top: top, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), MaxDepth: 6, ErrorScale: 1}
}

// Request builds one export request of the given number of traces, all
// ending just before now, with the spans grouped by service.
func (g *Generator) Request(traces int, now time.Time) *coltracepb.ExportTraceServiceRequest {
	g.byService = map[string]*tracepb.ResourceSpans{}
	g.order = g.order[:0]
	for i := 0; i < traces; i++ {
		var traceID [16]byte
		g.fill(traceID[:])
		entry := g.top.Services[g.top.Entry]
		op := entry.Ops[g.rng.IntN(len(entry.Ops))]
		// Traces start a little apart and end before now.
		start := now.Add(-time.Duration(200+g.rng.IntN(800)) * time.Millisecond)
		g.servers = g.servers[:0]
		first := g.spans
		g.serve(entry, tracepb.Span_SPAN_KIND_SERVER, op, traceID, nil, start, 0)
		if g.SilentFraction > 0 {
			g.silentCalls(traceID, g.spans-first)
		}
	}
	req := &coltracepb.ExportTraceServiceRequest{}
	for _, name := range g.order {
		req.ResourceSpans = append(req.ResourceSpans, g.byService[name])
	}
	return req
}

func (g *Generator) fill(b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := g.rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

func (g *Generator) spanID() []byte {
	b := make([]byte, 8)
	g.fill(b)
	return b
}

func (g *Generator) resource(name string) *tracepb.ResourceSpans {
	if rs := g.byService[name]; rs != nil {
		return rs
	}
	rs := &tracepb.ResourceSpans{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			str("service.name", name),
			str("service.namespace", "shop"),
			str("service.instance.id", name+"-0"),
			str("deployment.environment", "demo"),
		}},
		ScopeSpans: []*tracepb.ScopeSpans{{}},
	}
	g.byService[name] = rs
	g.order = append(g.order, name)
	return rs
}

func (g *Generator) emit(service string, s *tracepb.Span) {
	rs := g.resource(service)
	rs.ScopeSpans[0].Spans = append(rs.ScopeSpans[0].Spans, s)
	g.spans++
	if s.Kind == tracepb.Span_SPAN_KIND_SERVER {
		g.servers = append(g.servers, served{service, s.SpanId,
			time.Unix(0, int64(s.StartTimeUnixNano)), time.Unix(0, int64(s.EndTimeUnixNano))})
	}
}

// silentCalls adds to a trace of n spans the client calls that make
// SilentFraction of them never pair, each made from one of the trace's
// server spans, alternately to a named peer and to a bare host.
func (g *Generator) silentCalls(traceID [16]byte, n int) {
	want := float64(n) * g.SilentFraction / (1 - g.SilentFraction)
	k := int(want)
	if g.rng.Float64() < want-float64(k) {
		k++
	}
	for i := 0; i < k && len(g.servers) > 0; i++ {
		from := g.servers[g.rng.IntN(len(g.servers))]
		start := from.start.Add(time.Duration(g.rng.Int64N(int64(from.end.Sub(from.start)) + 1)))
		span := &tracepb.Span{
			TraceId: traceID[:], SpanId: g.spanID(), ParentSpanId: from.id, Kind: tracepb.Span_SPAN_KIND_CLIENT,
			StartTimeUnixNano: uint64(start.UnixNano()),
			EndTimeUnixNano:   uint64(start.Add(g.latency(20 * time.Millisecond)).UnixNano()),
		}
		if i%2 == 0 {
			peer := silentPeers[g.rng.IntN(len(silentPeers))]
			span.Name = "POST /" + peer
			span.Attributes = []*commonpb.KeyValue{str("peer.service", peer), str("http.request.method", "POST")}
		} else {
			span.Name = "GET"
			span.Attributes = []*commonpb.KeyValue{str("server.address", silentHosts[g.rng.IntN(len(silentHosts))]), str("http.request.method", "GET")}
		}
		span.Status = spanStatus(g.rng.Float64() < 0.01*g.ErrorScale)
		g.emit(from.service, span)
	}
}

// latency draws a log-normal duration around median.
func (g *Generator) latency(median time.Duration) time.Duration {
	f := math.Exp(g.rng.NormFloat64() * 0.5)
	return time.Duration(float64(median) * f)
}

// serve emits the server or consumer span of svc for op, with its calls,
// and returns its end time and whether it failed.
func (g *Generator) serve(svc *Service, kind tracepb.Span_SpanKind, op string, traceID [16]byte, parent []byte, start time.Time, depth int) (time.Time, bool) {
	id := g.spanID()
	name := op
	if g.SpanNames > 0 {
		name = fmt.Sprintf("%s %d", op, g.rng.IntN(g.SpanNames))
	}
	t := start.Add(g.latency(svc.Latency) / 2)
	failed := g.rng.Float64() < svc.ErrorRatio*g.ErrorScale
	if depth < g.MaxDepth {
		for _, c := range g.pick(svc.Calls) {
			end, childFailed := g.call(svc, c, traceID, id, t, depth)
			t = end
			failed = failed || (childFailed && g.rng.Float64() < 0.5)
		}
	}
	end := t.Add(g.latency(svc.Latency) / 2)
	span := &tracepb.Span{
		TraceId: traceID[:], SpanId: id, ParentSpanId: parent, Name: name, Kind: kind,
		StartTimeUnixNano: uint64(start.UnixNano()), EndTimeUnixNano: uint64(end.UnixNano()),
		Attributes: []*commonpb.KeyValue{str("http.route", op)},
		Status:     spanStatus(failed),
	}
	if g.AttributeValues > 0 {
		span.Attributes = append(span.Attributes, str("app.customer", fmt.Sprintf("customer-%d", g.rng.IntN(g.AttributeValues))))
	}
	g.emit(svc.Name, span)
	return end, failed
}

// pick chooses the calls one request makes: each call with probability
// 0.7, at least one when there are any.
func (g *Generator) pick(calls []Call) []Call {
	var out []Call
	for _, c := range calls {
		if g.rng.Float64() < 0.7 {
			out = append(out, c)
		}
	}
	if len(out) == 0 && len(calls) > 0 {
		out = append(out, calls[g.rng.IntN(len(calls))])
	}
	return out
}

// call emits the caller side of c and, for RPC and messaging, the callee's
// spans; it returns when the caller is done waiting.
func (g *Generator) call(from *Service, c Call, traceID [16]byte, parent []byte, start time.Time, depth int) (time.Time, bool) {
	id := g.spanID()
	span := &tracepb.Span{TraceId: traceID[:], SpanId: id, ParentSpanId: parent, StartTimeUnixNano: uint64(start.UnixNano())}
	net := time.Duration(200+g.rng.IntN(600)) * time.Microsecond
	var end time.Time
	failed := false
	switch c.Kind {
	case RPC:
		span.Kind, span.Name = tracepb.Span_SPAN_KIND_CLIENT, c.Op
		span.Attributes = []*commonpb.KeyValue{str("rpc.method", c.Op)}
		var srvEnd time.Time
		srvEnd, failed = g.serve(g.top.Services[c.To], tracepb.Span_SPAN_KIND_SERVER, c.Op, traceID, id, start.Add(net/2), depth+1)
		end = srvEnd.Add(net / 2)
	case Database:
		span.Kind, span.Name = tracepb.Span_SPAN_KIND_CLIENT, c.Op
		span.Attributes = []*commonpb.KeyValue{str("db.system", c.System), str("db.name", c.To), str("server.address", c.To)}
		end = start.Add(g.latency(time.Millisecond) + net)
		failed = g.rng.Float64() < 0.001*g.ErrorScale
	case External:
		span.Kind, span.Name = tracepb.Span_SPAN_KIND_CLIENT, c.Op
		span.Attributes = []*commonpb.KeyValue{str("peer.service", c.To), str("http.request.method", "POST")}
		end = start.Add(g.latency(40*time.Millisecond) + net)
		failed = g.rng.Float64() < 0.01*g.ErrorScale
	case Messaging:
		span.Kind, span.Name = tracepb.Span_SPAN_KIND_PRODUCER, c.Op+" publish"
		span.Attributes = []*commonpb.KeyValue{str("messaging.system", c.System), str("messaging.destination.name", c.Op)}
		end = start.Add(net)
		// The consumer runs after the producer is done.
		g.serve(g.top.Services[c.To], tracepb.Span_SPAN_KIND_CONSUMER, c.Op+" process", traceID, id, end.Add(time.Duration(1+g.rng.IntN(5))*time.Millisecond), depth+1)
	}
	span.EndTimeUnixNano = uint64(end.UnixNano())
	span.Status = spanStatus(failed)
	g.emit(from.Name, span)
	return end, failed
}

func spanStatus(failed bool) *tracepb.Status {
	if failed {
		return &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "request failed"}
	}
	return nil
}

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}
