package query

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
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
	// P90Ms is the p90 latency; with P90Under it is the first bucket's
	// bound and the p90 lies somewhere below it (see quantileMs).
	P90Ms    float64
	P90Under bool
	// ArcSuccess and ArcFailed sum to 1; a node that served nothing (a
	// client only, such as user) has a full success arc, as in Grafana's
	// Tempo service map, and a NaN Rate rather than 0.
	ArcSuccess, ArcFailed float64
	// Instrumented says the node reports spans of its own; an
	// uninstrumented peer or database is known only from its clients.
	Instrumented bool
}

// Edge is a client→server pair of one connection type.
type Edge struct {
	// ID is "client->server", with "/<connection type>" added when the
	// pair has edges of several types (a client that both calls a server
	// and sends it messages): Grafana's node graph keys edges by id and
	// would draw two edges of one id on top of each other.
	ID, Source, Target string
	ConnectionType     string
	Rate               float64
	ErrorRatio         float64
	AvgMs              float64
	// P90Ms and P90Under as for a Node.
	P90Ms    float64
	P90Under bool
}

// Graph is the service graph of a window.
type Graph struct {
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
	// Truncated says MaxNodes dropped the quietest nodes.
	Truncated bool `json:"truncated,omitempty"`
}

// windowLength is the range the figures of [start, end] are rates over:
// the whole window, at least 1m so that rate() has samples at the default
// collection interval.
func windowLength(start, end time.Time) time.Duration {
	d := end.Sub(start)
	if d < time.Minute {
		d = time.Minute
	}
	return d.Truncate(time.Second)
}

// window is windowLength as a PromQL range.
func window(start, end time.Time) string {
	return fmt.Sprintf("%ds", int64(windowLength(start, end).Seconds()))
}

// selector builds `metric{extra,matchers}`.
func selector(metric, matchers string, extra ...string) string {
	parts := append([]string(nil), extra...)
	if m := strings.TrimSpace(matchers); m != "" {
		parts = append(parts, m)
	}
	return metric + "{" + strings.Join(parts, ",") + "}"
}

// parseMatchers parses a PromQL label-matcher list without braces,
// refusing anything else before it is pasted into queries.
func (q *Querier) parseMatchers(m string) ([]*labels.Matcher, error) {
	if strings.TrimSpace(m) == "" {
		return nil, nil
	}
	ms, err := q.parser.ParseMetricSelector("{" + m + "}")
	if err != nil {
		return nil, badData("invalid label filters %q: %v", m, err)
	}
	return ms, nil
}

type edgeKey struct{ client, server, ctype string }

func edgeKeyOf(l labels.Labels) edgeKey {
	return edgeKey{l.Get("client"), l.Get("server"), l.Get("connection_type")}
}

// vector runs an instant query in the caller's slot and returns its
// samples.
func (q *Querier) vector(ctx context.Context, tenant, expr string, ts time.Time) (promql.Vector, error) {
	if err := q.checkText(expr); err != nil {
		return nil, err
	}
	res, err := q.instant(ctx, tenant, expr, ts)
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
//
// The series are read concurrently, as window rates rather than through
// PromQL (see window.go), and each histogram once: the bucket rates per
// edge give the edges' p90 and, summed per server, the nodes' p90.
func (q *Querier) ServiceGraph(ctx context.Context, tenant string, o GraphOptions) (_ *Graph, err error) {
	ctx, done, err := q.begin(ctx)
	if err != nil {
		return nil, q.finish(ctx, err)
	}
	defer done()
	defer func() { err = q.finish(ctx, err) }()
	if o.Depth <= 0 {
		o.Depth = 2
	}
	if o.MaxNodes <= 0 {
		o.MaxNodes = 1500
	}
	extra, err := q.parseMatchers(o.Matchers)
	if err != nil {
		return nil, err
	}
	src, err := q.graphSource(tenant, o.End, windowLength(o.Start, o.End))
	if err != nil {
		return nil, err
	}
	defer src.close()

	// The edges are those with requests in the window. They are numbered
	// first, so that the other series of an edge land in plain columns
	// that the jobs, running concurrently, fill through one read-only
	// index instead of each growing a map of its own.
	tbl := &edgeTable{newKeyTable[edgeKey]()}
	var requests []float64
	if err := src.run(ctx, []windowJob{tbl.number(metricRequests, extra, &requests)}); err != nil {
		return nil, err
	}
	// The columns are sized before they are filled: bound them first.
	srvBounds, err := src.bucketBounds(ctx, metricServerSeconds+"_bucket", extra)
	if err != nil {
		return nil, err
	}
	cliBounds, err := src.bucketBounds(ctx, metricClientSeconds+"_bucket", extra)
	if err != nil {
		return nil, err
	}
	perEdge := 6 + len(srvBounds) + len(cliBounds)
	if n := len(tbl.keys) * perEdge; n > q.cfg.MaxSamples {
		return nil, refuse(ErrorExec, ReasonTooManySamples,
			"the service graph would hold %d figures (%d edges × %d series) in memory, over query.max_samples (%d); narrow it with filters",
			n, len(tbl.keys), perEdge, q.cfg.MaxSamples)
	}
	var failed, srvSum, srvCount, cliSum, cliCount []float64
	jobs := []windowJob{
		tbl.column(metricFailed, extra, &failed),
		tbl.column(metricServerSeconds+"_sum", extra, &srvSum),
		tbl.column(metricServerSeconds+"_count", extra, &srvCount),
		tbl.column(metricClientSeconds+"_sum", extra, &cliSum),
		tbl.column(metricClientSeconds+"_count", extra, &cliCount),
	}
	// The buckets are most of the series (see bucketColumns for how
	// each source reads them best).
	_, onePass := src.(*rollingSource)
	srvBuckets := tbl.bucketColumns(metricServerSeconds+"_bucket", srvBounds, extra, onePass, &jobs)
	cliBuckets := tbl.bucketColumns(metricClientSeconds+"_bucket", cliBounds, extra, onePass, &jobs)
	if err := src.run(ctx, jobs); err != nil {
		return nil, err
	}
	// A node is instrumented when it reports span metrics of its own;
	// the edges alone cannot say which side of a virtual_node edge is
	// virtual.
	instrumented, err := src.withSamples(ctx, "service", labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, metricCalls))
	if err != nil {
		return nil, err
	}

	keep := map[string]bool{}
	for _, c := range o.ConnectionTypes {
		keep[c] = true
	}
	var edges []Edge
	for i, k := range tbl.keys {
		if o.ConnectionTypes != nil && !keep[k.ctype] {
			continue
		}
		// An uninstrumented server measured nothing: its server-side
		// histogram is empty, or holds Tempo's zero-second stand-ins
		// (servicegraph.virtual_node_latency: zero). The clients' view is
		// the best there is. Without span metrics nothing is known to be
		// instrumented, and only an empty histogram says so.
		sum, count, buckets := srvSum[i], srvCount[i], srvBuckets
		if count == 0 || (len(instrumented) > 0 && !instrumented[k.server]) {
			sum, count, buckets = cliSum[i], cliCount[i], cliBuckets
		}
		p90, under := buckets.quantileMs(0.9, i)
		edges = append(edges, Edge{
			Source:         k.client,
			Target:         k.server,
			ConnectionType: k.ctype,
			Rate:           requests[i],
			ErrorRatio:     ratio(failed[i], requests[i]),
			AvgMs:          ratio(sum, count) * 1000,
			P90Ms:          p90,
			P90Under:       under,
		})
	}
	var native *nativeFigures
	if _, sg := q.native(tenant); sg {
		if native, err = q.nativeGraph(ctx, tenant, o, o.End, instrumented); err != nil {
			return nil, err
		}
		native.apply(edges)
	}
	setEdgeIDs(edges)
	sort.Slice(edges, func(i, j int) bool { return edges[i].ID < edges[j].ID })
	if o.Service != "" {
		edges = neighbourhood(edges, o.Service, o.Depth)
	}
	g := buildNodes(edges, instrumented)
	g.capNodes(o.MaxNodes)

	// A node's p90 comes from the server-side buckets of the edges into it;
	// an uninstrumented node has none, so the clients' view stands in.
	nodeBuckets, fallback := srvBuckets.byServer(tbl), cliBuckets.byServer(tbl)
	for i := range g.Nodes {
		id := g.Nodes[i].ID
		p, under := nodeBuckets.quantileMs(0.9, id)
		if math.IsNaN(p) || (len(instrumented) > 0 && !instrumented[id]) {
			p, under = fallback.quantileMs(0.9, id)
		}
		if v, ok := native.nodeP90(id); ok {
			p, under = v, false
		}
		g.Nodes[i].P90Ms, g.Nodes[i].P90Under = p, under
	}
	return g, nil
}

// edgeTable numbers the edges of a window.
type edgeTable struct{ keyTable[edgeKey] }

// number sums the rates of metric per edge into *into, numbering each
// edge it meets; it must run alone, before the columns are filled.
func (t *edgeTable) number(metric string, extra []*labels.Matcher, into *[]float64) windowJob {
	return windowJob{
		matchers: withName(metric, extra...),
		add: func(l labels.Labels, k seriesKey, r float64) {
			i := t.add(k.full(), func() edgeKey { return edgeKeyOf(l) })
			if i == len(*into) {
				*into = append(*into, 0)
			}
			(*into)[i] += r
		},
	}
}

// column sums the rates of metric per numbered edge into *into, as `sum
// by (client, server, connection_type)` does; edges without requests are
// left out.
func (t *edgeTable) column(metric string, extra []*labels.Matcher, into *[]float64) windowJob {
	col := make([]float64, len(t.keys))
	*into = col
	return windowJob{
		matchers: withName(metric, extra...),
		add: func(_ labels.Labels, k seriesKey, r float64) {
			if i, ok := t.find(k.full()); ok {
				col[i] += r
			}
		},
	}
}

func withName(metric string, extra ...*labels.Matcher) []*labels.Matcher {
	return append([]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, metric)}, extra...)
}

// bucketColumns holds a histogram's bucket rates: a column of edges per
// bucket bound. Bounds written alike ("1" and "1.0") are separate columns
// that the quantile adds up.
type bucketColumns []struct {
	bound float64
	rates []float64
}

// bucketColumns adds to jobs what fills a column per bucket bound (le
// value) of metric. From the TSDB, a job per bound, each selecting its
// series through the index, spreads them over the cores. From the
// rolling window, one job reads every bucket series in the order the
// store holds them and adds each to the column of its bound: a job per
// bound read the same series in strides and cost twice the CPU in cache
// misses (BenchmarkServiceGraphRolling).
func (t *edgeTable) bucketColumns(metric string, les []string, extra []*labels.Matcher, onePass bool, jobs *[]windowJob) bucketColumns {
	// Sized once: the jobs keep pointers into it.
	out := make(bucketColumns, len(les))
	for i, le := range les {
		out[i].bound, _ = strconv.ParseFloat(le, 64)
	}
	if !onePass {
		for i, le := range les {
			only := labels.MustNewMatcher(labels.MatchEqual, "le", le)
			*jobs = append(*jobs, t.column(metric, append(slices.Clone(extra), only), &out[i].rates))
		}
		return out
	}
	// Bounds written alike ("1" and "1.0") share the first's column, as
	// the quantile would add them up.
	col := make(map[uint64]int, len(les))
	for i := range out {
		out[i].rates = make([]float64, len(t.keys))
		if _, ok := col[math.Float64bits(out[i].bound)]; !ok {
			col[math.Float64bits(out[i].bound)] = i
		}
	}
	*jobs = append(*jobs, windowJob{
		matchers: withName(metric, extra...),
		add: func(_ labels.Labels, k seriesKey, r float64) {
			b, ok := k.bound()
			if !ok {
				return
			}
			c, ok := col[math.Float64bits(b)]
			if !ok {
				return
			}
			if i, ok := t.find(k.full()); ok {
				out[c].rates[i] += r
			}
		},
	})
	return out
}

// quantileMs is quantileMs over edge i's buckets.
func (b bucketColumns) quantileMs(q float64, i int) (float64, bool) {
	buckets := make(promql.Buckets, 0, len(b))
	for _, c := range b {
		buckets = append(buckets, promql.Bucket{UpperBound: c.bound, Count: c.rates[i]})
	}
	return quantileMs(q, buckets)
}

// serverBuckets holds bucket rates summed per server, one slice per
// server in the order of the columns.
type serverBuckets struct {
	bounds []float64
	of     map[string][]float64
}

// byServer sums the edges' bucket rates per server, edge by edge in
// table order, so that sums never depend on map order.
func (b bucketColumns) byServer(t *edgeTable) serverBuckets {
	out := serverBuckets{of: map[string][]float64{}}
	for _, c := range b {
		out.bounds = append(out.bounds, c.bound)
	}
	for i, k := range t.keys {
		sums := out.of[k.server]
		if sums == nil {
			sums = make([]float64, len(b))
			out.of[k.server] = sums
		}
		for j, c := range b {
			sums[j] += c.rates[i]
		}
	}
	return out
}

// quantileMs is quantileMs over the buckets of server.
func (s serverBuckets) quantileMs(q float64, server string) (float64, bool) {
	sums, ok := s.of[server]
	if !ok {
		return math.NaN(), false
	}
	buckets := make(promql.Buckets, 0, len(sums))
	for j, c := range sums {
		buckets = append(buckets, promql.Bucket{UpperBound: s.bounds[j], Count: c})
	}
	return quantileMs(q, buckets)
}

// quantileMs is histogram_quantile over cumulative bucket rates, in ms:
// NaN without observations or without a +Inf bucket. When the quantile
// falls in the first bucket, histogram_quantile interpolates between 0
// and its bound, a figure the data does not hold (1 ms calls would show
// a p90 of 90 ms under Tempo's first bound of 100 ms): then it returns
// that bound and under, meaning "below this".
func quantileMs(q float64, buckets promql.Buckets) (ms float64, under bool) {
	v, _, _, _, _, _ := promql.BucketQuantile(q, buckets)
	first := math.Inf(1)
	for _, b := range buckets {
		first = min(first, b.UpperBound)
	}
	if !math.IsNaN(v) && !math.IsInf(first, 1) && v <= first {
		return first * 1000, true
	}
	return v * 1000, false
}

// ratio is a/b, NaN when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// setEdgeIDs names each edge "client->server", and adds the connection
// type to the pairs that have several, so that every id is unique.
func setEdgeIDs(edges []Edge) {
	types := map[[2]string]int{}
	for _, e := range edges {
		types[[2]string{e.Source, e.Target}]++
	}
	for i, e := range edges {
		edges[i].ID = e.Source + "->" + e.Target
		if types[[2]string{e.Source, e.Target}] > 1 {
			ctype := e.ConnectionType
			if ctype == "" {
				ctype = "rpc"
			}
			edges[i].ID += "/" + ctype
		}
	}
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
			ArcSuccess: 1, ArcFailed: 0}
		known := instrumented[id]
		if len(instrumented) == 0 {
			known = a.isClient || a.rpcServer
		}
		n.Instrumented = known
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
		} else {
			n.Rate = math.NaN()
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
