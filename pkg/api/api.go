// Package api serves the Prometheus HTTP API subset (query, query_range,
// labels, label values, series, exemplars) over a query.Querier, with
// Prometheus' JSON shapes and error format, plus Spangraph's service-graph
// and RED endpoints. It is the one HTTP face of pkg/query: pkg/server
// mounts it for serve and demo, pkg/plugin behind CallResource.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/spangraph/spangraph/pkg/query"
)

// TenantFunc says which tenant a request reads, or refuses it.
type TenantFunc func(*http.Request) (string, error)

// API serves the Prometheus HTTP API subset under /api/v1/: query,
// query_range, labels, label/<name>/values, series and query_exemplars,
// with Prometheus' JSON shapes and error format.
type API struct {
	q      *query.Querier
	tenant TenantFunc
	mux    *http.ServeMux
}

// New returns the API; tenant picks each request's tenant.
func New(q *query.Querier, tenant TenantFunc) *API {
	a := &API{q: q, tenant: tenant, mux: http.NewServeMux()}
	a.mux.HandleFunc("/api/v1/query", a.query)
	a.mux.HandleFunc("/api/v1/query_range", a.queryRange)
	a.mux.HandleFunc("/api/v1/labels", a.labelNames)
	a.mux.HandleFunc("/api/v1/label/{name}/values", a.labelValues)
	a.mux.HandleFunc("/api/v1/series", a.series)
	a.mux.HandleFunc("/api/v1/query_exemplars", a.exemplars)
	a.windowed("/api/v1/service-graph", a.serviceGraph)
	a.windowed("/api/v1/red", a.red)
	a.mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, &query.Error{Type: query.ErrorNotFound, Err: errors.New("unknown API endpoint " + r.URL.Path)})
	})
	return a
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// windowed adds an endpoint that reports over a time window (the service
// graph, the RED table). It shares the API's tenant selection and error
// format, reads the window (parseWindow) and answers it beside the data.
func (a *API) windowed(pattern string, h func(ctx context.Context, tenant string, win Window, r *http.Request) (any, error)) {
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		tenant, ok := a.begin(w, r)
		if !ok {
			return
		}
		win, err := parseWindow(r, time.Now())
		if err != nil {
			WriteError(w, err)
			return
		}
		data, err := h(r.Context(), tenant, win, r)
		if err != nil {
			WriteError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, response{Status: "success", Data: data, Window: &win})
	})
}

type response struct {
	Status    string   `json:"status"`
	Data      any      `json:"data,omitempty"`
	ErrorType string   `json:"errorType,omitempty"`
	Error     string   `json:"error,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
	Infos     []string `json:"infos,omitempty"`
	// Window is the range a windowed endpoint's figures describe.
	Window *Window `json:"window,omitempty"`
}

func badData(format string, args ...any) error {
	return &query.Error{Type: query.ErrorBadData, Err: fmt.Errorf(format, args...)}
}

func statusFor(errType string) int {
	switch errType {
	case query.ErrorBadData:
		return http.StatusBadRequest
	case query.ErrorExec:
		return http.StatusUnprocessableEntity
	case query.ErrorTimeout, query.ErrorUnavailable:
		// 503 for a query refused for want of a slot too: a status every
		// HTTP client retries, which Prometheus also answers for a query
		// that timed out in its queue. Mimir's 429 would fall outside the
		// codes Prometheus clients parse an error body from either way.
		return http.StatusServiceUnavailable
	case query.ErrorCanceled:
		return 499
	case query.ErrorNotFound:
		return http.StatusNotFound
	case query.ErrorUnauthorized:
		return http.StatusUnauthorized
	case query.ErrorForbidden:
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

// WriteError answers err in Prometheus' JSON error format, with the status
// of its errorType (500 for an error that is not an *Error).
func WriteError(w http.ResponseWriter, err error) {
	var qe *query.Error
	if !errors.As(err, &qe) {
		qe = &query.Error{Type: query.ErrorInternal, Err: err}
	}
	writeJSON(w, statusFor(qe.Type), response{Status: "error", ErrorType: qe.Type, Error: qe.Err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // "a->b" stays readable, as in Prometheus
	_ = enc.Encode(v)
}

func respond(w http.ResponseWriter, data any, warnings []string, err error) {
	if err != nil {
		WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, response{Status: "success", Data: data, Warnings: warnings})
}

// begin parses the form and resolves the tenant; it answers the request
// itself and returns false when either fails.
func (a *API) begin(w http.ResponseWriter, r *http.Request) (string, bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		writeJSON(w, http.StatusMethodNotAllowed, response{Status: "error", ErrorType: query.ErrorBadData, Error: "use GET or POST"})
		return "", false
	}
	if err := r.ParseForm(); err != nil {
		WriteError(w, badData("error parsing form values: %v", err))
		return "", false
	}
	tenant, err := a.tenant(r)
	if err != nil {
		var qe *query.Error
		if !errors.As(err, &qe) {
			err = &query.Error{Type: query.ErrorBadData, Err: err}
		}
		WriteError(w, err)
		return "", false
	}
	return tenant, true
}

func (a *API) query(w http.ResponseWriter, r *http.Request) {
	tenant, ok := a.begin(w, r)
	if !ok {
		return
	}
	ts, err := parseTimeParam(r, "time", time.Now())
	if err != nil {
		WriteError(w, err)
		return
	}
	ctx, cancel, err := withTimeout(r)
	if err != nil {
		WriteError(w, err)
		return
	}
	defer cancel()
	res, err := a.q.Instant(ctx, tenant, r.FormValue("query"), ts)
	respondResult(w, res, err)
}

func (a *API) queryRange(w http.ResponseWriter, r *http.Request) {
	tenant, ok := a.begin(w, r)
	if !ok {
		return
	}
	start, err := parseTime(r.FormValue("start"))
	if err != nil {
		WriteError(w, badData("invalid parameter \"start\": %v", err))
		return
	}
	end, err := parseTime(r.FormValue("end"))
	if err != nil {
		WriteError(w, badData("invalid parameter \"end\": %v", err))
		return
	}
	step, err := parseDuration(r.FormValue("step"))
	if err != nil {
		WriteError(w, badData("invalid parameter \"step\": %v", err))
		return
	}
	ctx, cancel, err := withTimeout(r)
	if err != nil {
		WriteError(w, err)
		return
	}
	defer cancel()
	res, err := a.q.Range(ctx, tenant, r.FormValue("query"), start, end, step)
	respondResult(w, res, err)
}

func withTimeout(r *http.Request) (context.Context, context.CancelFunc, error) {
	if t := r.FormValue("timeout"); t != "" {
		d, err := parseDuration(t)
		if err != nil {
			return nil, nil, badData("invalid parameter \"timeout\": %v", err)
		}
		ctx, cancel := context.WithTimeout(r.Context(), d)
		return ctx, cancel, nil
	}
	ctx, cancel := context.WithCancel(r.Context())
	return ctx, cancel, nil
}

type queryData struct {
	ResultType parser.ValueType `json:"resultType"`
	Result     any              `json:"result"`
}

func respondResult(w http.ResponseWriter, res query.Result, err error) {
	if err != nil {
		WriteError(w, err)
		return
	}
	warnings, infos := res.Warnings.AsStrings("", 10, 10)
	writeJSON(w, http.StatusOK, response{
		Status:   "success",
		Data:     queryData{ResultType: res.Value.Type(), Result: encodeValue(res.Value)},
		Warnings: warnings,
		Infos:    infos,
	})
}

// jsonSeries is a matrix row in Prometheus' shape.
type jsonSeries struct {
	Metric     labels.Labels   `json:"metric"`
	Values     []promql.FPoint `json:"values,omitempty"`
	Histograms []promql.HPoint `json:"histograms,omitempty"`
}

func encodeValue(v parser.Value) any {
	if m, ok := v.(promql.Matrix); ok {
		out := make([]jsonSeries, len(m))
		for i, s := range m {
			out[i] = jsonSeries{Metric: s.Metric, Values: s.Floats, Histograms: s.Histograms}
		}
		return out
	}
	if vec, ok := v.(promql.Vector); ok && vec == nil {
		return promql.Vector{}
	}
	return v
}

// selectParams reads match[], start and end as the metadata endpoints take
// them.
func (a *API) selectParams(r *http.Request) ([][]*labels.Matcher, int64, int64, error) {
	start, err := parseTimeParam(r, "start", minTime)
	if err != nil {
		return nil, 0, 0, err
	}
	end, err := parseTimeParam(r, "end", maxTime)
	if err != nil {
		return nil, 0, 0, err
	}
	sets, err := a.q.ParseSelectors(r.Form["match[]"])
	if err != nil {
		return nil, 0, 0, badData("invalid parameter \"match[]\": %v", err)
	}
	return sets, start.UnixMilli(), end.UnixMilli(), nil
}

func (a *API) labelNames(w http.ResponseWriter, r *http.Request) {
	tenant, ok := a.begin(w, r)
	if !ok {
		return
	}
	sets, mint, maxt, err := a.selectParams(r)
	if err != nil {
		WriteError(w, err)
		return
	}
	names, err := a.q.LabelNames(r.Context(), tenant, sets, mint, maxt)
	respond(w, names, nil, err)
}

func (a *API) labelValues(w http.ResponseWriter, r *http.Request) {
	tenant, ok := a.begin(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if strings.HasPrefix(name, "U__") {
		name = model.UnescapeName(name, model.ValueEncodingEscaping)
	}
	if !model.UTF8Validation.IsValidLabelName(name) {
		WriteError(w, badData("invalid label name: %q", name))
		return
	}
	sets, mint, maxt, err := a.selectParams(r)
	if err != nil {
		WriteError(w, err)
		return
	}
	values, err := a.q.LabelValues(r.Context(), tenant, name, sets, mint, maxt)
	respond(w, values, nil, err)
}

func (a *API) series(w http.ResponseWriter, r *http.Request) {
	tenant, ok := a.begin(w, r)
	if !ok {
		return
	}
	if len(r.Form["match[]"]) == 0 {
		WriteError(w, badData("no match[] parameter provided"))
		return
	}
	sets, mint, maxt, err := a.selectParams(r)
	if err != nil {
		WriteError(w, err)
		return
	}
	out, err := a.q.Series(r.Context(), tenant, sets, mint, maxt)
	respond(w, out, nil, err)
}

func (a *API) exemplars(w http.ResponseWriter, r *http.Request) {
	tenant, ok := a.begin(w, r)
	if !ok {
		return
	}
	start, err := parseTimeParam(r, "start", minTime)
	if err != nil {
		WriteError(w, err)
		return
	}
	end, err := parseTimeParam(r, "end", maxTime)
	if err != nil {
		WriteError(w, err)
		return
	}
	out, err := a.q.Exemplars(r.Context(), tenant, r.FormValue("query"), start, end)
	respond(w, out, nil, err)
}

func intParam(r *http.Request, name string) (int, error) {
	v := r.FormValue(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, badData("invalid parameter %q: %q is not a non-negative integer", name, v)
	}
	return n, nil
}

// serviceGraph answers /api/v1/service-graph?start=&end=&range=&service=&depth=
// &connection_type=(repeatable; "rpc" for plain RPC)&filters=&max_nodes=.
func (a *API) serviceGraph(ctx context.Context, tenant string, win Window, r *http.Request) (any, error) {
	o := query.GraphOptions{Start: win.Start, End: win.End, Service: r.FormValue("service"), Matchers: r.FormValue("filters")}
	var err error
	if o.Depth, err = intParam(r, "depth"); err != nil {
		return nil, err
	}
	if o.MaxNodes, err = intParam(r, "max_nodes"); err != nil {
		return nil, err
	}
	for _, c := range r.Form["connection_type"] {
		if c == "rpc" {
			c = ""
		}
		o.ConnectionTypes = append(o.ConnectionTypes, c)
	}
	g, err := a.q.ServiceGraph(ctx, tenant, o)
	if err != nil {
		return nil, err
	}
	if g.Nodes == nil {
		g.Nodes, g.Edges = []query.Node{}, []query.Edge{}
	}
	return g, nil
}

// red answers /api/v1/red?start=&end=&range=&group_by=&span_kind=(repeatable)
// &top=&filters=&service=.
func (a *API) red(ctx context.Context, tenant string, win Window, r *http.Request) (any, error) {
	o := query.REDOptions{Start: win.Start, End: win.End, GroupBy: r.FormValue("group_by"), SpanKinds: r.Form["span_kind"],
		Matchers: r.FormValue("filters"), Service: r.FormValue("service")}
	var err error
	if o.TopN, err = intParam(r, "top"); err != nil {
		return nil, err
	}
	return a.q.REDTable(ctx, tenant, o)
}
