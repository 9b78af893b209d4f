package query

import (
	"context"
	"hash/maphash"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/spangraph/spangraph/pkg/rolling"
)

// RollingSource is a Source that also keeps each tenant's rolling window
// (package rolling). The node graph and the RED table read a window that
// lies inside it from memory, and any other from the TSDB, with the same
// arithmetic on the same samples, so the figures are the same.
type RollingSource interface {
	Source
	// Rolling returns the tenant's rolling window, held open until
	// release is called; nil when the tenant has none.
	Rolling(tenant string) (st *rolling.Store, release func())
}

// graphSource reads what the node graph needs of one window.
type graphSource interface {
	// run evaluates the jobs, concurrently.
	run(ctx context.Context, jobs []windowJob) error
	// bucketBounds returns the valid le values of metric's series.
	bucketBounds(ctx context.Context, metric string, extra []*labels.Matcher) ([]string, error)
	// withSamples returns the values of label name on the series of ms
	// with a sample in the window.
	withSamples(ctx context.Context, name string, ms ...*labels.Matcher) (map[string]bool, error)
	close()
}

// graphSource opens the window (end-w, end]: the query backend when
// there is one, else the tenant's rolling window when it holds all of
// it, else the TSDB.
func (q *Querier) graphSource(tenant string, end time.Time, w time.Duration) (graphSource, error) {
	if b := q.Backend(); b != nil {
		return backendSource{q: q, b: b, tenant: tenant, end: end, w: w}, nil
	}
	win := q.window(tenant, end, w)
	if r := q.rollingReader(tenant, win.mint, win.maxt); r != nil {
		return r, nil
	}
	querier, err := win.querier()
	if err != nil {
		return nil, err
	}
	return tsdbSource{win, querier}, nil
}

// rollingReader opens the tenant's rolling window over (mint, maxt], or
// returns nil when the source has none or it does not hold the window,
// or the reads go to a query backend.
func (q *Querier) rollingReader(tenant string, mint, maxt int64) *rollingSource {
	rs, ok := q.source.(RollingSource)
	if !ok || q.Backend() != nil {
		return nil
	}
	st, release := rs.Rolling(tenant)
	if st == nil {
		return nil
	}
	r, ok := st.Read(mint, maxt)
	if !ok {
		release()
		return nil
	}
	return &rollingSource{r: r, mint: mint, maxt: maxt, release: release}
}

type tsdbSource struct {
	win     timeWindow
	querier storage.Querier
}

func (s tsdbSource) run(ctx context.Context, jobs []windowJob) error { return s.win.run(ctx, jobs) }

func (s tsdbSource) bucketBounds(ctx context.Context, metric string, extra []*labels.Matcher) ([]string, error) {
	les, err := labelValuesIn(ctx, s.querier, "le", withName(metric, extra...)...)
	if err != nil {
		return nil, err
	}
	return validBounds(les), nil
}

func (s tsdbSource) withSamples(ctx context.Context, name string, ms ...*labels.Matcher) (map[string]bool, error) {
	return s.win.withSamples(ctx, s.querier, name, ms...)
}

func (s tsdbSource) close() { s.querier.Close() }

// rollingSource reads a rolling window.
type rollingSource struct {
	r          *rolling.Reader
	mint, maxt int64
	release    func()
}

// rates feeds add the rate of each series of ms over the window, with
// the series' keys, derived once in the series' life.
func (s *rollingSource) rates(ms []*labels.Matcher, add func(l labels.Labels, k seriesKey, rate float64)) {
	s.r.Each(ms, func(x rolling.Series, sp rolling.Span) {
		if sp.N >= 2 {
			add(x.Labels(), seriesKey(x.Memo(memoKey)), extrapolatedRate(sp.FirstT, sp.LastT, sp.FirstV, sp.Increase, sp.N, s.mint, s.maxt))
		}
	})
}

// seriesKey identifies what the node graph and the RED table group a
// series by, as hashes: the edge (client, server, connection_type) of a
// service-graph series, the service and span name of a span-metrics one
// (its row by span name), and, for the RED table by service, the
// service alone; and it holds the series' bucket bound. A series of the
// rolling window has it derived once in its life and kept with it
// (rolling.Series.Memo); a series of the TSDB, once per read. Each key
// is two 64-bit hashes of independent seeds, which a query takes as the
// key itself: two keys in a query would both collide with a chance of
// 2^-128, against the label lookups and string comparisons a check would
// cost per series.
type seriesKey [5]uint64

// full and service are the keys of the whole group and of its service.
func (k seriesKey) full() [2]uint64    { return [2]uint64{k[0], k[1]} }
func (k seriesKey) service() [2]uint64 { return [2]uint64{k[2], k[3]} }

// bound returns the series' le as a number, or false when it has none
// or one that does not parse (histogram_quantile skips it).
func (k seriesKey) bound() (float64, bool) {
	b := math.Float64frombits(k[4])
	return b, !math.IsNaN(b)
}

// keySeeds seed the keys' hashes: fixed for the process, as the hashes
// are never stored elsewhere.
var keySeeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}

// groupOf returns the labels a series is grouped by: client, server and
// connection_type, or service, span name and "".
func groupOf(l labels.Labels) [3]string {
	g, _ := groupAndLE(l)
	return g
}

// groupAndLE returns groupOf and the le label, in one pass.
func groupAndLE(l labels.Labels) (g [3]string, le string) {
	span := false
	l.Range(func(x labels.Label) {
		switch x.Name {
		case "le":
			le = x.Value
		case labels.MetricName:
			span = strings.HasPrefix(x.Value, "traces_spanmetrics_")
		case "client", "service":
			if span == (x.Name == "service") {
				g[0] = x.Value
			}
		case "server", "span_name":
			if span == (x.Name == "span_name") {
				g[1] = x.Value
			}
		case "connection_type":
			if !span {
				g[2] = x.Value
			}
		}
	})
	return g, le
}

// keyOf derives a series' keys from its labels, in one pass over them.
func keyOf(l labels.Labels) seriesKey {
	g, le := groupAndLE(l)
	var k seriesKey
	for i, seed := range keySeeds {
		k[i] = maphash.Comparable(seed, g)
		k[2+i] = maphash.String(seed, g[0])
	}
	k[4] = math.Float64bits(math.NaN())
	if b, err := strconv.ParseFloat(le, 64); err == nil && !math.IsNaN(b) {
		k[4] = math.Float64bits(b)
	}
	return k
}

// memoKey is keyOf as a rolling.Series memo.
func memoKey(l labels.Labels) rolling.Memo { return rolling.Memo(keyOf(l)) }

// keyTable numbers the groups a query meets, found by their keys.
type keyTable[K any] struct {
	keys []K
	of   map[[2]uint64]int
}

func newKeyTable[K any]() keyTable[K] { return keyTable[K]{of: map[[2]uint64]int{}} }

// find returns the number of the group of key h.
func (t *keyTable[K]) find(h [2]uint64) (int, bool) {
	i, ok := t.of[h]
	return i, ok
}

// add numbers the group of key h unless it has a number already, and
// returns it; group derives the group's value the first time.
func (t *keyTable[K]) add(h [2]uint64, group func() K) int {
	if i, ok := t.of[h]; ok {
		return i
	}
	i := len(t.keys)
	t.keys = append(t.keys, group())
	t.of[h] = i
	return i
}

func (s *rollingSource) run(ctx context.Context, jobs []windowJob) error {
	return runJobs(jobs, func(j windowJob) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.rates(j.matchers, j.add)
		return nil
	})
}

func (s *rollingSource) bucketBounds(ctx context.Context, metric string, extra []*labels.Matcher) ([]string, error) {
	return validBounds(s.r.LabelValues("le", withName(metric, extra...))), ctx.Err()
}

func (s *rollingSource) withSamples(ctx context.Context, name string, ms ...*labels.Matcher) (map[string]bool, error) {
	out := map[string]bool{}
	s.r.Each(ms, func(x rolling.Series, _ rolling.Span) { out[x.Labels().Get(name)] = true })
	return out, ctx.Err()
}

func (s *rollingSource) close() {
	s.r.Close()
	s.release()
}

// validBounds keeps the le values that parse as numbers, as
// histogram_quantile does.
func validBounds(les []string) []string {
	var valid []string
	for _, le := range les {
		if _, err := strconv.ParseFloat(le, 64); err == nil {
			valid = append(valid, le)
		}
	}
	return valid
}
