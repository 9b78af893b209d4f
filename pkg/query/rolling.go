package query

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
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

// graphSource opens the window (end-w, end]: the tenant's rolling window
// when it holds all of it, else the TSDB.
func (q *Querier) graphSource(tenant string, end time.Time, w time.Duration) (graphSource, error) {
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
// returns nil when the source has none or it does not hold the window.
func (q *Querier) rollingReader(tenant string, mint, maxt int64) *rollingSource {
	rs, ok := q.source.(RollingSource)
	if !ok {
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

// rates feeds add the rate of each series of ms over the window.
func (s *rollingSource) rates(ms []*labels.Matcher, add func(l labels.Labels, rate float64)) {
	s.r.Each(ms, func(l labels.Labels, sp rolling.Span) {
		if sp.N >= 2 {
			add(l, extrapolatedRate(sp.FirstT, sp.LastT, sp.FirstV, sp.Increase, sp.N, s.mint, s.maxt))
		}
	})
}

func (s *rollingSource) run(ctx context.Context, jobs []windowJob) error {
	errs := make([]error, len(jobs))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if errs[i] = ctx.Err(); errs[i] == nil {
				s.rates(j.matchers, j.add)
			}
		}()
	}
	wg.Wait()
	return classify(errors.Join(errs...))
}

func (s *rollingSource) bucketBounds(ctx context.Context, metric string, extra []*labels.Matcher) ([]string, error) {
	return validBounds(s.r.LabelValues("le", withName(metric, extra...))), ctx.Err()
}

func (s *rollingSource) withSamples(ctx context.Context, name string, ms ...*labels.Matcher) (map[string]bool, error) {
	out := map[string]bool{}
	s.r.Each(ms, func(l labels.Labels, _ rolling.Span) { out[l.Get(name)] = true })
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
