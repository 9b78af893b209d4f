// Package query reads the stores: PromQL through Prometheus' own engine,
// the Prometheus HTTP API subset that Grafana and other tools speak, and the
// node-graph and RED-table models built from the span and edge metrics.
package query

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// Querier evaluates PromQL for one tenant at a time.
type Querier struct {
	engine *promql.Engine
	source Source
	parser parser.Parser
}

// Options of the PromQL engine.
type Options struct {
	// Timeout bounds one query.
	Timeout time.Duration
	// MaxSamples bounds the samples one query may hold in memory.
	MaxSamples int
	// LookbackDelta is how far back an instant selector looks (5m in
	// Prometheus).
	LookbackDelta time.Duration
}

// DefaultOptions are Prometheus' defaults.
func DefaultOptions() Options {
	return Options{Timeout: 2 * time.Minute, MaxSamples: 50_000_000, LookbackDelta: 5 * time.Minute}
}

// NewQuerier returns a querier over source. reg receives the engine's
// metrics and may be nil.
func NewQuerier(source Source, opts Options, logger *slog.Logger, reg prometheus.Registerer) *Querier {
	p := parser.NewParser(parser.Options{})
	return &Querier{
		engine: promql.NewEngine(promql.EngineOpts{
			Logger:               logger,
			Reg:                  reg,
			MaxSamples:           opts.MaxSamples,
			Timeout:              opts.Timeout,
			LookbackDelta:        opts.LookbackDelta,
			EnableAtModifier:     true,
			EnableNegativeOffset: true,
			// Subqueries without a step use 1m, Prometheus' default
			// evaluation interval.
			NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
			Parser:                   p,
		}),
		source: source,
		parser: p,
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
)

// Error is a query error with its Prometheus errorType.
type Error struct {
	Type string
	Err  error
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
		return &Error{Type: ErrorTimeout, Err: err}
	case errors.Is(err, context.Canceled):
		return &Error{Type: ErrorCanceled, Err: err}
	}
	var (
		timeout  promql.ErrQueryTimeout
		canceled promql.ErrQueryCanceled
		storage  promql.ErrStorage
	)
	switch {
	case errors.As(err, &timeout):
		return &Error{Type: ErrorTimeout, Err: err}
	case errors.As(err, &canceled):
		return &Error{Type: ErrorCanceled, Err: err}
	case errors.As(err, &storage):
		return &Error{Type: ErrorInternal, Err: err}
	}
	return &Error{Type: ErrorExec, Err: err}
}

// Result is an evaluated expression.
type Result struct {
	Value    parser.Value
	Warnings annotations.Annotations
}

// Instant evaluates expr at ts.
func (q *Querier) Instant(ctx context.Context, tenant, expr string, ts time.Time) (Result, error) {
	queryable, _ := q.source.Queryable(tenant)
	qry, err := q.engine.NewInstantQuery(ctx, queryable, nil, expr, ts)
	if err != nil {
		return Result{}, classify(err)
	}
	defer qry.Close()
	return exec(ctx, qry)
}

// maxPoints is Prometheus' cap on points per series in a range query.
const maxPoints = 11000

// Range evaluates expr from start to end every step.
func (q *Querier) Range(ctx context.Context, tenant, expr string, start, end time.Time, step time.Duration) (Result, error) {
	if end.Before(start) {
		return Result{}, badData("end timestamp must not be before start time")
	}
	if step <= 0 {
		return Result{}, badData("zero or negative query resolution step widths are not accepted. Try a positive integer")
	}
	if end.Sub(start)/step > maxPoints {
		return Result{}, badData("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")
	}
	queryable, _ := q.source.Queryable(tenant)
	qry, err := q.engine.NewRangeQuery(ctx, queryable, nil, expr, start, end, step)
	if err != nil {
		return Result{}, classify(err)
	}
	defer qry.Close()
	return exec(ctx, qry)
}

func exec(ctx context.Context, qry promql.Query) (Result, error) {
	res := qry.Exec(ctx)
	if res.Err != nil {
		return Result{}, classify(res.Err)
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
