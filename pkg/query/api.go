package query

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
)

// TenantFunc says which tenant a request reads, or refuses it.
type TenantFunc func(*http.Request) (string, error)

// API serves the Prometheus HTTP API subset under /api/v1/: query,
// query_range, labels, label/<name>/values, series and query_exemplars,
// with Prometheus' JSON shapes and error format.
type API struct {
	q      *Querier
	tenant TenantFunc
	mux    *http.ServeMux
}

// NewAPI returns the API; tenant picks each request's tenant.
func NewAPI(q *Querier, tenant TenantFunc) *API {
	a := &API{q: q, tenant: tenant, mux: http.NewServeMux()}
	a.mux.HandleFunc("/api/v1/query", a.query)
	a.mux.HandleFunc("/api/v1/query_range", a.queryRange)
	a.mux.HandleFunc("/api/v1/labels", a.labelNames)
	a.mux.HandleFunc("/api/v1/label/{name}/values", a.labelValues)
	a.mux.HandleFunc("/api/v1/series", a.series)
	a.mux.HandleFunc("/api/v1/query_exemplars", a.exemplars)
	a.Handle("/api/v1/service-graph", a.serviceGraph)
	a.Handle("/api/v1/red", a.red)
	a.mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, &Error{Type: ErrorNotFound, Err: errors.New("unknown API endpoint " + r.URL.Path)})
	})
	return a
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// Handle adds an endpoint (for example the service graph) that shares the
// API's tenant selection and error format.
func (a *API) Handle(pattern string, h func(ctx context.Context, tenant string, r *http.Request) (any, error)) {
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		tenant, ok := a.begin(w, r)
		if !ok {
			return
		}
		data, err := h(r.Context(), tenant, r)
		respond(w, data, nil, err)
	})
}

type response struct {
	Status    string   `json:"status"`
	Data      any      `json:"data,omitempty"`
	ErrorType string   `json:"errorType,omitempty"`
	Error     string   `json:"error,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
	Infos     []string `json:"infos,omitempty"`
}

func statusFor(errType string) int {
	switch errType {
	case ErrorBadData:
		return http.StatusBadRequest
	case ErrorExec:
		return http.StatusUnprocessableEntity
	case ErrorTimeout, ErrorUnavailable:
		// 503 for a query refused for want of a slot too: a status every
		// HTTP client retries, which Prometheus also answers for a query
		// that timed out in its queue. Mimir's 429 would fall outside the
		// codes Prometheus clients parse an error body from either way.
		return http.StatusServiceUnavailable
	case ErrorCanceled:
		return 499
	case ErrorNotFound:
		return http.StatusNotFound
	case ErrorUnauthorized:
		return http.StatusUnauthorized
	case ErrorForbidden:
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

// WriteError answers err in Prometheus' JSON error format, with the status
// of its errorType (500 for an error that is not an *Error).
func WriteError(w http.ResponseWriter, err error) {
	var qe *Error
	if !errors.As(err, &qe) {
		qe = &Error{Type: ErrorInternal, Err: err}
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
		writeJSON(w, http.StatusMethodNotAllowed, response{Status: "error", ErrorType: ErrorBadData, Error: "use GET or POST"})
		return "", false
	}
	if err := r.ParseForm(); err != nil {
		WriteError(w, badData("error parsing form values: %v", err))
		return "", false
	}
	tenant, err := a.tenant(r)
	if err != nil {
		var qe *Error
		if !errors.As(err, &qe) {
			err = &Error{Type: ErrorBadData, Err: err}
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
	ts, err := ParseTimeParam(r, "time", time.Now())
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
	start, err := ParseTime(r.FormValue("start"))
	if err != nil {
		WriteError(w, badData("invalid parameter \"start\": %v", err))
		return
	}
	end, err := ParseTime(r.FormValue("end"))
	if err != nil {
		WriteError(w, badData("invalid parameter \"end\": %v", err))
		return
	}
	step, err := ParseDuration(r.FormValue("step"))
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
		d, err := ParseDuration(t)
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

func respondResult(w http.ResponseWriter, res Result, err error) {
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
	start, err := ParseTimeParam(r, "start", minTime)
	if err != nil {
		return nil, 0, 0, err
	}
	end, err := ParseTimeParam(r, "end", maxTime)
	if err != nil {
		return nil, 0, 0, err
	}
	sets, err := a.q.parser.ParseMetricSelectors(r.Form["match[]"])
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
	names, err := a.LabelNames(r.Context(), tenant, r)
	respond(w, names, nil, err)
}

// LabelNames answers /api/v1/labels for r's parameters.
func (a *API) LabelNames(ctx context.Context, tenant string, r *http.Request) ([]string, error) {
	sets, mint, maxt, err := a.selectParams(r)
	if err != nil {
		return nil, err
	}
	return a.labelQuery(ctx, tenant, sets, mint, maxt, func(ctx context.Context, q storage.Querier, ms []*labels.Matcher) ([]string, error) {
		names, _, err := q.LabelNames(ctx, nil, ms...)
		return names, err
	})
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
	values, err := a.labelQuery(r.Context(), tenant, sets, mint, maxt, func(ctx context.Context, q storage.Querier, ms []*labels.Matcher) ([]string, error) {
		vals, _, err := q.LabelValues(ctx, name, nil, ms...)
		return vals, err
	})
	respond(w, values, nil, err)
}

// labelQuery runs f once per matcher set (or once without matchers), in a
// query slot, and merges the sorted, de-duplicated results.
func (a *API) labelQuery(ctx context.Context, tenant string, sets [][]*labels.Matcher, mint, maxt int64,
	f func(context.Context, storage.Querier, []*labels.Matcher) ([]string, error)) (_ []string, err error) {
	ctx, done, err := a.q.begin(ctx)
	if err != nil {
		return nil, a.q.finish(ctx, err)
	}
	defer done()
	defer func() { err = a.q.finish(ctx, err) }()
	queryable, _ := a.q.source.Queryable(tenant)
	q, err := queryable.Querier(mint, maxt)
	if err != nil {
		return nil, &Error{Type: ErrorInternal, Err: err}
	}
	defer q.Close()
	if len(sets) == 0 {
		sets = [][]*labels.Matcher{nil}
	}
	seen := map[string]struct{}{}
	for _, ms := range sets {
		if err := ctx.Err(); err != nil {
			return nil, classify(err)
		}
		vals, err := f(ctx, q, ms)
		if err != nil {
			return nil, &Error{Type: ErrorExec, Err: err}
		}
		for _, v := range vals {
			seen[v] = struct{}{}
		}
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out, nil
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
	out, err := a.q.series(r.Context(), tenant, sets, mint, maxt)
	respond(w, out, nil, err)
}

// series returns the series matching any of sets, in a query slot.
func (q *Querier) series(ctx context.Context, tenant string, sets [][]*labels.Matcher, mint, maxt int64) (_ []labels.Labels, err error) {
	ctx, done, err := q.begin(ctx)
	if err != nil {
		return nil, q.finish(ctx, err)
	}
	defer done()
	defer func() { err = q.finish(ctx, err) }()
	queryable, _ := q.source.Queryable(tenant)
	sq, err := queryable.Querier(mint, maxt)
	if err != nil {
		return nil, &Error{Type: ErrorInternal, Err: err}
	}
	defer sq.Close()
	hints := &storage.SelectHints{Start: mint, End: maxt, Func: "series"}
	var selected []storage.SeriesSet
	for _, ms := range sets {
		selected = append(selected, sq.Select(ctx, true, hints, ms...))
	}
	merged := storage.NewMergeSeriesSet(selected, 0, storage.ChainedSeriesMerge)
	out := []labels.Labels{}
	for merged.Next() {
		out = append(out, merged.At().Labels())
	}
	if err := merged.Err(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &Error{Type: ErrorExec, Err: err}
	}
	return out, nil
}

// Exemplar is one exemplar in Prometheus' JSON shape.
type Exemplar struct {
	Labels    labels.Labels `json:"labels"`
	Value     string        `json:"value"`
	Timestamp float64       `json:"timestamp"`
}

// ExemplarSeries is the exemplars of one series.
type ExemplarSeries struct {
	SeriesLabels labels.Labels `json:"seriesLabels"`
	Exemplars    []Exemplar    `json:"exemplars"`
}

func (a *API) exemplars(w http.ResponseWriter, r *http.Request) {
	tenant, ok := a.begin(w, r)
	if !ok {
		return
	}
	start, err := ParseTimeParam(r, "start", minTime)
	if err != nil {
		WriteError(w, err)
		return
	}
	end, err := ParseTimeParam(r, "end", maxTime)
	if err != nil {
		WriteError(w, err)
		return
	}
	out, err := a.q.Exemplars(r.Context(), tenant, r.FormValue("query"), start, end)
	respond(w, out, nil, err)
}

// Exemplars returns the exemplars of the series that expr selects.
func (q *Querier) Exemplars(ctx context.Context, tenant, expr string, start, end time.Time) (_ []ExemplarSeries, err error) {
	if err := q.checkText(expr); err != nil {
		return nil, q.finish(ctx, err)
	}
	ctx, done, err := q.begin(ctx)
	if err != nil {
		return nil, q.finish(ctx, err)
	}
	defer done()
	defer func() { err = q.finish(ctx, err) }()
	e, err := q.parser.ParseExpr(expr)
	if err != nil {
		return nil, &Error{Type: ErrorBadData, Err: err}
	}
	selectors := parser.ExtractSelectors(e)
	if len(selectors) == 0 {
		return []ExemplarSeries{}, nil
	}
	_, exq := q.source.Queryable(tenant)
	eq, err := exq.ExemplarQuerier(ctx)
	if err != nil {
		return nil, &Error{Type: ErrorInternal, Err: err}
	}
	res, err := eq.Select(start.UnixMilli(), end.UnixMilli(), selectors...)
	if err != nil {
		return nil, &Error{Type: ErrorExec, Err: err}
	}
	out := make([]ExemplarSeries, 0, len(res))
	for _, r := range res {
		s := ExemplarSeries{SeriesLabels: r.SeriesLabels}
		for _, ex := range r.Exemplars {
			s.Exemplars = append(s.Exemplars, Exemplar{
				Labels:    ex.Labels,
				Value:     strconv.FormatFloat(ex.Value, 'f', -1, 64),
				Timestamp: float64(ex.Ts) / 1000,
			})
		}
		out = append(out, s)
	}
	return out, nil
}

// The bounds Prometheus uses for open-ended metadata queries.
var (
	minTime = time.Unix(math.MinInt64/1000+62135596801, 0).UTC()
	maxTime = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC()
)

// ParseTimeParam reads a time parameter, or def when it is absent.
func ParseTimeParam(r *http.Request, name string, def time.Time) (time.Time, error) {
	v := r.FormValue(name)
	if v == "" {
		return def, nil
	}
	t, err := ParseTime(v)
	if err != nil {
		return time.Time{}, badData("invalid parameter %q: %v", name, err)
	}
	return t, nil
}

// ParseTime accepts Unix seconds (with a fraction) or RFC 3339, as
// Prometheus does.
func ParseTime(s string) (time.Time, error) {
	if t, err := strconv.ParseFloat(s, 64); err == nil {
		sec, frac := math.Modf(t)
		return time.Unix(int64(sec), int64(math.Round(frac*1000))*int64(time.Millisecond)).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, errors.New("cannot parse " + strconv.Quote(s) + " to a valid timestamp")
}

// ParseDuration accepts seconds (with a fraction) or a Prometheus duration
// such as 1m30s.
func ParseDuration(s string) (time.Duration, error) {
	if d, err := strconv.ParseFloat(s, 64); err == nil {
		ts := d * float64(time.Second)
		if ts > float64(math.MaxInt64) || ts < float64(math.MinInt64) {
			return 0, errors.New("cannot parse " + strconv.Quote(s) + " to a valid duration. It overflows int64")
		}
		return time.Duration(ts), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	return 0, errors.New("cannot parse " + strconv.Quote(s) + " to a valid duration")
}

// timeRange reads start and end, by default the last hour.
func timeRange(r *http.Request) (time.Time, time.Time, error) {
	end, err := ParseTimeParam(r, "end", time.Now())
	if err != nil {
		return end, end, err
	}
	start, err := ParseTimeParam(r, "start", end.Add(-time.Hour))
	if err != nil {
		return start, end, err
	}
	if end.Before(start) {
		return start, end, badData("end timestamp must not be before start time")
	}
	return start, end, nil
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

// serviceGraph answers /api/v1/service-graph?start=&end=&service=&depth=
// &connection_type=(repeatable; "rpc" for plain RPC)&filters=&max_nodes=.
func (a *API) serviceGraph(ctx context.Context, tenant string, r *http.Request) (any, error) {
	start, end, err := timeRange(r)
	if err != nil {
		return nil, err
	}
	o := GraphOptions{Start: start, End: end, Service: r.FormValue("service"), Matchers: r.FormValue("filters")}
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
		g.Nodes, g.Edges = []Node{}, []Edge{}
	}
	return g, nil
}

// red answers /api/v1/red?start=&end=&group_by=&span_kind=(repeatable)
// &top=&filters=&service=.
func (a *API) red(ctx context.Context, tenant string, r *http.Request) (any, error) {
	start, end, err := timeRange(r)
	if err != nil {
		return nil, err
	}
	o := REDOptions{Start: start, End: end, GroupBy: r.FormValue("group_by"), SpanKinds: r.Form["span_kind"],
		Matchers: r.FormValue("filters"), Service: r.FormValue("service")}
	if o.TopN, err = intParam(r, "top"); err != nil {
		return nil, err
	}
	return a.q.REDTable(ctx, tenant, o)
}
