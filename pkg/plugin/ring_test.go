package plugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend/grpcplugin"
	"github.com/grafana/grafana-plugin-sdk-go/data"
	"github.com/grafana/grafana-plugin-sdk-go/genproto/pluginv2"
	goplugin "github.com/hashicorp/go-plugin"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/loadgen"
	"github.com/spangraph/spangraph/pkg/promtest"
)

// TestPluginRing: two plugin processes, driven as Grafana drives them, form
// one ring, remote-write to one Prometheus and read from it as their
// query_backend. Shop traces go to both, whole traces alternately and each
// service's spans apart, every service always to the same plugin, so that
// most calls have their client span received by one plugin and their
// server span by the other. Then
//   - through either plugin, every span is counted once and every edge's
//     request count is what the traces sent make, cross-plugin edges
//     included;
//   - the node graph, the RED table and PromQL queries answer with the same
//     frames, value for value, from either plugin;
//   - plugin A reads plugin B's series: Prometheus answers, not A's store.
func TestPluginRing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin binary, starts Prometheus and two plugin processes")
	}
	prom := promtest.Start(t)
	bin := buildPlugin(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "spangraph.yaml")
	// Calls to the payment provider, which sends no spans, become edges
	// once they have waited: 2s rather than 10s.
	if err := os.WriteFile(cfgFile, []byte("servicegraph:\n  wait: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	gossip := []string{freeAddr(t), freeAddr(t)}
	ring := make([]*ringPlugin, len(gossip))
	for i := range ring {
		p := &ringPlugin{id: fmt.Sprintf("plugin-%c", 'a'+i), otlpHTTP: freeAddr(t)}
		rpc := launchPlugin(t, bin,
			"GF_PLUGIN_CONFIG_FILE="+cfgFile,
			"GF_PLUGIN_DATA_DIR="+filepath.Join(dir, p.id),
			"GF_PLUGIN_OTLP_HTTP="+p.otlpHTTP,
			"GF_PLUGIN_OTLP_GRPC="+freeAddr(t),
			"GF_PLUGIN_COLLECTION_INTERVAL=1s",
			"GF_PLUGIN_CLUSTER_JOIN="+strings.Join(gossip, ","),
			"GF_PLUGIN_CLUSTER_LISTEN="+gossip[i],
			"GF_PLUGIN_CLUSTER_ADVERTISE=127.0.0.1",
			"GF_PLUGIN_CLUSTER_INSTANCE_ID="+p.id,
			"GF_PLUGIN_REMOTE_WRITE_URL="+prom.WriteURL(),
			"GF_PLUGIN_QUERY_BACKEND_URL="+prom.URL(),
		)
		p.diag = dispense(t, rpc, "diagnostics").(grpcplugin.DiagnosticsClient)
		p.data = dispense(t, rpc, "data").(grpcplugin.DataClient)
		ring[i] = p
	}
	a, b := ring[0], ring[1]

	for _, p := range ring {
		pollUntil(t, 30*time.Second, p.id+" sees both members and reads from Prometheus", func() string {
			h, err := p.diag.CheckHealth(t.Context(), &pluginv2.CheckHealthRequest{PluginContext: ringPluginContext()})
			if err != nil {
				return err.Error()
			}
			if h.Status != pluginv2.CheckHealthResponse_OK || !strings.Contains(h.Message, "ring: 2 members, 2 healthy") ||
				!strings.Contains(h.Message, "reads go to query_backend "+prom.URL()) {
				return fmt.Sprintf("health %v: %s", h.Status, h.Message)
			}
			return ""
		})
	}
	toRing := time.Since(began)

	// Each service always goes to the same plugin: alternately in name
	// order.
	top := loadgen.Shop(10, nil)
	var names []string
	for name := range top.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	receivedBy := map[string]int{}
	for i, name := range names {
		receivedBy[name] = i % len(ring)
	}
	gen := loadgen.NewGenerator(top, 42)
	sent := ringTraffic{edges: map[[2]string]float64{}}
	sendStart := time.Now()
	for i := 0; i < 10; i++ {
		req := gen.Request(20, time.Now())
		sent.add(req)
		ring[i%len(ring)].export(t, req)
	}
	for i := 0; i < 10; i++ {
		req := gen.Request(20, time.Now())
		sent.add(req)
		for _, rs := range req.ResourceSpans {
			to, ok := receivedBy[serviceName(rs)]
			if !ok {
				t.Fatalf("spans of %q, a service the shop does not have", serviceName(rs))
			}
			ring[to].export(t, &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{rs}})
		}
	}
	// The edges whose client and server spans were received by different
	// plugins, in the split traffic; the whole traces add to them.
	var cross [][2]string
	for e := range sent.edges {
		c, okC := receivedBy[e[0]]
		s, okS := receivedBy[e[1]]
		if okC && okS && c != s {
			cross = append(cross, e)
		}
	}
	if len(cross) < 5 {
		t.Fatalf("only %d edges of the shop join services received by different plugins: %v", len(cross), cross)
	}

	// Exact figures: every span accepted is one call, and every edge has
	// the requests the traces make. Both plugins must already show them,
	// read from Prometheus at the same instant.
	wantEdges := map[string]float64{}
	for e, n := range sent.edges {
		wantEdges[data.Labels{"client": e[0], "server": e[1]}.String()] = n
	}
	pollUntil(t, 45*time.Second, "every span and edge in Prometheus", func() string {
		now := time.Now()
		for _, p := range ring {
			if calls := p.instant(t, `sum(traces_spanmetrics_calls_total)`, now)[""]; calls != float64(sent.spans) {
				return fmt.Sprintf("%s: %v calls, want the %d spans sent", p.id, calls, sent.spans)
			}
			if got := p.instant(t, `sum by (client, server) (traces_service_graph_request_total)`, now); !reflect.DeepEqual(got, wantEdges) {
				return fmt.Sprintf("%s: edge requests %v, want %v", p.id, got, wantEdges)
			}
		}
		return ""
	})
	counted := time.Since(sendStart)

	// A window whose every sample is in Prometheus: each series has one
	// after its end (remote write keeps a series' samples in order).
	end := time.Now()
	pollUntil(t, 30*time.Second, "every series written past the window's end", func() string {
		// timestamp() drops the metric name: keep it in a label, or the
		// series of two metrics could clash.
		last := a.instant(t, `min(timestamp(label_replace({__name__=~"traces_.+"}, "name", "$1", "__name__", "(.+)")))`, time.Now())[""]
		if last <= float64(end.UnixMilli())/1000 {
			return fmt.Sprintf("oldest newest sample at %v, window ends at %v", time.UnixMilli(int64(last*1000)).Format(time.StampMilli), end.Format(time.StampMilli))
		}
		return ""
	})
	from := sendStart.Add(-time.Minute)
	var graph data.Frames
	for _, tc := range []struct {
		name  string
		model map[string]any
	}{
		{"node graph", map[string]any{"queryType": QueryTypeServiceGraph}},
		{"RED table", map[string]any{"queryType": QueryTypeREDTable}},
		{"PromQL sum", map[string]any{"expr": `sum(traces_spanmetrics_calls_total)`, "instant": true, "range": false}},
		{"PromQL by service", map[string]any{"expr": `sum by (service, span_kind) (traces_spanmetrics_calls_total)`, "instant": true, "range": true}},
	} {
		fa, fb := a.query(t, tc.model, from, end), b.query(t, tc.model, from, end)
		if len(fa) == 0 || fa[0].Rows() == 0 {
			t.Errorf("%s: no rows from %s:\n%s", tc.name, a.id, frameText(fa))
		}
		if d := framesDiff(fa, fb); d != "" {
			t.Errorf("%s: %s and %s differ: %s", tc.name, a.id, b.id, d)
		}
		switch tc.name {
		case "node graph":
			graph = fa
		case "PromQL sum":
			var v any
			if len(fa) == 1 && len(fa[0].Fields) == 2 && fa[0].Rows() == 1 {
				v, _ = fa[0].Fields[1].ConcreteAt(0)
			}
			if v != float64(sent.spans) {
				t.Errorf("%s at the window's end: %v calls, want the %d spans sent", a.id, v, sent.spans)
			}
		}
	}
	equal := time.Since(sendStart)

	// The node graph has exactly the edges sent, the cross-plugin ones
	// with traffic.
	instrumented, err := readNodeGraph(graph)
	if err != nil {
		t.Fatalf("the node graph as Grafana reads it: %v\n%s", err, frameText(graph))
	}
	for _, name := range names {
		if !instrumented[name] {
			t.Errorf("node graph: service %s is not instrumented", name)
		}
	}
	for _, peer := range []string{"user", "redis", "catalog", "stripe"} {
		if inst, ok := instrumented[peer]; !ok || inst {
			t.Errorf("node graph: peer %s present %v, instrumented %v; want present and not instrumented", peer, ok, inst)
		}
	}
	rates := map[[2]string]float64{}
	edges := graph[1]
	for j := 0; j < edges.Rows(); j++ {
		e := [2]string{edges.Fields[1].At(j).(string), edges.Fields[2].At(j).(string)}
		if v, ok := edges.Fields[4].ConcreteAt(j); ok {
			rates[e] = v.(float64)
		} else {
			rates[e] = 0
		}
	}
	if len(rates) != len(sent.edges) {
		t.Errorf("node graph edges %v, want those of %v", rates, sent.edges)
	}
	for e := range sent.edges {
		if _, ok := rates[e]; !ok {
			t.Errorf("node graph lacks the edge %s -> %s", e[0], e[1])
		}
	}
	for _, e := range cross {
		if rates[e] <= 0 {
			t.Errorf("edge %s -> %s, client spans to %s and server spans to %s: rate %v, want > 0",
				e[0], e[1], ring[receivedBy[e[0]]].id, ring[receivedBy[e[1]]].id, rates[e])
		}
	}

	// Plugin A sees plugin B's series: its reads go to Prometheus.
	at := time.Now()
	if n := a.instant(t, `count(count by (__metrics_gen_instance) (traces_spanmetrics_calls_total))`, at)[""]; n != 2 {
		t.Errorf("%s reads the series of %v instances, want both", a.id, n)
	}
	byInstance := a.instant(t, `sum by (__metrics_gen_instance) (traces_spanmetrics_calls_total)`, at)
	for _, p := range ring {
		if byInstance[data.Labels{"__metrics_gen_instance": p.id}.String()] <= 0 {
			t.Errorf("%s reads no calls counted by %s: %v", a.id, p.id, byInstance)
		}
	}
	t.Logf("ring of 2 healthy, reading from Prometheus, %s after the first start", toRing.Round(100*time.Millisecond))
	t.Logf("%d spans sent; every span and edge counted %s after the first send, equal answers %s after it",
		sent.spans, counted.Round(100*time.Millisecond), equal.Round(100*time.Millisecond))
	t.Logf("node graph: %d nodes, %d edges (%d of them between services sent to different plugins); calls by instance: %v",
		graph[0].Rows(), edges.Rows(), len(cross), byInstance)
}

// ringPlugin is one plugin process of TestPluginRing.
type ringPlugin struct {
	id, otlpHTTP string
	diag         grpcplugin.DiagnosticsClient
	data         grpcplugin.DataClient
}

// ringPluginContext is the datasource both plugins are asked as.
func ringPluginContext() *pluginv2.PluginContext {
	return &pluginv2.PluginContext{
		OrgId:    1,
		PluginId: PluginID,
		DataSourceInstanceSettings: &pluginv2.DataSourceInstanceSettings{
			Id: 1, Uid: "spangraph-uid", Name: "Spangraph",
			JsonData: []byte(`{"tracesDatasourceUid":"tempo"}`), LastUpdatedMS: 1,
		},
	}
}

// export sends req to the plugin's OTLP/HTTP port and fails unless every
// span is accepted.
func (p *ringPlugin) export(t *testing.T, req *coltracepb.ExportTraceServiceRequest) {
	t.Helper()
	body, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+p.otlpHTTP+"/v1/traces", "application/x-protobuf", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("OTLP export to %s: %s %s", p.id, resp.Status, raw)
	}
	var out coltracepb.ExportTraceServiceResponse
	if err := proto.Unmarshal(raw, &out); err != nil {
		t.Fatalf("OTLP export to %s: %v", p.id, err)
	}
	if ps := out.GetPartialSuccess(); ps.GetRejectedSpans() != 0 {
		t.Fatalf("OTLP export to %s: %d spans rejected: %s", p.id, ps.GetRejectedSpans(), ps.GetErrorMessage())
	}
}

// query runs one query over [from, to] and returns its frames; a query
// error fails the test.
func (p *ringPlugin) query(t *testing.T, model map[string]any, from, to time.Time) data.Frames {
	t.Helper()
	raw, err := json.Marshal(model)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.data.QueryData(t.Context(), &pluginv2.QueryDataRequest{
		PluginContext: ringPluginContext(),
		Queries: []*pluginv2.DataQuery{{
			RefId: "A", Json: raw, IntervalMS: 1000, MaxDataPoints: 300,
			TimeRange: &pluginv2.TimeRange{FromEpochMS: from.UnixMilli(), ToEpochMS: to.UnixMilli()},
		}},
	})
	if err != nil {
		t.Fatalf("%s: %v", p.id, err)
	}
	r := res.Responses["A"]
	if r.Error != "" {
		t.Fatalf("%s: %s", p.id, r.Error)
	}
	frames, err := data.UnmarshalArrowFrames(r.Frames)
	if err != nil {
		t.Fatal(err)
	}
	return frames
}

// instant evaluates a PromQL expression at at through the plugin and
// returns each series' value by its labels (data.Labels.String).
func (p *ringPlugin) instant(t *testing.T, expr string, at time.Time) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, f := range p.query(t, map[string]any{"expr": expr, "instant": true, "range": false}, at.Add(-time.Minute), at) {
		if len(f.Fields) != 2 {
			continue // no series: a frame without fields
		}
		v := f.Fields[1]
		for j := 0; j < v.Len(); j++ {
			x, _ := v.ConcreteAt(j)
			out[v.Labels.String()] = x.(float64)
		}
	}
	return out
}

// ringTraffic is what the traces sent make: spans, and the requests of
// each client → server edge.
type ringTraffic struct {
	spans int
	edges map[[2]string]float64
}

// add counts the traces of req, whole in it, by the service graph's rules
// (Tempo's): a CLIENT or PRODUCER span and the SERVER or CONSUMER span
// under it are one edge; a call that no span answers is an edge to the
// peer.service it names (at once for a database, after the wait for a
// peer), else to its server.address; a root SERVER span is an edge from
// user.
func (w *ringTraffic) add(req *coltracepb.ExportTraceServiceRequest) {
	answeredBy := map[string]string{}
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				if (s.Kind == tracepb.Span_SPAN_KIND_SERVER || s.Kind == tracepb.Span_SPAN_KIND_CONSUMER) && len(s.ParentSpanId) > 0 {
					answeredBy[string(s.TraceId)+string(s.ParentSpanId)] = serviceName(rs)
				}
			}
		}
	}
	for _, rs := range req.ResourceSpans {
		svc := serviceName(rs)
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				w.spans++
				switch s.Kind {
				case tracepb.Span_SPAN_KIND_SERVER:
					if len(s.ParentSpanId) == 0 {
						w.edges[[2]string{"user", svc}]++
					}
				case tracepb.Span_SPAN_KIND_CLIENT, tracepb.Span_SPAN_KIND_PRODUCER:
					server := answeredBy[string(s.TraceId)+string(s.SpanId)]
					for _, k := range []string{"peer.service", "server.address"} {
						if server == "" {
							server = attribute(s, k)
						}
					}
					if server != "" {
						w.edges[[2]string{svc, server}]++
					}
				}
			}
		}
	}
}

func serviceName(rs *tracepb.ResourceSpans) string {
	for _, kv := range rs.GetResource().GetAttributes() {
		if kv.Key == "service.name" {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func attribute(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

// framesDiff describes the first difference between two answers, "" when
// they are equal in every frame, field, value, label, config and meta.
func framesDiff(a, b data.Frames) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d frames against %d", len(a), len(b))
	}
	for i := range a {
		fa, fb := a[i], b[i]
		if fa.Name != fb.Name || len(fa.Fields) != len(fb.Fields) || fa.Rows() != fb.Rows() {
			return fmt.Sprintf("frame %d: %q of %d fields × %d rows against %q of %d × %d",
				i, fa.Name, len(fa.Fields), fa.Rows(), fb.Name, len(fb.Fields), fb.Rows())
		}
		for j, x := range fa.Fields {
			y := fb.Fields[j]
			if x.Name != y.Name || x.Labels.String() != y.Labels.String() {
				return fmt.Sprintf("frame %q field %d: %s{%s} against %s{%s}", fa.Name, j, x.Name, x.Labels, y.Name, y.Labels)
			}
			for r := 0; r < x.Len(); r++ {
				if !reflect.DeepEqual(x.At(r), y.At(r)) {
					vx, _ := x.ConcreteAt(r)
					vy, _ := y.ConcreteAt(r)
					return fmt.Sprintf("frame %q field %s row %d: %v against %v", fa.Name, x.Name, r, vx, vy)
				}
			}
		}
		ja, err := json.Marshal(fa)
		if err != nil {
			return err.Error()
		}
		jb, err := json.Marshal(fb)
		if err != nil {
			return err.Error()
		}
		if !bytes.Equal(ja, jb) {
			return fmt.Sprintf("frame %q: schema or meta:\n%s\nagainst\n%s", fa.Name, ja, jb)
		}
	}
	return ""
}

// pollUntil calls cond every 200ms until it returns "" and fails the test
// with its last answer when timeout has passed.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, timeout, msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func dispense(t *testing.T, rpc goplugin.ClientProtocol, name string) any {
	t.Helper()
	raw, err := rpc.Dispense(name)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
