package query

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
)

// Service-graph metric names, as Tempo writes them and Grafana's service
// map reads them.
const (
	metricRequests      = "traces_service_graph_request_total"
	metricFailed        = "traces_service_graph_request_failed_total"
	metricServerSeconds = "traces_service_graph_request_server_seconds"
	metricClientSeconds = "traces_service_graph_request_client_seconds"
)

// GraphOptions select the part of the service graph to build.
type GraphOptions struct {
	// Start and End bound the window the figures are averaged over.
	Start, End time.Time
	// Service, when set, keeps only that service and its neighbours up to
	// Depth hops (default 2).
	Service string
	Depth   int
	// ConnectionTypes keeps edges of these types; nil keeps all, "" is a
	// plain RPC edge.
	ConnectionTypes []string
	// Matchers are extra PromQL label matchers for the edge metrics,
	// without braces, e.g. `deployment_environment="prod"`.
	Matchers string
	// MaxNodes caps the nodes, keeping the busiest (default 1500, what
	// Grafana's node graph panel draws).
	MaxNodes int
}

// Node is a service, database or uninstrumented peer. Figures that are
// unknown (no server-side traffic) are NaN.
type Node struct {
	ID, Title, Subtitle string
	// Kind is service, database or virtual (not instrumented).
	Kind string
	// Rate is the requests per second the node served.
	Rate       float64
	ErrorRatio float64
	AvgMs      float64
	P90Ms      float64
	// ArcSuccess and ArcFailed sum to 1 when the node served requests.
	ArcSuccess, ArcFailed float64
}

// Edge is a client→server pair.
type Edge struct {
	ID, Source, Target string
	ConnectionType     string
	Rate               float64
	ErrorRatio         float64
	AvgMs              float64
	P90Ms              float64
}

// Graph is the service graph of a window.
type Graph struct {
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
	// Truncated says MaxNodes dropped the quietest nodes.
	Truncated bool `json:"truncated,omitempty"`
}

// window returns the PromQL range of o: the whole window, at least 1m so
// that rate() has samples at the default collection interval.
func window(start, end time.Time) string {
	d := end.Sub(start)
	if d < time.Minute {
		d = time.Minute
	}
	return fmt.Sprintf("%ds", int64(d.Seconds()))
}

// selector builds `metric{extra,matchers}`.
func selector(metric, matchers string, extra ...string) string {
	parts := append([]string(nil), extra...)
	if m := strings.TrimSpace(matchers); m != "" {
		parts = append(parts, m)
	}
	return metric + "{" + strings.Join(parts, ",") + "}"
}

// validateMatchers refuses matchers that are not a PromQL label-matcher
// list, before they are pasted into queries.
func (q *Querier) validateMatchers(m string) error {
	if strings.TrimSpace(m) == "" {
		return nil
	}
	if _, err := q.parser.ParseMetricSelector("{" + m + "}"); err != nil {
		return badData("invalid label filters %q: %v", m, err)
	}
	return nil
}

type edgeKey struct{ client, server, ctype string }

func edgeKeyOf(l labels.Labels) edgeKey {
	return edgeKey{l.Get("client"), l.Get("server"), l.Get("connection_type")}
}

// vector runs an instant query and returns its samples.
func (q *Querier) vector(ctx context.Context, tenant, expr string, ts time.Time) (promql.Vector, error) {
	res, err := q.Instant(ctx, tenant, expr, ts)
	if err != nil {
		return nil, err
	}
	v, ok := res.Value.(promql.Vector)
	if !ok {
		return nil, fmt.Errorf("query %s returned %s, not a vector", expr, res.Value.Type())
	}
	return v, nil
}

// NodeQueries returns the PromQL behind a node's figures, for links to
// Explore: requests per second, error ratio and p90 latency in seconds.
func NodeQueries(service string, o GraphOptions) map[string]string {
	w := "$__rate_interval"
	srv := fmt.Sprintf("server=%q", service)
	return map[string]string{
		"rate":      fmt.Sprintf("sum(rate(%s[%s]))", selector(metricRequests, o.Matchers, srv), w),
		"errorRate": fmt.Sprintf("sum(rate(%s[%s])) / sum(rate(%s[%s]))", selector(metricFailed, o.Matchers, srv), w, selector(metricRequests, o.Matchers, srv), w),
		"p90":       fmt.Sprintf("histogram_quantile(0.9, sum by (le) (rate(%s[%s])))", selector(metricServerSeconds+"_bucket", o.Matchers, srv), w),
	}
}

// ServiceGraph builds nodes and edges over o's window from the same
// series Grafana's Tempo service map reads.
func (q *Querier) ServiceGraph(ctx context.Context, tenant string, o GraphOptions) (*Graph, error) {
	if err := q.validateMatchers(o.Matchers); err != nil {
		return nil, err
	}
	if o.Depth <= 0 {
		o.Depth = 2
	}
	if o.MaxNodes <= 0 {
		o.MaxNodes = 1500
	}
	w := window(o.Start, o.End)
	by := "client, server, connection_type"
	sumRate := func(metric string, extraBy string) string {
		return fmt.Sprintf("sum by (%s%s) (rate(%s[%s]))", by, extraBy, selector(metric, o.Matchers), w)
	}
	exprs := []string{
		sumRate(metricRequests, ""),
		sumRate(metricFailed, ""),
		sumRate(metricServerSeconds+"_sum", ""),
		sumRate(metricServerSeconds+"_count", ""),
		sumRate(metricClientSeconds+"_sum", ""),
		sumRate(metricClientSeconds+"_count", ""),
		fmt.Sprintf("histogram_quantile(0.9, %s)", sumRate(metricServerSeconds+"_bucket", ", le")),
		fmt.Sprintf("histogram_quantile(0.9, %s)", sumRate(metricClientSeconds+"_bucket", ", le")),
	}
	results := make([]map[edgeKey]float64, len(exprs))
	for i, e := range exprs {
		v, err := q.vector(ctx, tenant, e, o.End)
		if err != nil {
			return nil, err
		}
		m := make(map[edgeKey]float64, len(v))
		for _, s := range v {
			m[edgeKeyOf(s.Metric)] = s.F
		}
		results[i] = m
	}
	requests, failed := results[0], results[1]
	srvSum, srvCount, cliSum, cliCount := results[2], results[3], results[4], results[5]
	srvP90, cliP90 := results[6], results[7]

	keep := map[string]bool{}
	for _, c := range o.ConnectionTypes {
		keep[c] = true
	}
	var edges []Edge
	for k, rate := range requests {
		if o.ConnectionTypes != nil && !keep[k.ctype] {
			continue
		}
		// An uninstrumented server has no server-side latency; the
		// client's view is the best there is.
		sum, count, p90 := srvSum[k], srvCount[k], srvP90[k]
		if count == 0 {
			sum, count, p90 = cliSum[k], cliCount[k], cliP90[k]
		}
		edges = append(edges, Edge{
			ID:             k.client + "->" + k.server,
			Source:         k.client,
			Target:         k.server,
			ConnectionType: k.ctype,
			Rate:           rate,
			ErrorRatio:     ratio(failed[k], rate),
			AvgMs:          ratio(sum, count) * 1000,
			P90Ms:          p90 * 1000,
		})
	}
	if o.Service != "" {
		edges = neighbourhood(edges, o.Service, o.Depth)
	}
	// A node is instrumented when it reports span metrics of its own; the
	// edges alone cannot say which side of a virtual_node edge is virtual.
	instrumented := map[string]bool{}
	services, err := q.vector(ctx, tenant, fmt.Sprintf("group by (service) (last_over_time(%s[%s]))", metricCalls, w), o.End)
	if err != nil {
		return nil, err
	}
	for _, s := range services {
		instrumented[s.Metric.Get("service")] = true
	}
	g := buildNodes(edges, instrumented)
	g.capNodes(o.MaxNodes)
	nodeP90, err := q.vector(ctx, tenant, fmt.Sprintf("histogram_quantile(0.9, sum by (server, le) (rate(%s[%s])))",
		selector(metricServerSeconds+"_bucket", o.Matchers), w), o.End)
	if err != nil {
		return nil, err
	}
	p90 := map[string]float64{}
	for _, s := range nodeP90 {
		p90[s.Metric.Get("server")] = s.F * 1000
	}
	// An uninstrumented node has no server-side histogram: take the p90
	// its busiest caller sees.
	busiest := map[string]Edge{}
	for _, e := range g.Edges {
		if b, ok := busiest[e.Target]; !ok || e.Rate > b.Rate {
			busiest[e.Target] = e
		}
	}
	for i := range g.Nodes {
		if v, ok := p90[g.Nodes[i].ID]; ok {
			g.Nodes[i].P90Ms = v
		} else if e, ok := busiest[g.Nodes[i].ID]; ok {
			g.Nodes[i].P90Ms = e.P90Ms
		}
	}
	return g, nil
}

// ratio is a/b, NaN when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// neighbourhood keeps the edges within depth hops of service, in either
// direction.
func neighbourhood(edges []Edge, service string, depth int) []Edge {
	adj := map[string][]string{}
	for _, e := range edges {
		adj[e.Source] = append(adj[e.Source], e.Target)
		adj[e.Target] = append(adj[e.Target], e.Source)
	}
	dist := map[string]int{service: 0}
	frontier := []string{service}
	for d := 1; d <= depth && len(frontier) > 0; d++ {
		var next []string
		for _, n := range frontier {
			for _, m := range adj[n] {
				if _, seen := dist[m]; !seen {
					dist[m] = d
					next = append(next, m)
				}
			}
		}
		frontier = next
	}
	var out []Edge
	for _, e := range edges {
		ds, okS := dist[e.Source]
		dt, okT := dist[e.Target]
		// Both ends inside, and the edge leads away from the centre or
		// links two nodes at the rim's inside.
		if okS && okT && (ds < depth || dt < depth) {
			out = append(out, e)
		}
	}
	return out
}

// buildNodes derives the nodes from the edges: what a node served is the
// sum of its incoming edges. Without span metrics (instrumented empty), a
// node counts as instrumented when it calls others or serves RPC or
// messaging.
func buildNodes(edges []Edge, instrumented map[string]bool) *Graph {
	type acc struct {
		rate, failed, latSum float64
		isClient, rpcServer  bool
		database             bool
	}
	accs := map[string]*acc{}
	get := func(id string) *acc {
		a := accs[id]
		if a == nil {
			a = &acc{}
			accs[id] = a
		}
		return a
	}
	for _, e := range edges {
		get(e.Source).isClient = true
		t := get(e.Target)
		t.rate += e.Rate
		t.failed += e.Rate * nanToZero(e.ErrorRatio)
		t.latSum += e.Rate * nanToZero(e.AvgMs)
		switch e.ConnectionType {
		case "", "messaging_system":
			t.rpcServer = true
		case "database":
			t.database = true
		}
	}
	g := &Graph{Edges: edges}
	for id, a := range accs {
		n := Node{ID: id, Title: id, Kind: "service", Rate: a.rate,
			ErrorRatio: ratio(a.failed, a.rate), AvgMs: ratio(a.latSum, a.rate), P90Ms: math.NaN(),
			ArcSuccess: 0, ArcFailed: 0}
		known := instrumented[id]
		if len(instrumented) == 0 {
			known = a.isClient || a.rpcServer
		}
		switch {
		case known:
		case a.database:
			n.Kind, n.Subtitle = "database", "database"
		default:
			n.Kind, n.Subtitle = "virtual", "not instrumented"
		}
		if a.rate > 0 {
			n.ArcFailed = a.failed / a.rate
			n.ArcSuccess = 1 - n.ArcFailed
		}
		g.Nodes = append(g.Nodes, n)
	}
	sort.Slice(g.Nodes, func(i, j int) bool { return g.Nodes[i].ID < g.Nodes[j].ID })
	sort.Slice(g.Edges, func(i, j int) bool { return g.Edges[i].ID < g.Edges[j].ID })
	return g
}

func nanToZero(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

// capNodes keeps the max busiest nodes (by traffic in and out) and the
// edges between them.
func (g *Graph) capNodes(max int) {
	if len(g.Nodes) <= max {
		return
	}
	traffic := map[string]float64{}
	for _, e := range g.Edges {
		traffic[e.Source] += e.Rate
		traffic[e.Target] += e.Rate
	}
	sort.SliceStable(g.Nodes, func(i, j int) bool { return traffic[g.Nodes[i].ID] > traffic[g.Nodes[j].ID] })
	g.Nodes = g.Nodes[:max]
	kept := map[string]bool{}
	for _, n := range g.Nodes {
		kept[n.ID] = true
	}
	edges := g.Edges[:0]
	for _, e := range g.Edges {
		if kept[e.Source] && kept[e.Target] {
			edges = append(edges, e)
		}
	}
	g.Edges = edges
	g.Truncated = true
	sort.Slice(g.Nodes, func(i, j int) bool { return g.Nodes[i].ID < g.Nodes[j].ID })
}
