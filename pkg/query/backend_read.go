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

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// The reads of a Querier with a backend. Each passes the same checks as
// over the embedded store before it leaves (text length and depth, steps
// and subquery steps, a max_concurrency slot, query.timeout), so that a
// query refused here is refused whatever the store; then the backend
// evaluates it, and its answer comes back in the types the engine's
// would (promql.Vector, Matrix, Scalar, String), so that the API and the
// plugin do not know where it came from.

// UseBackend sends every read of q to b from now on: PromQL, label
// names and values, series, exemplars, the node graph and the RED table.
// The embedded store and the rolling window are then never read. nil
// sends the reads to q's source again.
func (q *Querier) UseBackend(b *Backend) { q.backend.Store(b) }

// Backend returns the query backend every read goes to, nil for the
// source.
func (q *Querier) Backend() *Backend { return q.backend.Load() }

// maxAnswerBytes bounds a backend's answer to what query.max_samples
// samples would take in memory here.
func (q *Querier) maxAnswerBytes() int64 { return int64(q.cfg.MaxSamples) * BytesPerSample }

// evalOptions are the API parameters of a PromQL request: the time left,
// and query.lookback_delta when it is not Prometheus' default. Both are
// given in whole seconds, which every Prometheus-compatible API parses.
func (q *Querier) evalOptions(rctx context.Context) []v1.Option {
	var opts []v1.Option
	if d := evalTimeout(rctx).Truncate(time.Second); d > 0 {
		opts = append(opts, v1.WithTimeout(d))
	}
	if d := q.cfg.LookbackDelta; d != 5*time.Minute && d%time.Second == 0 {
		opts = append(opts, v1.WithLookbackDelta(d))
	}
	return opts
}

// noStore is the queryable of the queries the engine parses for a
// backend, which read nothing here.
var noStore = storage.QueryableFunc(func(int64, int64) (storage.Querier, error) { return storage.NoopQuerier(), nil })

// remoteInstant is instant over the backend: parsed and checked here as
// the engine would, evaluated there.
func (q *Querier) remoteInstant(ctx context.Context, b *Backend, tenant, expr string, ts time.Time) (Result, error) {
	qry, err := q.engine.NewInstantQuery(ctx, noStore, nil, expr, ts)
	if err != nil {
		return Result{}, err
	}
	defer qry.Close()
	if stmt, ok := qry.Statement().(*parser.EvalStmt); ok && stmt.Expr.Type() == parser.ValueTypeString {
		// Only a literal is a string, and client_golang's API client
		// cannot read a string result: it is evaluated here.
		return q.exec(ctx, qry, span{ts.UnixMilli(), ts.UnixMilli(), 1})
	}
	if err := q.checkSteps(qry, span{ts.UnixMilli(), ts.UnixMilli(), 1}); err != nil {
		return Result{}, err
	}
	rctx, cancel := b.request(ctx, tenant, q.maxAnswerBytes())
	defer cancel()
	v, warnings, infos, err := b.api.Query(rctx, expr, ts, q.evalOptions(rctx)...)
	if err != nil {
		return Result{}, b.fail(ctx, rctx, err)
	}
	return q.fromModel(b, v, warnings, infos)
}

// remoteRange is Range over the backend, after Range's checks.
func (q *Querier) remoteRange(ctx context.Context, b *Backend, tenant, expr string, start, end time.Time, step time.Duration) (Result, error) {
	qry, err := q.engine.NewRangeQuery(ctx, noStore, nil, expr, start, end, step)
	if err != nil {
		return Result{}, err
	}
	err = q.checkSteps(qry, span{start.UnixMilli(), end.UnixMilli(), step.Milliseconds()})
	qry.Close()
	if err != nil {
		return Result{}, err
	}
	rctx, cancel := b.request(ctx, tenant, q.maxAnswerBytes())
	defer cancel()
	v, warnings, infos, err := b.api.QueryRange(rctx, expr, v1.Range{Start: start, End: end, Step: step}, q.evalOptions(rctx)...)
	if err != nil {
		return Result{}, b.fail(ctx, rctx, err)
	}
	return q.fromModel(b, v, warnings, infos)
}

// note is a warning or an info of the backend's, as an annotation that
// prints as the backend wrote it.
type note struct {
	msg  string
	kind error
}

func (n note) Error() string { return n.msg }
func (n note) Unwrap() error { return n.kind }

// fromModel converts an API answer to the engine's types, refusing one
// over query.max_samples as the engine would.
func (q *Querier) fromModel(b *Backend, v model.Value, warnings v1.Warnings, infos v1.Infos) (Result, error) {
	var res Result
	for _, w := range warnings {
		res.Warnings.Add(note{w, annotations.PromQLWarning})
	}
	for _, i := range infos {
		res.Warnings.Add(note{i, annotations.PromQLInfo})
	}
	samples := 0
	switch v := v.(type) {
	case model.Vector:
		out := make(promql.Vector, 0, len(v))
		for _, s := range v {
			ps := promql.Sample{Metric: modelLabels(s.Metric), T: int64(s.Timestamp), F: float64(s.Value)}
			if s.Histogram != nil {
				ps.F, ps.H = 0, floatHistogram(s.Histogram)
			}
			out = append(out, ps)
		}
		samples, res.Value = len(out), out
	case model.Matrix:
		out := make(promql.Matrix, 0, len(v))
		for _, s := range v {
			ps := promql.Series{Metric: modelLabels(s.Metric)}
			if len(s.Values) > 0 {
				ps.Floats = make([]promql.FPoint, len(s.Values))
				for i, p := range s.Values {
					ps.Floats[i] = promql.FPoint{T: int64(p.Timestamp), F: float64(p.Value)}
				}
			}
			if len(s.Histograms) > 0 {
				ps.Histograms = make([]promql.HPoint, len(s.Histograms))
				for i, p := range s.Histograms {
					ps.Histograms[i] = promql.HPoint{T: int64(p.Timestamp), H: floatHistogram(p.Histogram)}
				}
			}
			samples += len(ps.Floats) + len(ps.Histograms)
			out = append(out, ps)
		}
		res.Value = out
	case *model.Scalar:
		res.Value = promql.Scalar{T: int64(v.Timestamp), V: float64(v.Value)}
	case *model.String:
		res.Value = promql.String{T: int64(v.Timestamp), V: v.Value}
	default:
		return Result{}, &Error{Type: ErrorInternal, Err: fmt.Errorf("query backend %s answered with a result of type %v", b, v.Type())}
	}
	if samples > q.cfg.MaxSamples {
		return Result{}, refuse(ErrorExec, ReasonTooManySamples,
			"the answer of query backend %s holds %d samples", b, samples)
	}
	return res, nil
}

// modelLabels converts an API label set.
func modelLabels[M ~map[model.LabelName]model.LabelValue](m M) labels.Labels {
	b := labels.NewScratchBuilder(len(m))
	for k, v := range m {
		b.Add(string(k), string(v))
	}
	b.Sort()
	return b.Labels()
}

// floatHistogram rebuilds a native histogram from the buckets the API
// lists (those with observations, with their bounds): as exponential
// buckets when the bounds are those of a schema, else as custom buckets
// with the bounds listed, so that the histogram lists the same buckets
// again and histogram functions over it agree.
func floatHistogram(h *model.SampleHistogram) *histogram.FloatHistogram {
	if fh, ok := exponentialHistogram(h); ok {
		return fh
	}
	if fh, ok := customHistogram(h); ok {
		return fh
	}
	return &histogram.FloatHistogram{Count: float64(h.Count), Sum: float64(h.Sum)}
}

// exponentialHistogram reads h's buckets as those of an exponential
// schema: the zero bucket [-t, t], and buckets whose upper bound (lower,
// for a negative one) is 2^(i·2^-schema). The schema comes from the
// width of a bucket that the zero bucket did not cut.
func exponentialHistogram(h *model.SampleHistogram) (*histogram.FloatHistogram, bool) {
	fh := &histogram.FloatHistogram{Count: float64(h.Count), Sum: float64(h.Sum)}
	var pos, neg []*model.HistogramBucket
	for _, b := range h.Buckets {
		lo, up := float64(b.Lower), float64(b.Upper)
		switch {
		case math.IsInf(lo, 0) || math.IsInf(up, 0):
			return nil, false
		case b.Boundaries == 3 && lo == -up:
			fh.ZeroThreshold, fh.ZeroCount = up, float64(b.Count)
		case lo >= 0 && up > lo:
			pos = append(pos, b)
		case up <= 0 && lo < up:
			neg = append(neg, b)
		default:
			return nil, false
		}
	}
	var schemas []int32
	width := func(small, large float64) {
		if small > fh.ZeroThreshold {
			s := math.Round(-math.Log2(math.Log2(large / small)))
			if s >= float64(histogram.ExponentialSchemaMin) && s <= float64(histogram.ExponentialSchemaMax) {
				schemas = append(schemas, int32(s))
			}
		}
	}
	for _, b := range pos {
		width(float64(b.Lower), float64(b.Upper))
	}
	for _, b := range neg {
		width(-float64(b.Upper), -float64(b.Lower))
	}
	if len(schemas) > 0 {
		schemas = schemas[:1]
	} else {
		// Only buckets the zero bucket cut: the coarsest schema that has
		// their upper bounds cuts them the same way.
		for s := histogram.ExponentialSchemaMin; s <= histogram.ExponentialSchemaMax; s++ {
			schemas = append(schemas, s)
		}
	}
	for _, s := range schemas {
		fh.Schema = s
		scale := math.Exp2(float64(s))
		var ok1, ok2 bool
		fh.PositiveSpans, fh.PositiveBuckets, ok1 = spansOf(pos, func(b *model.HistogramBucket) float64 {
			return math.Round(math.Log2(float64(b.Upper)) * scale)
		})
		// The API lists negative buckets from the most negative on.
		rev := slices.Clone(neg)
		slices.Reverse(rev)
		fh.NegativeSpans, fh.NegativeBuckets, ok2 = spansOf(rev, func(b *model.HistogramBucket) float64 {
			return math.Round(math.Log2(-float64(b.Lower)) * scale)
		})
		if ok1 && ok2 && sameBuckets(fh, h) {
			return fh, true
		}
	}
	return nil, false
}

// customHistogram reads h's buckets as custom buckets (schema -53) whose
// bounds are all the finite bounds listed.
func customHistogram(h *model.SampleHistogram) (*histogram.FloatHistogram, bool) {
	fh := &histogram.FloatHistogram{Count: float64(h.Count), Sum: float64(h.Sum), Schema: histogram.CustomBucketsSchema}
	for _, b := range h.Buckets {
		for _, v := range []float64{float64(b.Lower), float64(b.Upper)} {
			if !math.IsInf(v, 0) {
				fh.CustomValues = append(fh.CustomValues, v)
			}
		}
	}
	slices.Sort(fh.CustomValues)
	fh.CustomValues = slices.Compact(fh.CustomValues)
	var ok bool
	fh.PositiveSpans, fh.PositiveBuckets, ok = spansOf(h.Buckets, func(b *model.HistogramBucket) float64 {
		i, _ := slices.BinarySearch(fh.CustomValues, float64(b.Upper))
		return float64(i)
	})
	if !ok || !sameBuckets(fh, h) {
		return nil, false
	}
	return fh, true
}

// spansOf lays out buckets, in increasing index order, as spans.
func spansOf(bs []*model.HistogramBucket, index func(*model.HistogramBucket) float64) ([]histogram.Span, []float64, bool) {
	var (
		spans  []histogram.Span
		counts []float64
		prev   int64
	)
	for i, b := range bs {
		f := index(b)
		if math.IsNaN(f) || math.Abs(f) > math.MaxInt32/2 {
			return nil, nil, false
		}
		idx := int64(f)
		switch {
		case i == 0:
			spans = append(spans, histogram.Span{Offset: int32(idx), Length: 1})
		case idx <= prev:
			return nil, nil, false
		case idx == prev+1:
			spans[len(spans)-1].Length++
		default:
			spans = append(spans, histogram.Span{Offset: int32(idx - prev - 1), Length: 1})
		}
		counts = append(counts, float64(b.Count))
		prev = idx
	}
	return spans, counts, true
}

// sameBuckets says whether fh lists h's buckets: the same counts under
// the same upper bounds, in order.
func sameBuckets(fh *histogram.FloatHistogram, h *model.SampleHistogram) bool {
	it := fh.AllBucketIterator()
	i := 0
	for it.Next() {
		b := it.At()
		if b.Count == 0 {
			continue
		}
		if i == len(h.Buckets) {
			return false
		}
		want := h.Buckets[i]
		if b.Count != float64(want.Count) || !closeTo(b.Upper, float64(want.Upper)) {
			return false
		}
		i++
	}
	return i == len(h.Buckets)
}

func closeTo(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-12*math.Max(math.Abs(a), math.Abs(b))
}

// The API's "no start" and "no end", as pkg/api and Prometheus parse an
// absent start or end: sent as no parameter at all.
var (
	apiMinTime = time.Unix(math.MinInt64/1000+62135596801, 0).UTC().UnixMilli()
	apiMaxTime = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC().UnixMilli()
)

// apiTime is ms as an API time parameter; zero (absent) at the limits.
func apiTime(ms int64) time.Time {
	if ms <= apiMinTime || ms >= apiMaxTime {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// matchersText writes matcher sets as match[] selectors.
func matchersText(sets [][]*labels.Matcher) []string {
	out := make([]string, 0, len(sets))
	for _, ms := range sets {
		out = append(out, selectorText(ms))
	}
	return out
}

// selectorText writes matchers as a PromQL selector, {a="b",c=~"d"}.
func selectorText(ms []*labels.Matcher) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// remoteRead runs one metadata read against the backend in a query slot.
func remoteRead[T any](ctx context.Context, q *Querier, b *Backend, tenant string, read func(context.Context) (T, error)) (T, error) {
	var zero T
	ctx, done, err := q.begin(ctx)
	if err != nil {
		return zero, q.finish(ctx, err)
	}
	defer done()
	rctx, cancel := b.request(ctx, tenant, q.maxAnswerBytes())
	defer cancel()
	out, err := read(rctx)
	if err != nil {
		return zero, q.finish(ctx, b.fail(ctx, rctx, err))
	}
	return out, nil
}

// sortedStrings sorts and de-duplicates.
func sortedStrings[S ~string](vals []S) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = string(v)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func (q *Querier) remoteLabelNames(ctx context.Context, b *Backend, tenant string, sets [][]*labels.Matcher, mint, maxt int64) ([]string, error) {
	return remoteRead(ctx, q, b, tenant, func(ctx context.Context) ([]string, error) {
		names, _, _, err := b.api.LabelNames(ctx, matchersText(sets), apiTime(mint), apiTime(maxt))
		return sortedStrings(names), err
	})
}

func (q *Querier) remoteLabelValues(ctx context.Context, b *Backend, tenant, name string, sets [][]*labels.Matcher, mint, maxt int64) ([]string, error) {
	return remoteRead(ctx, q, b, tenant, func(ctx context.Context) ([]string, error) {
		vals, _, _, err := b.api.LabelValues(ctx, name, matchersText(sets), apiTime(mint), apiTime(maxt))
		return sortedStrings(vals), err
	})
}

func (q *Querier) remoteSeries(ctx context.Context, b *Backend, tenant string, sets [][]*labels.Matcher, mint, maxt int64) ([]labels.Labels, error) {
	return remoteRead(ctx, q, b, tenant, func(ctx context.Context) ([]labels.Labels, error) {
		found, _, _, err := b.api.Series(ctx, matchersText(sets), apiTime(mint), apiTime(maxt))
		out := make([]labels.Labels, 0, len(found))
		for _, s := range found {
			out = append(out, modelLabels(s))
		}
		sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i], out[j]) < 0 })
		return out, err
	})
}

// remoteExemplars is Exemplars over the backend: the expression is
// parsed here first, so that a bad one fails as over the embedded store.
func (q *Querier) remoteExemplars(ctx context.Context, b *Backend, tenant string, e parser.Expr, expr string, start, end time.Time) ([]ExemplarSeries, error) {
	if len(parser.ExtractSelectors(e)) == 0 {
		return []ExemplarSeries{}, nil
	}
	rctx, cancel := b.request(ctx, tenant, q.maxAnswerBytes())
	defer cancel()
	res, err := b.api.QueryExemplars(rctx, expr, start, end)
	if err != nil {
		return nil, b.fail(ctx, rctx, err)
	}
	out := make([]ExemplarSeries, 0, len(res))
	for _, r := range res {
		s := ExemplarSeries{SeriesLabels: modelLabels(r.SeriesLabels)}
		for _, ex := range r.Exemplars {
			s.Exemplars = append(s.Exemplars, Exemplar{
				Labels:    modelLabels(ex.Labels),
				Value:     strconv.FormatFloat(float64(ex.Value), 'f', -1, 64),
				Timestamp: float64(ex.Timestamp) / 1000,
			})
		}
		out = append(out, s)
	}
	return out, nil
}
