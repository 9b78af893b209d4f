// Package registrytest collects a registry into memory so that processor
// tests can assert exact series and values.
package registrytest

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
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
	Samples    []Sample
	Histograms []HistogramSample
	Exemplars  []Exemplar
	refs       map[string]storage.SeriesRef
}

// HistogramSample is one appended native histogram.
type HistogramSample struct {
	Labels labels.Labels
	T      int64
	H      *histogram.Histogram
}

// Exemplar is one appended exemplar with its series.
type Exemplar struct {
	Labels   labels.Labels
	Exemplar exemplar.Exemplar
}

// Append implements storage.Appender.
func (a *Appender) Append(_ storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	a.Samples = append(a.Samples, Sample{Labels: l, T: t, V: v})
	return a.ref(l), nil
}

// AppendHistogram implements storage.Appender for the registry's native
// histograms, which are integer histograms.
func (a *Appender) AppendHistogram(_ storage.SeriesRef, l labels.Labels, t int64, h *histogram.Histogram, _ *histogram.FloatHistogram) (storage.SeriesRef, error) {
	a.Histograms = append(a.Histograms, HistogramSample{Labels: l, T: t, H: h.Copy()})
	return a.ref(l), nil
}

// Native returns the last native histogram of every series, keyed as
// Collect keys its values.
func (a *Appender) Native() map[string]*histogram.Histogram {
	out := map[string]*histogram.Histogram{}
	for _, h := range a.Histograms {
		out[h.Labels.String()] = h.H
	}
	return out
}

// Lines renders every appended sample, float or native histogram, as
// "series @t value" lines sorted by series then time: a golden form of a
// collection.
func (a *Appender) Lines() []string {
	type line struct {
		series string
		t      int64
		text   string
	}
	var ls []line
	for _, s := range a.Samples {
		ls = append(ls, line{s.Labels.String(), s.T, formatFloat(s.V)})
	}
	for _, h := range a.Histograms {
		ls = append(ls, line{h.Labels.String(), h.T, h.H.String()})
	}
	sort.SliceStable(ls, func(i, j int) bool {
		if ls[i].series != ls[j].series {
			return ls[i].series < ls[j].series
		}
		return ls[i].t < ls[j].t
	})
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.series + " @" + strconv.FormatInt(l.t, 10) + " " + l.text
	}
	return out
}

func (a *Appender) ref(l labels.Labels) storage.SeriesRef {
	if a.refs == nil {
		a.refs = map[string]storage.SeriesRef{}
	}
	ref, ok := a.refs[l.String()]
	if !ok {
		ref = storage.SeriesRef(len(a.refs) + 1)
		a.refs[l.String()] = ref
	}
	return ref
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
