package query

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// backendSource is the node graph's window, (end-w, end], read through a
// backend. Each job's rates become one PromQL instant query at end,
// summed on the backend per group, so that the series of every instance
// (__metrics_gen_instance) and every other label the figures do not
// group by are added up there rather than shipped here:
//
//	sum by (client, server, connection_type, le) (rate(sel[w]))
//
// (service and span_name for span metrics). rate() is the function the
// embedded path mirrors (counterRate), and its sum per group is what the
// embedded path adds up series by series, so the figures agree. The jobs
// of one metric that differ only in their le (a histogram's buckets) are
// one query, whose samples go to the job of their le.
type backendSource struct {
	q      *Querier
	b      *Backend
	tenant string
	end    time.Time
	w      time.Duration
}

// backendParallelism is how many of a node graph's queries run at once
// on the backend: the 7 of a graph's columns all at once.
const backendParallelism = 8

// jobGroup is the jobs one query answers.
type jobGroup struct {
	metric, selector string
	// all get every sample; byLE those of their le.
	all  []windowJob
	byLE map[string][]windowJob
}

// groupJobs groups the jobs by their selector without an le="…" matcher.
func groupJobs(jobs []windowJob) ([]*jobGroup, error) {
	var groups []*jobGroup
	of := map[string]*jobGroup{}
	for _, j := range jobs {
		var (
			metric, le string
			rest       []*labels.Matcher
		)
		for _, m := range j.matchers {
			switch {
			case m.Name == labels.MetricName && m.Type == labels.MatchEqual:
				metric = m.Value
				rest = append(rest, m)
			case m.Name == "le" && m.Type == labels.MatchEqual && le == "":
				le = m.Value
			default:
				rest = append(rest, m)
			}
		}
		if metric == "" {
			return nil, &Error{Type: ErrorInternal, Err: fmt.Errorf("node graph: the query backend cannot read %s, which names no metric", selectorText(j.matchers))}
		}
		sel := selectorText(rest)
		g := of[sel]
		if g == nil {
			g = &jobGroup{metric: metric, selector: sel, byLE: map[string][]windowJob{}}
			of[sel] = g
			groups = append(groups, g)
		}
		if le == "" {
			g.all = append(g.all, j)
		} else {
			g.byLE[le] = append(g.byLE[le], j)
		}
	}
	return groups, nil
}

// groupLabels are the labels a metric's figures are grouped by, as
// groupAndLE reads them, and le.
func groupLabels(metric string) string {
	if strings.HasPrefix(metric, "traces_spanmetrics_") {
		return "service, span_name, le"
	}
	return "client, server, connection_type, le"
}

// rangeText is the window as a PromQL range, as window() writes it.
func (s backendSource) rangeText() string {
	return fmt.Sprintf("%ds", int64(s.w.Seconds()))
}

// vector runs expr at the window's end on the backend, through vector's
// checks (text and steps, in the caller's slot).
func (s backendSource) vector(ctx context.Context, expr string) (model.Vector, error) {
	if err := s.q.checkText(expr); err != nil {
		return nil, err
	}
	rctx, cancel := s.b.request(ctx, s.tenant, s.q.maxAnswerBytes())
	defer cancel()
	v, _, _, err := s.b.api.Query(rctx, expr, s.end, s.q.evalOptions(rctx)...)
	if err != nil {
		return nil, s.b.fail(ctx, rctx, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, &Error{Type: ErrorInternal, Err: fmt.Errorf("query backend %s answered %s with a %s, not a vector", s.b, expr, v.Type())}
	}
	return vec, nil
}

func (s backendSource) run(ctx context.Context, jobs []windowJob) error {
	groups, err := groupJobs(jobs)
	if err != nil {
		return err
	}
	errs := make([]error, len(groups))
	sem := make(chan struct{}, backendParallelism)
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = s.runGroup(ctx, g)
		}()
	}
	wg.Wait()
	// The first error says it; the others are mostly the same one again.
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// runGroup feeds the group's jobs the rates of its query. The jobs of a
// group are in no other group, so they are fed by this goroutine alone.
func (s backendSource) runGroup(ctx context.Context, g *jobGroup) error {
	expr := fmt.Sprintf("sum by (%s) (rate(%s[%s]))", groupLabels(g.metric), g.selector, s.rangeText())
	vec, err := s.vector(ctx, expr)
	if err != nil {
		return err
	}
	b := labels.NewScratchBuilder(8)
	for _, smp := range vec {
		if smp.Histogram != nil {
			continue // rate() of a native histogram: not a classic series
		}
		b.Reset()
		b.Add(labels.MetricName, g.metric)
		for name, v := range smp.Metric {
			b.Add(string(name), string(v))
		}
		b.Sort()
		l := b.Labels()
		k := keyOf(l)
		r := float64(smp.Value)
		for _, j := range g.all {
			j.add(l, k, r)
		}
		for _, j := range g.byLE[l.Get("le")] {
			j.add(l, k, r)
		}
	}
	return nil
}

func (s backendSource) bucketBounds(ctx context.Context, metric string, extra []*labels.Matcher) ([]string, error) {
	start := time.UnixMilli(s.end.Add(-s.w).UnixMilli() + 1) // a range is open on the left
	rctx, cancel := s.b.request(ctx, s.tenant, s.q.maxAnswerBytes())
	defer cancel()
	les, _, _, err := s.b.api.LabelValues(rctx, "le", []string{selectorText(withName(metric, extra...))}, start, s.end)
	if err != nil {
		return nil, s.b.fail(ctx, rctx, err)
	}
	return validBounds(sortedStrings(les)), nil
}

func (s backendSource) withSamples(ctx context.Context, name string, ms ...*labels.Matcher) (map[string]bool, error) {
	vec, err := s.vector(ctx, fmt.Sprintf("group by (%s) (last_over_time(%s[%s]))", name, selectorText(ms), s.rangeText()))
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(vec))
	for _, smp := range vec {
		out[string(smp.Metric[model.LabelName(name)])] = true
	}
	return out, nil
}

func (s backendSource) close() {}
