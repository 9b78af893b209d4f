package processor_test

import (
	"math"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/registry/registrytest"
	"github.com/spangraph/spangraph/pkg/servicegraph"
	"github.com/spangraph/spangraph/pkg/spanfilter"
	"github.com/spangraph/spangraph/pkg/spanmetrics"
)

// This file proves that both processors emit Tempo's series (3.0.3,
// modules/generator/processor/{spanmetrics,servicegraphs} and
// processor/util.GetSpanMultiplier): one fixed request of traces goes
// through spanmetrics and servicegraph into one registry, and every
// collected series (name, labels, value) must be one that Tempo's rules,
// written out below span by span and edge by edge, give, and every such
// series must be there.

// parityTraces is the fixed request: six calls across four services.
//
//	T1 RPC        frontend "GET /cart" CLIENT 0–100 ms → cart "GET /cart" SERVER 10–90 ms (OK)
//	T1 database   cart "SELECT cart" CLIENT 20–25 ms, db.system + server.address cache.local
//	T1 messaging  cart "publish" PRODUCER 30–33 ms → shipping "process" CONSUMER 53–83 ms
//	T2 error      frontend "POST /pay" CLIENT 0–200 ms → payment "POST /pay" SERVER 20–170 ms (ERROR)
//	T2 virtual    payment "charge" CLIENT 30–150 ms, peer.service stripe, which sends no spans
//	T5 virtual    frontend "GET /" root SERVER 0–250 ms (its client is the user)
//	T7 health     frontend "GET /healthz" root SERVER 0–1 ms
//
// Sampling data: sampling.ratio 0.25 (double) on "POST /pay" CLIENT, 2
// (integer) on cart's SERVER, 0.5 (double) on "SELECT cart", 0.1 (double)
// on "charge"; 0.5 (double) on payment's resource, 4 (integer) on
// shipping's; tracestate ot=th:c on "publish".
func parityTraces(t0 time.Time) (*tracepb.ResourceSpans, *tracepb.ResourceSpans, *tracepb.ResourceSpans, *tracepb.ResourceSpans) {
	span := func(trace, id, parent uint64, name string, kind tracepb.Span_SpanKind, from, to time.Duration, attrs ...*commonpb.KeyValue) *tracepb.Span {
		s := &tracepb.Span{
			TraceId: otlptest.TraceID(trace), SpanId: otlptest.SpanID(id), Name: name, Kind: kind, Attributes: attrs,
			StartTimeUnixNano: uint64(t0.Add(from).UnixNano()), EndTimeUnixNano: uint64(t0.Add(to).UnixNano()),
		}
		if parent != 0 {
			s.ParentSpanId = otlptest.SpanID(parent)
		}
		return s
	}
	const (
		client   = tracepb.Span_SPAN_KIND_CLIENT
		server   = tracepb.Span_SPAN_KIND_SERVER
		producer = tracepb.Span_SPAN_KIND_PRODUCER
		consumer = tracepb.Span_SPAN_KIND_CONSUMER
		ms       = time.Millisecond
	)
	str, dbl, integer := otlptest.Str, otlptest.Float, otlptest.Int

	frontend := otlptest.Resource([]*commonpb.KeyValue{
		str("service.name", "frontend"), str("service.namespace", "shop"), str("service.instance.id", "fe-1"), str("deployment.environment", "prod"),
	},
		span(1, 0x11, 0x10, "GET /cart", client, 0, 100*ms, str("http.method", "GET"), str("http.route", "/cart")),
		span(2, 0x21, 0x20, "POST /pay", client, 0, 200*ms, str("http.method", "POST"), dbl("sampling.ratio", 0.25)),
		span(5, 0x51, 0, "GET /", server, 0, 250*ms, str("http.method", "GET"), str("http.route", "/")),
		span(7, 0x71, 0, "GET /healthz", server, 0, 1*ms),
	)
	cartServer := span(1, 0x12, 0x11, "GET /cart", server, 10*ms, 90*ms, str("http.route", "/cart"), integer("sampling.ratio", 2))
	cartServer.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_OK}
	publish := span(1, 0x14, 0x12, "publish", producer, 30*ms, 33*ms)
	publish.TraceState = "vendor=x,ot=th:c"
	cart := otlptest.Resource([]*commonpb.KeyValue{
		str("service.name", "cart"), str("service.instance.id", "cart-1"), str("deployment.environment", "prod"),
	},
		cartServer,
		span(1, 0x13, 0x12, "SELECT cart", client, 20*ms, 25*ms, str("db.system", "redis"), str("server.address", "cache.local"), dbl("sampling.ratio", 0.5)),
		publish,
	)
	payServer := span(2, 0x22, 0x21, "POST /pay", server, 20*ms, 170*ms, str("http.route", "/pay"))
	payServer.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "card declined"}
	payment := otlptest.Resource([]*commonpb.KeyValue{
		str("service.name", "payment"), str("deployment.environment", "staging"), dbl("sampling.ratio", 0.5), str("host.name", "pay-host"),
	},
		payServer,
		span(2, 0x23, 0x22, "charge", client, 30*ms, 150*ms, str("peer.service", "stripe"), dbl("sampling.ratio", 0.1)),
	)
	shipping := otlptest.Resource([]*commonpb.KeyValue{str("service.name", "shipping"), integer("sampling.ratio", 4)},
		span(1, 0x15, 0x14, "process", consumer, 53*ms, 83*ms),
	)
	return frontend, cart, payment, shipping
}

// notObserved marks a latency a rule leaves out.
var notObserved = math.NaN()

// smRow is what Tempo writes for one span: calls_total += mult, latency
// observed with weight mult, size_total += the span's encoded size.
type smRow struct {
	labels  map[string]string
	seconds float64
	mult    float64
	span    *tracepb.Span
}

// sgRow is what Tempo writes for one edge (onComplete): request_total +=
// mult, failed_total += mult when either side failed, server and client
// seconds observed with weight mult, messaging seconds when enabled.
type sgRow struct {
	labels                    map[string]string
	mult                      float64
	failed                    bool
	client, server, messaging float64 // seconds; notObserved leaves one out
}

type expected map[string]float64

func seriesKey(name string, l map[string]string) string {
	b := labels.NewBuilder(labels.EmptyLabels())
	b.Set(labels.MetricName, name)
	for k, v := range l {
		b.Set(k, v) // Tempo drops a label whose value is empty; so does Set
	}
	return b.Labels().String()
}

func (e expected) add(name string, l map[string]string, v float64) { e[seriesKey(name, l)] += v }

// histogram applies Prometheus' classic histogram rule: every bucket whose
// bound is at least the value, +Inf, the sum and the count.
func (e expected) histogram(name string, l map[string]string, bounds []float64, value, weight float64) {
	if math.IsNaN(value) {
		return
	}
	with := func(le string) map[string]string {
		out := map[string]string{"le": le}
		for k, v := range l {
			out[k] = v
		}
		return out
	}
	for _, b := range bounds {
		v := 0.0
		if value <= b {
			v = weight
		}
		e.add(name+"_bucket", with(strconv.FormatFloat(b, 'f', -1, 64)), v)
	}
	e.add(name+"_bucket", with("+Inf"), weight)
	e.add(name+"_sum", l, value*weight)
	e.add(name+"_count", l, weight)
}

func (e expected) spanMetrics(rows []smRow) {
	buckets := spanmetrics.DefaultBuckets()
	for _, r := range rows {
		e.add(spanmetrics.MetricCalls, r.labels, r.mult)
		e.histogram(spanmetrics.MetricLatency, r.labels, buckets, r.seconds, r.mult)
		// size_total is never multiplied (Tempo: span.Size()).
		e.add(spanmetrics.MetricSize, r.labels, float64(proto.Size(r.span)))
	}
}

func (e expected) serviceGraph(rows []sgRow, messaging bool) {
	buckets := servicegraph.DefaultBuckets()
	for _, r := range rows {
		e.add(servicegraph.MetricRequestTotal, r.labels, r.mult)
		if r.failed {
			e.add(servicegraph.MetricRequestFailedTotal, r.labels, r.mult)
		}
		e.histogram(servicegraph.MetricRequestServerSeconds, r.labels, buckets, r.server, r.mult)
		e.histogram(servicegraph.MetricRequestClientSeconds, r.labels, buckets, r.client, r.mult)
		if messaging {
			e.histogram(servicegraph.MetricRequestMessagingSeconds, r.labels, buckets, r.messaging, r.mult)
		}
	}
}

func merge(m ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, x := range m {
		for k, v := range x {
			out[k] = v
		}
	}
	return out
}

// intrinsic are the default span-metrics labels.
func intrinsic(service, name, kind, status string) map[string]string {
	return map[string]string{"service": service, "span_name": name, "span_kind": "SPAN_KIND_" + kind, "status_code": "STATUS_CODE_" + status}
}

// edge are the default service-graph labels; conn "" is plain RPC.
func edge(client, server, conn string) map[string]string {
	return map[string]string{"client": client, "server": server, "connection_type": conn}
}

type parityCase struct {
	name string
	sm   func(*spanmetrics.Config)
	sg   func(*servicegraph.Config)
	want func(fe, cart, pay, ship *tracepb.ResourceSpans) expected
}

// defaultWant gives the series of every span and edge with the default
// settings: no multiplier (every span counts 1), no dimensions, no filter;
// virtualClient and virtualServer give the latency of the unseen side of
// a virtual_node edge from the seen side's (Tempo: zero).
func defaultWant(virtualClient, virtualServer func(seen float64) float64) func(fe, cart, pay, ship *tracepb.ResourceSpans) expected {
	return func(fe, cart, pay, ship *tracepb.ResourceSpans) expected {
		e := expected{}
		f, c, p, s := fe.ScopeSpans[0].Spans, cart.ScopeSpans[0].Spans, pay.ScopeSpans[0].Spans, ship.ScopeSpans[0].Spans
		e.spanMetrics([]smRow{
			{intrinsic("frontend", "GET /cart", "CLIENT", "UNSET"), 0.1, 1, f[0]},
			{intrinsic("frontend", "POST /pay", "CLIENT", "UNSET"), 0.2, 1, f[1]},
			{intrinsic("frontend", "GET /", "SERVER", "UNSET"), 0.25, 1, f[2]},
			{intrinsic("frontend", "GET /healthz", "SERVER", "UNSET"), 0.001, 1, f[3]},
			{intrinsic("cart", "GET /cart", "SERVER", "OK"), 0.08, 1, c[0]},
			{intrinsic("cart", "SELECT cart", "CLIENT", "UNSET"), 0.005, 1, c[1]},
			{intrinsic("cart", "publish", "PRODUCER", "UNSET"), 0.003, 1, c[2]},
			{intrinsic("payment", "POST /pay", "SERVER", "ERROR"), 0.15, 1, p[0]},
			{intrinsic("payment", "charge", "CLIENT", "UNSET"), 0.12, 1, p[1]},
			{intrinsic("shipping", "process", "CONSUMER", "UNSET"), 0.03, 1, s[0]},
		})
		e.serviceGraph([]sgRow{
			// Paired: each side's own duration.
			{labels: edge("frontend", "cart", ""), mult: 1, client: 0.1, server: 0.08},
			// Failed if either side has STATUS_CODE_ERROR.
			{labels: edge("frontend", "payment", ""), mult: 1, failed: true, client: 0.2, server: 0.15},
			// upsertDatabaseRequest: server named by server.address; the
			// client's duration is the server's latency too.
			{labels: edge("cart", "cache.local", "database"), mult: 1, client: 0.005, server: 0.005},
			// A PRODUCER/CONSUMER pair is a messaging_system edge.
			{labels: edge("cart", "shipping", "messaging_system"), mult: 1, client: 0.003, server: 0.03},
			// onExpire: a root server edge from "user" (two root spans:
			// "GET /" and "GET /healthz"); the client side is virtual.
			{labels: edge("user", "frontend", "virtual_node"), mult: 1, client: virtualClient(0.25), server: 0.25},
			{labels: edge("user", "frontend", "virtual_node"), mult: 1, client: virtualClient(0.001), server: 0.001},
			// onExpire: a client naming its peer; the server side is virtual.
			{labels: edge("payment", "stripe", "virtual_node"), mult: 1, client: 0.12, server: virtualServer(0.12)},
		}, false)
		return e
	}
}

func TestParity(t *testing.T) {
	zero := func(float64) float64 { return 0 }
	omit := func(float64) float64 { return notObserved }
	mirror := func(seen float64) float64 { return seen }
	cases := []parityCase{
		{name: "defaults", want: defaultWant(zero, zero)},
		{
			name: "virtual_node_latency omit",
			sg:   func(c *servicegraph.Config) { c.VirtualNodeLatency = servicegraph.VirtualNodeLatencyOmit },
			want: defaultWant(omit, omit),
		},
		{
			name: "virtual_node_latency mirror",
			sg:   func(c *servicegraph.Config) { c.VirtualNodeLatency = servicegraph.VirtualNodeLatencyMirror },
			want: defaultWant(mirror, mirror),
		},
		{
			name: "every optional feature",
			sm: func(c *spanmetrics.Config) {
				c.IntrinsicDimensions.StatusMessage = true
				c.Dimensions = []string{"deployment.environment", "http.route"}
				c.DimensionMappings = []spanmetrics.DimensionMapping{{Name: "endpoint", SourceLabel: []string{"http.method", "http.route"}, Join: " "}}
				c.EnableTargetInfo = true
				c.TargetInfoExcludedDimensions = []string{"host.name"}
				c.FilterPolicies = healthFilter()
				c.SpanMultiplierKey = "sampling.ratio"
				c.EnableTraceStateSpanMultiplier = true
			},
			sg: func(c *servicegraph.Config) {
				c.Dimensions = []string{"deployment.environment"}
				c.EnableClientServerPrefix = true
				c.EnableVirtualNodeLabel = true
				c.EnableMessagingSystemLatencyHistogram = true
				c.FilterPolicies = healthFilter()
				c.SpanMultiplierKey = "sampling.ratio"
				c.EnableTraceStateSpanMultiplier = true
			},
			want: allOnWant,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			smCfg, sgCfg := spanmetrics.DefaultConfig(), servicegraph.DefaultConfig()
			if tc.sm != nil {
				tc.sm(&smCfg)
			}
			if tc.sg != nil {
				tc.sg(&sgCfg)
			}
			reg := registry.New(registry.DefaultConfig())
			sm, err := spanmetrics.New(smCfg, reg)
			if err != nil {
				t.Fatal(err)
			}
			clock := time.Now()
			sg, err := servicegraph.New(sgCfg, reg, servicegraph.Options{Now: func() time.Time { return clock }})
			if err != nil {
				t.Fatal(err)
			}
			fe, cart, pay, ship := parityTraces(time.Now().Add(-time.Second))
			b := otlptest.Batch(t, otlptest.Request(fe, cart, pay, ship))
			sm.Push(b)
			sg.Push(b)
			b.Release()
			// Past the wait, the half edges left become virtual edges.
			clock = clock.Add(sgCfg.Wait)
			sg.Expire()

			got, _ := registrytest.Collect(reg, time.Now())
			compare(t, got, tc.want(fe, cart, pay, ship))
		})
	}
}

// healthFilter excludes spans whose name matches "health" anywhere: Tempo
// matches regexes unanchored.
func healthFilter() []spanfilter.Policy {
	return []spanfilter.Policy{{Exclude: &spanfilter.Match{MatchType: "regex", Attributes: []spanfilter.Attribute{{Key: "name", Value: "health"}}}}}
}

// allOnWant is what Tempo gives with every optional feature on.
func allOnWant(fe, cart, pay, ship *tracepb.ResourceSpans) expected {
	e := expected{}
	f, c, p, s := fe.ScopeSpans[0].Spans, cart.ScopeSpans[0].Spans, pay.ScopeSpans[0].Spans, ship.ScopeSpans[0].Spans
	// Labels of a resource: job is <service.namespace>/<service.name> or
	// the name alone; instance is service.instance.id; dimensions are
	// looked up on the resource first, then on the span.
	feRes := map[string]string{"job": "shop/frontend", "instance": "fe-1", "deployment_environment": "prod"}
	cartRes := map[string]string{"job": "cart", "instance": "cart-1", "deployment_environment": "prod"}
	payRes := map[string]string{"job": "payment", "deployment_environment": "staging"}
	shipRes := map[string]string{"job": "shipping"}
	// endpoint joins the non-empty values of http.method and http.route
	// with " ". GetSpanMultiplier: tracestate first (enabled), then a
	// double ratio on the span, then on the resource; integers do not
	// count.
	e.spanMetrics([]smRow{
		{merge(intrinsic("frontend", "GET /cart", "CLIENT", "UNSET"), feRes, map[string]string{"http_route": "/cart", "endpoint": "GET /cart"}), 0.1, 1, f[0]},
		{merge(intrinsic("frontend", "POST /pay", "CLIENT", "UNSET"), feRes, map[string]string{"endpoint": "POST"}), 0.2, 1 / 0.25, f[1]}, // span 0.25
		{merge(intrinsic("frontend", "GET /", "SERVER", "UNSET"), feRes, map[string]string{"http_route": "/", "endpoint": "GET /"}), 0.25, 1, f[2]},
		// "GET /healthz" is excluded by the filter policy.
		{merge(intrinsic("cart", "GET /cart", "SERVER", "OK"), cartRes, map[string]string{"http_route": "/cart", "endpoint": "/cart"}), 0.08, 1, c[0]},                                             // integer 2: not a ratio
		{merge(intrinsic("cart", "SELECT cart", "CLIENT", "UNSET"), cartRes), 0.005, 1 / 0.5, c[1]},                                                                                                // span 0.5
		{merge(intrinsic("cart", "publish", "PRODUCER", "UNSET"), cartRes), 0.003, 4, c[2]},                                                                                                        // th:c: kept with probability 1/4
		{merge(intrinsic("payment", "POST /pay", "SERVER", "ERROR"), payRes, map[string]string{"status_message": "card declined", "http_route": "/pay", "endpoint": "/pay"}), 0.15, 1 / 0.5, p[0]}, // resource 0.5
		{merge(intrinsic("payment", "charge", "CLIENT", "UNSET"), payRes), 0.12, 1 / 0.1, p[1]},                                                                                                    // the span's 0.1 before the resource's 0.5
		{merge(intrinsic("shipping", "process", "CONSUMER", "UNSET"), shipRes), 0.03, 1, s[0]},                                                                                                     // resource integer 4: not a ratio
	})
	// traces_target_info: one series of value 1 per resource with job or
	// instance and another resource attribute, labelled by the resource's
	// attributes but service.name, service.namespace, service.instance.id
	// and the excluded host.name.
	e.add(spanmetrics.MetricTargetInfo, feRes, 1)
	e.add(spanmetrics.MetricTargetInfo, cartRes, 1)
	e.add(spanmetrics.MetricTargetInfo, merge(payRes, map[string]string{"sampling_ratio": "0.5"}), 1)
	e.add(spanmetrics.MetricTargetInfo, merge(shipRes, map[string]string{"sampling_ratio": "4"}), 1)

	// Edge labels: client_/server_ prefixed dimensions from each side's
	// spans (resource first); virtual_node names the inferred side. The
	// multiplier is that of the edge's latest span.
	e.serviceGraph([]sgRow{
		{labels: merge(edge("frontend", "cart", ""), map[string]string{"client_deployment_environment": "prod", "server_deployment_environment": "prod"}),
			mult: 1, client: 0.1, server: 0.08, messaging: notObserved}, // latest: cart's server, integer 2 ignored
		{labels: merge(edge("frontend", "payment", ""), map[string]string{"client_deployment_environment": "prod", "server_deployment_environment": "staging"}),
			mult: 1 / 0.5, failed: true, client: 0.2, server: 0.15, messaging: notObserved}, // latest: payment's server, resource 0.5
		{labels: merge(edge("cart", "cache.local", "database"), map[string]string{"client_deployment_environment": "prod"}),
			mult: 1 / 0.5, client: 0.005, server: 0.005, messaging: notObserved},
		// Messaging latency: the consumer's start minus the producer's end.
		{labels: merge(edge("cart", "shipping", "messaging_system"), map[string]string{"client_deployment_environment": "prod"}),
			mult: 1, client: 0.003, server: 0.03, messaging: 0.02}, // latest: the consumer, integer 4 ignored
		{labels: merge(edge("user", "frontend", "virtual_node"), map[string]string{"server_deployment_environment": "prod", "virtual_node": "client"}),
			mult: 1, client: 0, server: 0.25, messaging: notObserved},
		{labels: merge(edge("payment", "stripe", "virtual_node"), map[string]string{"client_deployment_environment": "staging", "virtual_node": "server"}),
			mult: 1 / 0.1, client: 0.12, server: 0, messaging: notObserved}, // the client's own 0.1
	}, true)
	return e
}

// compare requires the same series and values: nothing missing, nothing
// extra, values equal to a relative 1e-12.
func compare(t *testing.T, got map[string]float64, want expected) {
	t.Helper()
	var problems []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			problems = append(problems, "missing "+k+" "+strconv.FormatFloat(w, 'g', -1, 64))
		case math.Abs(g-w) > 1e-12*math.Max(1, math.Abs(w)):
			problems = append(problems, k+" = "+strconv.FormatFloat(g, 'g', -1, 64)+", want "+strconv.FormatFloat(w, 'g', -1, 64))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			problems = append(problems, "unexpected "+k+" "+strconv.FormatFloat(g, 'g', -1, 64))
		}
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		t.Errorf("%d series differ from Tempo's:\n%s", len(problems), strings.Join(problems, "\n"))
	}
}
