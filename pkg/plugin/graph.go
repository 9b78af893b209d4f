package plugin

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/data"

	"github.com/spangraph/spangraph/pkg/query"
)

func graphOptions(tr backend.TimeRange, m queryModel) query.GraphOptions {
	return withGraphDefaults(query.GraphOptions{
		Start: tr.From, End: tr.To,
		Service: m.Service, Depth: m.Depth,
		ConnectionTypes: m.ConnectionTypes,
		Matchers:        m.Filters,
		MaxNodes:        m.MaxNodes,
	})
}

func redOptions(tr backend.TimeRange, m queryModel) query.REDOptions {
	return withREDDefaults(query.REDOptions{
		Start: tr.From, End: tr.To,
		GroupBy: m.GroupBy, SpanKinds: m.SpanKinds, TopN: m.TopN,
		Matchers: m.Filters, Service: m.Service,
	})
}

func (i *Instance) serviceGraph(ctx context.Context, tr backend.TimeRange, m queryModel) backend.DataResponse {
	frames, err := i.serviceGraphFrames(ctx, graphOptions(tr, m))
	if err != nil {
		return errResponse("service graph", err)
	}
	return backend.DataResponse{Frames: frames}
}

func (i *Instance) serviceGraphFrames(ctx context.Context, o query.GraphOptions) (data.Frames, error) {
	g, err := i.svc.querier.ServiceGraph(ctx, i.settings.Tenant, o)
	if err != nil {
		return nil, err
	}
	return i.graphFrames(g, o), nil
}

func (i *Instance) redTable(ctx context.Context, tr backend.TimeRange, m queryModel) backend.DataResponse {
	f, err := i.redFrame(ctx, redOptions(tr, m))
	if err != nil {
		return errResponse("RED table", err)
	}
	return backend.DataResponse{Frames: data.Frames{f}}
}

func (i *Instance) redFrame(ctx context.Context, o query.REDOptions) (*data.Frame, error) {
	rows, err := i.svc.querier.REDTable(ctx, i.settings.Tenant, o)
	if err != nil {
		return nil, err
	}
	return i.redTableFrame(rows, o), nil
}

// nullable turns the unknown (NaN) figures into nulls, which panels show
// as empty rather than as "NaN".
func nullable(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// latencyText is a quantile as the node graph's details show it: "245 ms",
// or "< 100 ms" when it lies in the first bucket, below whose bound the
// buckets say nothing more; nil when unknown.
func latencyText(ms float64, under bool) *string {
	if nullable(ms) == nil {
		return nil
	}
	s := strconv.FormatFloat(ms, 'f', -1, 64) + " ms"
	if under {
		s = "< " + s
	} else if ms >= 10 {
		s = strconv.FormatFloat(math.Round(ms), 'f', -1, 64) + " ms"
	} else {
		s = strconv.FormatFloat(math.Round(ms*10)/10, 'f', -1, 64) + " ms"
	}
	return &s
}

func fixedColor(c string) map[string]any { return map[string]any{"mode": "fixed", "fixedColor": c} }

// graphFrames are the node graph panel's frames, with the field names,
// units and colours of Grafana's Tempo service map so that both read alike.
func (i *Instance) graphFrames(g *query.Graph, o query.GraphOptions) data.Frames {
	n := len(g.Nodes)
	ids, titles, subtitles, kinds, traceQL := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	avg, rate, ok, failed := make([]*float64, n), make([]*float64, n), make([]*float64, n), make([]*float64, n)
	errPct, p90 := make([]*string, n), make([]*string, n)
	instrumented := make([]bool, n)
	peer := i.peerTraceQL()
	for j, nd := range g.Nodes {
		ids[j], titles[j], subtitles[j], kinds[j] = nd.ID, nd.Title, nd.Subtitle, nd.Kind
		avg[j], rate[j] = nullable(nd.AvgMs), nullable(nd.Rate)
		ok[j], failed[j] = nullable(nd.ArcSuccess), nullable(nd.ArcFailed)
		errPct[j], p90[j] = percentText(nd.ErrorRatio), latencyText(nd.P90Ms, nd.P90Under)
		instrumented[j] = nd.Instrumented
		traceQL[j] = serviceTraceQL(nd.ID)
		if !nd.Instrumented {
			traceQL[j] = peer(nd.ID)
		}
	}
	idField := data.NewField("id", nil, ids)
	idField.Config = &data.FieldConfig{Links: i.nodeLinks(o)}
	nodes := data.NewFrame("nodes",
		idField,
		withConfig(data.NewField("title", nil, titles), &data.FieldConfig{DisplayName: "Name"}),
		data.NewField("subtitle", nil, subtitles),
		withConfig(data.NewField("mainstat", nil, avg), &data.FieldConfig{DisplayName: "Average response time", Unit: "ms/r"}),
		withConfig(data.NewField("secondarystat", nil, rate), &data.FieldConfig{DisplayName: "Requests per second", Unit: "r/sec"}),
		withConfig(data.NewField("arc__success", nil, ok), &data.FieldConfig{DisplayName: "Success", Color: fixedColor("green")}),
		withConfig(data.NewField("arc__failed", nil, failed), &data.FieldConfig{DisplayName: "Failed", Color: fixedColor("red")}),
		withConfig(data.NewField("detail__error_percent", nil, errPct), &data.FieldConfig{DisplayName: "Errors"}),
		withConfig(data.NewField("detail__p90", nil, p90), &data.FieldConfig{DisplayName: "p90 latency"}),
		withConfig(data.NewField("detail__kind", nil, kinds), &data.FieldConfig{DisplayName: "Kind"}),
		// The node graph draws an uninstrumented node apart.
		data.NewField("isInstrumented", nil, instrumented),
		// What "View traces" searches: the node's own spans, or, for a
		// peer that sends none, the spans that name it.
		data.NewField("traceql", nil, traceQL),
	)
	nodes.Meta = &data.FrameMeta{PreferredVisualization: data.VisTypeNodeGraph}
	if g.Truncated {
		nodes.AppendNotices(data.Notice{Severity: data.NoticeSeverityWarning,
			Text: fmt.Sprintf("showing the %d busiest nodes only: raise maxNodes, pick a service or add filters", len(g.Nodes))})
	}

	e := len(g.Edges)
	eids, sources, targets, ctypes := make([]string, e), make([]string, e), make([]string, e), make([]string, e)
	eavg, erate := make([]*float64, e), make([]*float64, e)
	eerr, ep90 := make([]*string, e), make([]*string, e)
	etraceQL := make([]string, e)
	instrumentedNode := map[string]bool{}
	for _, nd := range g.Nodes {
		instrumentedNode[nd.ID] = nd.Instrumented
	}
	for j, ed := range g.Edges {
		eids[j], sources[j], targets[j] = ed.ID, ed.Source, ed.Target
		ctypes[j] = ed.ConnectionType
		if ctypes[j] == "" {
			ctypes[j] = "rpc"
		}
		eavg[j], erate[j] = nullable(ed.AvgMs), nullable(ed.Rate)
		eerr[j], ep90[j] = percentText(ed.ErrorRatio), latencyText(ed.P90Ms, ed.P90Under)
		etraceQL[j] = serviceTraceQL(ed.Target)
		if !instrumentedNode[ed.Target] {
			etraceQL[j] = peer(ed.Target)
		}
	}
	edgeID := data.NewField("id", nil, eids)
	edgeID.Config = &data.FieldConfig{Links: i.edgeLinks(o)}
	edges := data.NewFrame("edges",
		edgeID,
		data.NewField("source", nil, sources),
		data.NewField("target", nil, targets),
		withConfig(data.NewField("mainstat", nil, eavg), &data.FieldConfig{DisplayName: "Average response time", Unit: "ms/r"}),
		withConfig(data.NewField("secondarystat", nil, erate), &data.FieldConfig{DisplayName: "Requests per second", Unit: "r/sec"}),
		withConfig(data.NewField("detail__error_percent", nil, eerr), &data.FieldConfig{DisplayName: "Errors"}),
		withConfig(data.NewField("detail__p90", nil, ep90), &data.FieldConfig{DisplayName: "p90 latency"}),
		withConfig(data.NewField("detail__connection_type", nil, ctypes), &data.FieldConfig{DisplayName: "Connection type"}),
		data.NewField("traceql", nil, etraceQL),
	)
	edges.Meta = &data.FrameMeta{PreferredVisualization: data.VisTypeNodeGraph}
	return data.Frames{nodes, edges}
}

func withConfig(f *data.Field, c *data.FieldConfig) *data.Field {
	f.Config = c
	return f
}

// exploreLink opens expr in Explore on this datasource; ${__data.fields.…}
// in it is filled in by Grafana from the clicked row.
func (i *Instance) exploreLink(title, expr string) data.DataLink {
	return data.DataLink{
		Title: title,
		Internal: &data.InternalDataLink{
			DatasourceUID:  i.uid,
			DatasourceName: i.name,
			Query:          map[string]any{"refId": "A", "queryType": QueryTypePromQL, "expr": expr, "range": true},
		},
	}
}

// tracesLink searches the traces datasource (Tempo, TraceQL) for traceql.
func (i *Instance) tracesLink(traceql string) []data.DataLink {
	if i.settings.TracesDatasourceUID == "" {
		return nil
	}
	return []data.DataLink{{
		Title: "View traces",
		Internal: &data.InternalDataLink{
			DatasourceUID: i.settings.TracesDatasourceUID,
			Query:         map[string]any{"refId": "A", "queryType": "traceql", "query": traceql},
		},
	}}
}

// rowTraceQL is the row's own search, from its traceql field: a link is
// the same for every row, the search is not.
const rowTraceQL = "${__data.fields.traceql}"

func (i *Instance) nodeLinks(o query.GraphOptions) []data.DataLink {
	const node = "${__data.fields.id}"
	qs := query.NodeQueries(node, o)
	links := []data.DataLink{
		i.exploreLink("Request rate", qs["rate"]),
		i.exploreLink("Error rate", qs["errorRate"]),
		i.exploreLink("p90 latency (seconds)", qs["p90"]),
	}
	return append(links, i.tracesLink(rowTraceQL)...)
}

// edgeLinks are the links of Grafana's Tempo service map on an edge: the
// pair's request rate, p90 and failed requests in Explore, and its
// server's traces.
func (i *Instance) edgeLinks(o query.GraphOptions) []data.DataLink {
	sel := `client="${__data.fields.source}", server="${__data.fields.target}"`
	if f := strings.TrimSpace(o.Matchers); f != "" {
		sel += ", " + f
	}
	const w = "[$__rate_interval]"
	links := []data.DataLink{
		i.exploreLink("Request rate", "sum by (client, server) (rate(traces_service_graph_request_total{"+sel+"}"+w+"))"),
		i.exploreLink("Request histogram", "histogram_quantile(0.9, sum by (le, client, server) (rate(traces_service_graph_request_server_seconds_bucket{"+sel+"}"+w+")))"),
		i.exploreLink("Failed request rate", "sum by (client, server) (rate(traces_service_graph_request_failed_total{"+sel+"}"+w+"))"),
	}
	return append(links, i.tracesLink(rowTraceQL)...)
}

// serviceTraceQL searches the spans of an instrumented service.
func serviceTraceQL(service string) string {
	return `{resource.service.name=` + strconv.Quote(service) + `}`
}

// peerTraceQL returns the search for an uninstrumented peer or database:
// the client spans that name it, by the attributes the service graph
// names such peers from (servicegraph.peer_attributes,
// server.address, servicegraph.database_name_attributes), as Tempo's
// service map searches an uninstrumented node by its peer attribute.
func (i *Instance) peerTraceQL() func(peer string) string {
	var attrs []string
	seen := map[string]bool{}
	sg := i.svc.eng.Config().ServiceGraph
	for _, a := range append(append(append([]string(nil), sg.PeerAttributes...), "server.address"), sg.DatabaseNameAttributes...) {
		if !seen[a] {
			seen[a] = true
			attrs = append(attrs, a)
		}
	}
	return func(peer string) string {
		terms := make([]string, len(attrs))
		for j, a := range attrs {
			terms[j] = "span." + a + "=" + strconv.Quote(peer)
		}
		return "{" + strings.Join(terms, " || ") + "}"
	}
}

// percentText is an error ratio as the node graph's details show it, a
// text such as "20 %" (the details print a number with two decimals and
// the unit's id, "20.00 percent"); nil when unknown.
func percentText(ratio float64) *string {
	if nullable(ratio) == nil {
		return nil
	}
	s := strconv.FormatFloat(math.Round(ratio*10000)/100, 'f', -1, 64) + " %"
	return &s
}

// redQueries are the PromQL behind a RED row's figures, over the span
// metrics that the table is computed from.
func redQueries(service string, o query.REDOptions) map[string]string {
	kinds := o.SpanKinds
	if len(kinds) == 0 {
		kinds = []string{"SPAN_KIND_SERVER"}
	}
	matchers := []string{fmt.Sprintf("service=%q", service), fmt.Sprintf("span_kind=~%q", strings.Join(kinds, "|"))}
	if f := strings.TrimSpace(o.Matchers); f != "" {
		matchers = append(matchers, f)
	}
	sel := strings.Join(matchers, ", ")
	const w = "[$__rate_interval]"
	return map[string]string{
		"rate":      "sum by (span_name) (rate(traces_spanmetrics_calls_total{" + sel + "}" + w + "))",
		"errorRate": "sum by (span_name) (rate(traces_spanmetrics_calls_total{" + sel + `, status_code="STATUS_CODE_ERROR"}` + w + ")) / sum by (span_name) (rate(traces_spanmetrics_calls_total{" + sel + "}" + w + "))",
		"p90":       "histogram_quantile(0.9, sum by (span_name, le) (rate(traces_spanmetrics_latency_bucket{" + sel + "}" + w + ")))",
	}
}

// redTableFrame is one table frame: a row per service (or per service and
// span name), with units so that panels format it without overrides.
func (i *Instance) redTableFrame(rows []query.REDRow, o query.REDOptions) *data.Frame {
	n := len(rows)
	services, spans := make([]string, n), make([]string, n)
	rate, errPct, p50, p90, p99 := make([]*float64, n), make([]*float64, n), make([]*float64, n), make([]*float64, n), make([]*float64, n)
	for j, r := range rows {
		services[j], spans[j] = r.Service, r.SpanName
		rate[j], errPct[j] = nullable(r.Rate), nullable(r.ErrorPercent)
		p50[j], p90[j], p99[j] = nullable(r.P50Ms), nullable(r.P90Ms), nullable(r.P99Ms)
	}
	const service = "${__data.fields.Service}"
	qs := redQueries(service, o)
	serviceField := withConfig(data.NewField("Service", nil, services), &data.FieldConfig{Links: append([]data.DataLink{
		i.exploreLink("Request rate", qs["rate"]),
		i.exploreLink("Error rate", qs["errorRate"]),
		i.exploreLink("p90 latency (seconds)", qs["p90"]),
	}, i.tracesLink(`{resource.service.name="`+service+`"}`)...)})
	fields := []*data.Field{serviceField}
	if o.GroupBy == "span_name" {
		spanField := data.NewField("Span name", nil, spans)
		if links := i.tracesLink(`{resource.service.name="` + service + `" && name="${__data.fields["Span name"]}"}`); links != nil {
			spanField.Config = &data.FieldConfig{Links: links}
		}
		fields = append(fields, spanField)
	}
	fields = append(fields,
		withConfig(data.NewField("Rate", nil, rate), &data.FieldConfig{Unit: "reqps"}),
		withConfig(data.NewField("Error %", nil, errPct), &data.FieldConfig{Unit: "percent"}),
		withConfig(data.NewField("p50", nil, p50), &data.FieldConfig{Unit: "ms"}),
		withConfig(data.NewField("p90", nil, p90), &data.FieldConfig{Unit: "ms"}),
		withConfig(data.NewField("p99", nil, p99), &data.FieldConfig{Unit: "ms"}),
	)
	f := data.NewFrame("red", fields...)
	f.Meta = &data.FrameMeta{Type: data.FrameTypeTable, PreferredVisualization: data.VisTypeTable}
	return f
}
