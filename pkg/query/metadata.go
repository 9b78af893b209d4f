package query

import (
	"context"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
)

// The metadata readers of the Prometheus HTTP API (labels, label values,
// series, exemplars), each in a query slot like every reader of a store.

// ParseSelectors parses series selectors (match[]) with the querier's
// parser options.
func (q *Querier) ParseSelectors(ss []string) ([][]*labels.Matcher, error) {
	return q.parser.ParseMetricSelectors(ss)
}

// LabelNames returns the label names of the series matching any of sets
// (all series when sets is empty) between mint and maxt, sorted.
func (q *Querier) LabelNames(ctx context.Context, tenant string, sets [][]*labels.Matcher, mint, maxt int64) ([]string, error) {
	if b := q.Backend(); b != nil {
		return q.remoteLabelNames(ctx, b, tenant, sets, mint, maxt)
	}
	return q.labelQuery(ctx, tenant, sets, mint, maxt, func(ctx context.Context, sq storage.Querier, ms []*labels.Matcher) ([]string, error) {
		names, _, err := sq.LabelNames(ctx, nil, ms...)
		return names, err
	})
}

// LabelValues returns the values of label name on the series matching any
// of sets (all series when sets is empty) between mint and maxt, sorted.
func (q *Querier) LabelValues(ctx context.Context, tenant, name string, sets [][]*labels.Matcher, mint, maxt int64) ([]string, error) {
	if b := q.Backend(); b != nil {
		return q.remoteLabelValues(ctx, b, tenant, name, sets, mint, maxt)
	}
	return q.labelQuery(ctx, tenant, sets, mint, maxt, func(ctx context.Context, sq storage.Querier, ms []*labels.Matcher) ([]string, error) {
		vals, _, err := sq.LabelValues(ctx, name, nil, ms...)
		return vals, err
	})
}

// openStore takes a query slot and opens tenant's store over [mint,
// maxt]. done closes the store, frees the slot and classifies the error
// the caller returns; call it exactly once when err is nil.
func (q *Querier) openStore(ctx context.Context, tenant string, mint, maxt int64) (_ context.Context, _ storage.Querier, done func(error) error, err error) {
	ctx, release, err := q.begin(ctx)
	if err != nil {
		return ctx, nil, nil, q.finish(ctx, err)
	}
	queryable, _ := q.source.Queryable(tenant)
	sq, err := queryable.Querier(mint, maxt)
	if err != nil {
		release()
		return ctx, nil, nil, q.finish(ctx, storeError(err))
	}
	return ctx, sq, func(err error) error {
		_ = sq.Close()
		release()
		return q.finish(ctx, err)
	}, nil
}

// labelQuery runs f once per matcher set (or once without matchers), in a
// query slot, and merges the sorted, de-duplicated results.
func (q *Querier) labelQuery(ctx context.Context, tenant string, sets [][]*labels.Matcher, mint, maxt int64,
	f func(context.Context, storage.Querier, []*labels.Matcher) ([]string, error)) (_ []string, err error) {
	ctx, sq, done, err := q.openStore(ctx, tenant, mint, maxt)
	if err != nil {
		return nil, err
	}
	defer func() { err = done(err) }()
	if len(sets) == 0 {
		sets = [][]*labels.Matcher{nil}
	}
	seen := map[string]struct{}{}
	for _, ms := range sets {
		if err := ctx.Err(); err != nil {
			return nil, classify(err)
		}
		vals, err := f(ctx, sq, ms)
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

// Series returns the series matching any of sets, in a query slot.
func (q *Querier) Series(ctx context.Context, tenant string, sets [][]*labels.Matcher, mint, maxt int64) (_ []labels.Labels, err error) {
	if b := q.Backend(); b != nil {
		return q.remoteSeries(ctx, b, tenant, sets, mint, maxt)
	}
	ctx, sq, done, err := q.openStore(ctx, tenant, mint, maxt)
	if err != nil {
		return nil, err
	}
	defer func() { err = done(err) }()
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
	if b := q.Backend(); b != nil {
		return q.remoteExemplars(ctx, b, tenant, e, expr, start, end)
	}
	selectors := parser.ExtractSelectors(e)
	if len(selectors) == 0 {
		return []ExemplarSeries{}, nil
	}
	_, exq := q.source.Queryable(tenant)
	eq, err := exq.ExemplarQuerier(ctx)
	if err != nil {
		return nil, storeError(err)
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
