package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
)

// queryModel is a query's JSON, the SpangraphQuery of src/types.ts. The
// promql fields have the Prometheus datasource's names so that queries can
// be copied between the two.
type queryModel struct {
	QueryType string `json:"queryType"`

	// promql
	Expr         string `json:"expr"`
	LegendFormat string `json:"legendFormat"`
	Instant      bool   `json:"instant"`
	Range        bool   `json:"range"`
	Format       string `json:"format"`
	Interval     string `json:"interval"`
	Exemplar     bool   `json:"exemplar"`

	// serviceGraph (Service and Filters also apply to redTable)
	Service         string   `json:"service"`
	Depth           int      `json:"depth"`
	ConnectionTypes []string `json:"connectionTypes"`
	Filters         string   `json:"filters"`
	MaxNodes        int      `json:"maxNodes"`

	// redTable
	GroupBy   string   `json:"groupBy"`
	SpanKinds []string `json:"spanKinds"`
	TopN      int      `json:"topN"`
}

// parseQuery decodes a query and resolves its type as the frontend does:
// queryType, else promql when there is an expression, else the
// datasource's default.
func parseQuery(raw json.RawMessage, queryType, defaultType string) (queryModel, error) {
	var m queryModel
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &m); err != nil {
			return m, fmt.Errorf("the query is not valid JSON: %w", err)
		}
	}
	if queryType != "" {
		m.QueryType = queryType
	}
	if m.QueryType == "" {
		m.QueryType = defaultType
		if m.Expr != "" {
			m.QueryType = QueryTypePromQL
		}
	}
	return m, nil
}

// maxConcurrentQueries bounds the queries of one request that run at once:
// a dashboard's panel with several targets should not wait on each in turn,
// nor take every core.
const maxConcurrentQueries = 4

// QueryData answers each query on its own: a bad query gets its own error
// response and never fails the request, so that the other panels' queries
// still show.
func (i *Instance) QueryData(ctx context.Context, req *backend.QueryDataRequest) (*backend.QueryDataResponse, error) {
	resp := backend.NewQueryDataResponse()
	fromAlert := isAlertRequest(req)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxConcurrentQueries)
	for _, q := range req.Queries {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			r := i.query(ctx, q, fromAlert)
			mu.Lock()
			resp.Responses[q.RefID] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	return resp, nil
}

// isAlertRequest tells an alert rule's evaluation from a panel's query,
// as the Prometheus datasource does: Grafana's alerting sends the FromAlert
// header (older versions forward headers with an "http_" prefix).
func isAlertRequest(req *backend.QueryDataRequest) bool {
	return req.GetHTTPHeader("FromAlert") == "true" || req.Headers["FromAlert"] == "true"
}

func (i *Instance) query(ctx context.Context, q backend.DataQuery, fromAlert bool) backend.DataResponse {
	if err := i.svc.failure(); err != nil {
		return backend.ErrDataResponse(backend.StatusInternal, err.Error())
	}
	m, err := parseQuery(q.JSON, q.QueryType, i.settings.DefaultQueryType)
	if err != nil {
		return backend.ErrDataResponse(backend.StatusBadRequest, err.Error())
	}
	switch m.QueryType {
	case QueryTypePromQL:
		return i.promQL(ctx, q, m, fromAlert)
	case QueryTypeServiceGraph:
		return i.serviceGraph(ctx, q.TimeRange, m)
	case QueryTypeREDTable:
		return i.redTable(ctx, q.TimeRange, m)
	}
	return backend.ErrDataResponse(backend.StatusBadRequest,
		fmt.Sprintf("unknown queryType %q: use promql, serviceGraph or redTable", m.QueryType))
}

// errResponse turns a query error into a data response whose status says
// whether the query or the server is at fault.
func errResponse(what string, err error) backend.DataResponse {
	return backend.ErrDataResponse(errorStatus(err), what+": "+err.Error())
}
