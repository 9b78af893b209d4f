// Package query reads the stores: PromQL through Prometheus' own engine,
// the metadata readers (labels, series, exemplars), the node-graph and
// RED-table models built from the span and edge metrics, and the limits
// every read runs under. Its HTTP face is pkg/api.
package query

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// Source gives the stores of a tenant.
type Source interface {
	Queryable(tenant string) (storage.Queryable, storage.ExemplarQueryable)
}

// Querier evaluates PromQL for one tenant at a time. Every method that
// reads a store holds one of its query.max_concurrency slots while it runs.
type Querier struct {
	engine *promql.Engine
	source Source
	parser parser.Parser
	cfg    Config
	slots  chan struct{}
	// backend, when set, answers every read instead of source
	// (backend_read.go).
	backend atomic.Pointer[Backend]
}

// noStepSubqueryInterval is the step of a subquery written without one:
// 1m, Prometheus' default evaluation interval.
const noStepSubqueryInterval = time.Minute

// NewQuerier returns a querier over source with cfg's limits, which must
// be valid. reg receives the engine's metrics and may be nil.
func NewQuerier(source Source, cfg Config, logger *slog.Logger, reg prometheus.Registerer) *Querier {
	p := parser.NewParser(parser.Options{})
	return &Querier{
		engine: promql.NewEngine(promql.EngineOpts{
			Logger:               logger,
			Reg:                  reg,
			MaxSamples:           cfg.MaxSamples,
			Timeout:              cfg.Timeout,
			LookbackDelta:        cfg.LookbackDelta,
			EnableAtModifier:     true,
			EnableNegativeOffset: true,
			NoStepSubqueryIntervalFn: func(int64) int64 {
				return noStepSubqueryInterval.Milliseconds()
			},
			Parser: p,
		}),
		source: source,
		parser: p,
		cfg:    cfg,
		slots:  make(chan struct{}, cfg.MaxConcurrency),
	}
}

// Error kinds, matching Prometheus' errorType values.
const (
	ErrorBadData   = "bad_data"
	ErrorExec      = "execution"
	ErrorTimeout   = "timeout"
	ErrorCanceled  = "canceled"
	ErrorInternal  = "internal"
	ErrorNotFound  = "not_found"
	ErrorForbidden = "forbidden"
	// ErrorUnauthorized (HTTP 401) is a request without valid
	// credentials; Prometheus has no authentication, so no errorType of
	// its own for it.
	ErrorUnauthorized = "unauthorized"
	// ErrorUnavailable (HTTP 503) is a query refused for want of a slot.
	ErrorUnavailable = "unavailable"
)

// Error is a query error with its Prometheus errorType.
type Error struct {
	Type string
	Err  error
	// reason is the query.* limit that stopped the query, if one did.
	reason string
}

func (e *Error) Error() string { return e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

func badData(format string, args ...any) error {
	return &Error{Type: ErrorBadData, Err: fmt.Errorf(format, args...)}
}

// classify maps an engine error to its errorType, as Prometheus does.
func classify(err error) error {
	var perr parser.ParseErrors
	var qe *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &qe):
		return err
	case errors.As(err, &perr):
		return &Error{Type: ErrorBadData, Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Type: ErrorTimeout, Err: err, reason: ReasonTimeout}
	case errors.Is(err, context.Canceled):
		return &Error{Type: ErrorCanceled, Err: err}
	}
	// A store that cannot be opened now says so with an HTTP status (max
	// tenants open: retry later; a quarantined store: an operator must
	// act); the reader should hear the same as a sender would.
	var status interface{ HTTPStatus() int }
	if errors.As(err, &status) {
		switch status.HTTPStatus() {
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			return &Error{Type: ErrorUnavailable, Err: err}
		case http.StatusInternalServerError:
			return &Error{Type: ErrorInternal, Err: err}
		}
	}
	var (
		timeout  promql.ErrQueryTimeout
		canceled promql.ErrQueryCanceled
		storage  promql.ErrStorage
		samples  promql.ErrTooManySamples
	)
	switch {
	case errors.As(err, &timeout):
		return &Error{Type: ErrorTimeout, Err: err, reason: ReasonTimeout}
	case errors.As(err, &samples):
		return &Error{Type: ErrorExec, Err: err, reason: ReasonTooManySamples}
	case errors.As(err, &canceled):
		return &Error{Type: ErrorCanceled, Err: err}
	case errors.As(err, &storage):
		return &Error{Type: ErrorInternal, Err: err}
	}
	return &Error{Type: ErrorExec, Err: err}
}

// storeError is a tenant's store that could not be opened for reading:
// the tenant's own answer when it has one (max_tenants: retry later; a
// quarantined store), else an internal error.
func storeError(err error) error {
	var status interface{ HTTPStatus() int }
	if errors.As(err, &status) {
		return classify(err)
	}
	return &Error{Type: ErrorInternal, Err: err}
}

// Result is an evaluated expression.
type Result struct {
	Value    parser.Value
	Warnings annotations.Annotations
}

// Instant evaluates expr at ts.
func (q *Querier) Instant(ctx context.Context, tenant, expr string, ts time.Time) (Result, error) {
	if err := q.checkText(expr); err != nil {
		return Result{}, q.finish(ctx, err)
	}
	ctx, done, err := q.begin(ctx)
	if err != nil {
		return Result{}, q.finish(ctx, err)
	}
	defer done()
	res, err := q.instant(ctx, tenant, expr, ts)
	return res, q.finish(ctx, err)
}

// instant is Instant in a slot the caller holds, after checkText.
func (q *Querier) instant(ctx context.Context, tenant, expr string, ts time.Time) (Result, error) {
	if b := q.Backend(); b != nil {
		return q.remoteInstant(ctx, b, tenant, expr, ts)
	}
	queryable, _ := q.source.Queryable(tenant)
	qry, err := q.engine.NewInstantQuery(ctx, queryable, nil, expr, ts)
	if err != nil {
		return Result{}, err
	}
	defer qry.Close()
	return q.exec(ctx, qry, span{ts.UnixMilli(), ts.UnixMilli(), 1})
}

// Range evaluates expr from start to end every step.
func (q *Querier) Range(ctx context.Context, tenant, expr string, start, end time.Time, step time.Duration) (Result, error) {
	if end.Before(start) {
		return Result{}, badData("end timestamp must not be before start time")
	}
	if step <= 0 {
		return Result{}, badData("zero or negative query resolution step widths are not accepted. Try a positive integer")
	}
	if err := q.checkRangeSteps(start, end, step); err != nil {
		return Result{}, q.finish(ctx, err)
	}
	if err := q.checkText(expr); err != nil {
		return Result{}, q.finish(ctx, err)
	}
	ctx, done, err := q.begin(ctx)
	if err != nil {
		return Result{}, q.finish(ctx, err)
	}
	defer done()
	if b := q.Backend(); b != nil {
		res, err := q.remoteRange(ctx, b, tenant, expr, start, end, step)
		return res, q.finish(ctx, err)
	}
	queryable, _ := q.source.Queryable(tenant)
	qry, err := q.engine.NewRangeQuery(ctx, queryable, nil, expr, start, end, step)
	if err != nil {
		return Result{}, q.finish(ctx, err)
	}
	defer qry.Close()
	res, err := q.exec(ctx, qry, span{start.UnixMilli(), end.UnixMilli(), step.Milliseconds()})
	return res, q.finish(ctx, err)
}

// exec runs a parsed query whose own grid is outer, once its subqueries
// are known to fit in max_steps. Parsing cannot be interrupted, so a
// deadline that passed meanwhile is noticed here.
func (q *Querier) exec(ctx context.Context, qry promql.Query, outer span) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if err := q.checkSteps(qry, outer); err != nil {
		return Result{}, err
	}
	res := qry.Exec(ctx)
	if res.Err != nil {
		return Result{}, res.Err
	}
	// The value may share memory with the query, which Close releases;
	// matrices and vectors are copied by the callers' encoders before that.
	return Result{Value: copyValue(res.Value), Warnings: res.Warnings}, nil
}

// copyValue detaches a result from the query's pooled memory.
func copyValue(v parser.Value) parser.Value {
	switch v := v.(type) {
	case promql.Matrix:
		out := make(promql.Matrix, len(v))
		for i, s := range v {
			out[i] = promql.Series{
				Metric:     s.Metric,
				Floats:     append([]promql.FPoint(nil), s.Floats...),
				Histograms: append([]promql.HPoint(nil), s.Histograms...),
			}
		}
		return out
	case promql.Vector:
		return append(promql.Vector(nil), v...)
	}
	return v
}
