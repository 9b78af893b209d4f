// Package registrytest collects a registry into memory so that processor
// tests can assert exact series and values.
package registrytest

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/spangraph/spangraph/pkg/registry"
)

// Sample is one appended sample.
type Sample struct {
	Labels labels.Labels
	T      int64
	V      float64
}

// Appender records what the registry appends. The storage.Appender it
// embeds is nil: the registry calls only the methods overridden here.
type Appender struct {
	storage.Appender
	Samples   []Sample
	Exemplars []Exemplar
	refs      map[string]storage.SeriesRef
}

// Exemplar is one appended exemplar with its series.
type Exemplar struct {
	Labels   labels.Labels
	Exemplar exemplar.Exemplar
}

// Append implements storage.Appender.
func (a *Appender) Append(_ storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	a.Samples = append(a.Samples, Sample{Labels: l, T: t, V: v})
	if a.refs == nil {
		a.refs = map[string]storage.SeriesRef{}
	}
	ref, ok := a.refs[l.String()]
	if !ok {
		ref = storage.SeriesRef(len(a.refs) + 1)
		a.refs[l.String()] = ref
	}
	return ref, nil
}

// AppendExemplar implements storage.Appender.
func (a *Appender) AppendExemplar(ref storage.SeriesRef, l labels.Labels, e exemplar.Exemplar) (storage.SeriesRef, error) {
	a.Exemplars = append(a.Exemplars, Exemplar{Labels: l, Exemplar: e})
	return ref, nil
}

// Commit implements storage.Appender.
func (a *Appender) Commit() error { return nil }

// Rollback implements storage.Appender.
func (a *Appender) Rollback() error { return nil }

// Collect runs one collection at now and returns the last value of every
// series, keyed by its label set in Prometheus text form, e.g.
// `traces_spanmetrics_calls_total{service="a", span_name="b"}`.
func Collect(r *registry.Registry, now time.Time) (map[string]float64, *Appender) {
	app := &Appender{}
	if _, err := r.Collect(app, now); err != nil {
		panic(err)
	}
	out := map[string]float64{}
	for _, s := range app.Samples {
		out[s.Labels.String()] = s.V
	}
	return out, app
}

// Filter returns the series whose key starts with the metric name prefix,
// sorted, as "key value" lines: handy in failure messages.
func Filter(series map[string]float64, prefix string) []string {
	var out []string
	for k, v := range series {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k+" "+formatFloat(v))
		}
	}
	sort.Strings(out)
	return out
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
