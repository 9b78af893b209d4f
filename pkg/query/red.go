package query

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
)

// Span-metrics names, as Tempo writes them.
const (
	metricCalls   = "traces_spanmetrics_calls_total"
	metricLatency = "traces_spanmetrics_latency"
)

// REDOptions select a RED table.
type REDOptions struct {
	Start, End time.Time
	// GroupBy is service (default) or span_name (rows per service and
	// span name).
	GroupBy string
	// SpanKinds keeps spans of these kinds; default SPAN_KIND_SERVER.
	SpanKinds []string
	// TopN keeps the busiest rows; 0 keeps all.
	TopN int
	// Matchers are extra PromQL label matchers, without braces.
	Matchers string
	// Service keeps one service's rows.
	Service string
}

// REDRow is rate, errors and duration of one service or operation.
type REDRow struct {
	Service      string
	SpanName     string
	Rate         float64
	ErrorPercent float64
	P50Ms        float64
	P90Ms        float64
	P99Ms        float64
}

// REDTable computes rate, error percentage and latency percentiles from
// the span metrics over o's window.
func (q *Querier) REDTable(ctx context.Context, tenant string, o REDOptions) (_ []REDRow, err error) {
	ctx, done, err := q.begin(ctx)
	if err != nil {
		return nil, q.finish(ctx, err)
	}
	defer done()
	defer func() { err = q.finish(ctx, err) }()
	if _, err := q.parseMatchers(o.Matchers); err != nil {
		return nil, err
	}
	by := "service"
	switch o.GroupBy {
	case "", "service":
	case "span_name":
		by = "service, span_name"
	default:
		return nil, badData("groupBy %q is not service or span_name", o.GroupBy)
	}
	kinds := o.SpanKinds
	if len(kinds) == 0 {
		kinds = []string{"SPAN_KIND_SERVER"}
	}
	for _, k := range kinds {
		if !strings.HasPrefix(k, "SPAN_KIND_") || strings.ContainsAny(k, `"\`) {
			return nil, badData("span kind %q is not a SPAN_KIND_… value", k)
		}
	}
	extra := []string{fmt.Sprintf("span_kind=~%q", strings.Join(kinds, "|"))}
	if o.Service != "" {
		extra = append(extra, fmt.Sprintf("service=%q", o.Service))
	}
	w := window(o.Start, o.End)
	calls := selector(metricCalls, o.Matchers, extra...)
	errs := selector(metricCalls, o.Matchers, append(extra, `status_code="STATUS_CODE_ERROR"`)...)
	buckets := selector(metricLatency+"_bucket", o.Matchers, extra...)
	exprs := []string{
		fmt.Sprintf("sum by (%s) (rate(%s[%s]))", by, calls, w),
		fmt.Sprintf("sum by (%s) (rate(%s[%s]))", by, errs, w),
	}
	// A group's native histogram, when the span metrics write one, else
	// its classic buckets: PromQL refuses to mix the two in one group.
	native := selector(metricLatency, o.Matchers, extra...)
	for _, quantile := range redQuantiles {
		qs := strconv.FormatFloat(quantile, 'f', -1, 64)
		exprs = append(exprs, fmt.Sprintf("histogram_quantile(%s, sum by (%s) (rate(%s[%s]))) or histogram_quantile(%s, sum by (%s, le) (rate(%s[%s])))",
			qs, by, native, w, qs, by, buckets, w))
	}
	var values []map[redKey]float64
	maxt := o.End.UnixMilli()
	var r *rollingSource
	if nativeSM, _ := q.native(tenant); !nativeSM { // the rolling window holds classic series only
		r = q.rollingReader(tenant, maxt-windowLength(o.Start, o.End).Milliseconds(), maxt)
	}
	if r != nil {
		values, err = q.redRolling(ctx, r, o.GroupBy == "span_name", calls, errs, buckets)
		r.close()
	} else {
		values, err = q.redPromQL(ctx, tenant, o.End, exprs)
	}
	if err != nil {
		return nil, err
	}
	rows := make([]REDRow, 0, len(values[0]))
	for k, rate := range values[0] {
		rows = append(rows, REDRow{
			Service:      k.service,
			SpanName:     k.span,
			Rate:         rate,
			ErrorPercent: 100 * nanToZero(ratio(values[1][k], rate)),
			P50Ms:        msOrNaN(values[2], k),
			P90Ms:        msOrNaN(values[3], k),
			P99Ms:        msOrNaN(values[4], k),
		})
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Rate != rows[j].Rate {
			return rows[i].Rate > rows[j].Rate
		}
		if rows[i].Service != rows[j].Service {
			return rows[i].Service < rows[j].Service
		}
		return rows[i].SpanName < rows[j].SpanName
	})
	if o.TopN > 0 && len(rows) > o.TopN {
		rows = rows[:o.TopN]
	}
	return rows, nil
}

// redKey is a RED row's group: a service, or a service and span name.
type redKey struct{ service, span string }

// redQuantiles are the quantiles of a RED row, after its rate and its
// errors in the figures of a RED table.
var redQuantiles = []float64{0.5, 0.9, 0.99}

// redPromQL evaluates the RED table's expressions over the TSDB: rate,
// errors and one per quantile.
func (q *Querier) redPromQL(ctx context.Context, tenant string, end time.Time, exprs []string) ([]map[redKey]float64, error) {
	values := make([]map[redKey]float64, len(exprs))
	for i, e := range exprs {
		v, err := q.vector(ctx, tenant, e, end)
		if err != nil {
			return nil, err
		}
		values[i] = map[redKey]float64{}
		for _, s := range v {
			values[i][redKey{s.Metric.Get("service"), s.Metric.Get("span_name")}] = s.F
		}
	}
	return values, nil
}

// redRolling computes what redPromQL's expressions return from a rolling
// window: the same selectors, rate() arithmetic, sums and
// histogram_quantile.
func (q *Querier) redRolling(ctx context.Context, r *rollingSource, bySpan bool, calls, errs, buckets string) ([]map[redKey]float64, error) {
	var ms [3][]*labels.Matcher
	for i, sel := range []string{calls, errs, buckets} {
		m, err := q.parser.ParseMetricSelector(sel)
		if err != nil {
			return nil, badData("invalid selector %s: %v", sel, err)
		}
		ms[i] = m
	}
	// Rows are numbered as the calls series meet them; the errors and
	// the buckets of a row without calls are not shown, so they are
	// skipped. A series' row is found by its keys, cached with it.
	rows := newKeyTable[redKey]()
	rowOf := func(k seriesKey) [2]uint64 {
		if bySpan {
			return k.full()
		}
		return k.service()
	}
	var rates []float64
	r.rates(ms[0], func(l labels.Labels, k seriesKey, rate float64) {
		i := rows.add(rowOf(k), func() redKey {
			g := groupOf(l)
			if bySpan {
				return redKey{g[0], g[1]}
			}
			return redKey{service: g[0]}
		})
		if i == len(rates) {
			rates = append(rates, 0)
		}
		rates[i] += rate
	})
	errRates := make([]float64, len(rates))
	withErrs := make([]bool, len(rates))
	r.rates(ms[1], func(_ labels.Labels, k seriesKey, rate float64) {
		if i, ok := rows.find(rowOf(k)); ok {
			errRates[i] += rate
			withErrs[i] = true
		}
	})
	// A column of rows per bucket bound, as `sum by (…, le)` groups them
	// (bounds written alike, "1" and "1.0", are summed, as
	// histogram_quantile does); a row has a bucket where it has a series.
	type leColumn struct {
		bound float64
		rates []float64
		has   []bool
	}
	var cols []*leColumn
	colOf := map[uint64]*leColumn{}
	r.rates(ms[2], func(_ labels.Labels, k seriesKey, rate float64) {
		i, ok := rows.find(rowOf(k))
		bound, valid := k.bound()
		if !ok || !valid {
			return
		}
		c := colOf[math.Float64bits(bound)]
		if c == nil {
			c = &leColumn{bound: bound, rates: make([]float64, len(rates)), has: make([]bool, len(rates))}
			colOf[math.Float64bits(bound)] = c
			cols = append(cols, c)
		}
		c.rates[i] += rate
		c.has[i] = true
	})
	values := []map[redKey]float64{make(map[redKey]float64, len(rates)), {}}
	for i, k := range rows.keys {
		values[0][k] = rates[i]
		if withErrs[i] {
			values[1][k] = errRates[i]
		}
	}
	for range redQuantiles {
		values = append(values, map[redKey]float64{})
	}
	group := make(promql.Buckets, 0, len(cols))
	for i, k := range rows.keys {
		group = group[:0]
		for _, c := range cols {
			if c.has[i] {
				group = append(group, promql.Bucket{UpperBound: c.bound, Count: c.rates[i]})
			}
		}
		if len(group) == 0 {
			continue
		}
		for n, quantile := range redQuantiles {
			values[2+n][k], _, _, _, _, _ = promql.BucketQuantile(quantile, group)
		}
	}
	return values, ctx.Err()
}

func msOrNaN[K comparable](m map[K]float64, k K) float64 {
	v, ok := m[k]
	if !ok {
		return math.NaN()
	}
	return v * 1000
}
