package registry

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
)

// sample is one appended float sample.
type sample struct {
	series string // labels.Labels.String()
	t      int64
	v      float64
}

func (s sample) String() string { return fmt.Sprintf("%s @%d = %v", s.series, s.t, s.v) }

// histSample is one appended native histogram.
type histSample struct {
	series string
	t      int64
	h      *histogram.Histogram
}

func (s histSample) String() string { return fmt.Sprintf("%s @%d = %v", s.series, s.t, s.h) }

type recordedExemplar struct {
	series string
	e      exemplar.Exemplar
}

// recorder is a storage.Appender that records what it is given. Unlike a
// real appender it lives across collections, like a store would, so that
// it can check the series refs the registry caches: a ref handed back must
// name the series it was given for.
type recorder struct {
	samples   []sample
	hists     []histSample
	exemplars []recordedExemplar
	refErrors []string

	refs   map[string]storage.SeriesRef
	series map[storage.SeriesRef]string
	base   storage.SeriesRef
	// fail, when set, makes Append fail for the samples it returns an
	// error for.
	fail func(series string, t int64, v float64) error

	commits, rollbacks int
}

var _ storage.Appender = (*recorder)(nil)

// recorders numbers the recorders; each hands out refs from its own range,
// so that refs of different recorders never collide.
var recorders atomic.Uint64

func newRecorder() *recorder {
	return &recorder{
		refs:   map[string]storage.SeriesRef{},
		series: map[storage.SeriesRef]string{},
		base:   storage.SeriesRef(recorders.Add(1) << 32),
	}
}

func (r *recorder) ref(ref storage.SeriesRef, l labels.Labels) (string, storage.SeriesRef) {
	key := l.String()
	// A ref this recorder did not hand out comes from another appender (a
	// real store looks the labels up then); one it did must match.
	if owner, ok := r.series[ref]; ok && owner != key {
		r.refErrors = append(r.refErrors, fmt.Sprintf("ref %d (%s) passed with %s", ref, r.series[ref], key))
	}
	known, ok := r.refs[key]
	if !ok {
		known = r.base + storage.SeriesRef(len(r.refs))
		r.refs[key] = known
		r.series[known] = key
	}
	return key, known
}

func (r *recorder) Append(ref storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	key, known := r.ref(ref, l)
	if r.fail != nil {
		if err := r.fail(key, t, v); err != nil {
			return 0, err
		}
	}
	r.samples = append(r.samples, sample{key, t, v})
	return known, nil
}

func (r *recorder) AppendExemplar(ref storage.SeriesRef, l labels.Labels, e exemplar.Exemplar) (storage.SeriesRef, error) {
	key, known := r.ref(ref, l)
	if ref == 0 {
		r.refErrors = append(r.refErrors, "exemplar appended without the ref of its series "+key)
	}
	r.exemplars = append(r.exemplars, recordedExemplar{key, e})
	return known, nil
}

func (r *recorder) SetOptions(*storage.AppendOptions) {}

func (r *recorder) AppendHistogram(ref storage.SeriesRef, l labels.Labels, t int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	if fh != nil || h == nil {
		panic("the registry writes integer native histograms only")
	}
	if err := h.Validate(); err != nil && !value.IsStaleNaN(h.Sum) {
		r.refErrors = append(r.refErrors, fmt.Sprintf("invalid histogram %v: %v", h, err))
	}
	key, known := r.ref(ref, l)
	r.hists = append(r.hists, histSample{key, t, h.Copy()})
	return known, nil
}

func (r *recorder) AppendHistogramSTZeroSample(storage.SeriesRef, labels.Labels, int64, int64, *histogram.Histogram, *histogram.FloatHistogram) (storage.SeriesRef, error) {
	panic("the registry writes its leading zeros as samples")
}

func (r *recorder) UpdateMetadata(ref storage.SeriesRef, _ labels.Labels, _ metadata.Metadata) (storage.SeriesRef, error) {
	return ref, nil
}

func (r *recorder) AppendSTZeroSample(storage.SeriesRef, labels.Labels, int64, int64) (storage.SeriesRef, error) {
	panic("the registry writes its leading zeros as samples")
}

func (r *recorder) Commit() error   { r.commits++; return nil }
func (r *recorder) Rollback() error { r.rollbacks++; return nil }

// take returns what was appended since the last take, sorted by series
// and time, and forgets it.
func (r *recorder) take() ([]sample, []recordedExemplar) {
	s, e := r.samples, r.exemplars
	r.samples, r.exemplars = nil, nil
	sort.SliceStable(s, func(i, j int) bool {
		if s[i].series != s[j].series {
			return s[i].series < s[j].series
		}
		return s[i].t < s[j].t
	})
	return s, e
}

// series builds the String() form of a label set from name/value pairs.
func series(name string, pairs ...string) string {
	return labels.FromStrings(append([]string{labels.MetricName, name}, pairs...)...).String()
}

// diffSamples describes how got differs from want (both sorted), or "".
func diffSamples(got, want []sample) string {
	same := func(a, b sample) bool {
		if a.series != b.series || a.t != b.t {
			return false
		}
		if value.IsStaleNaN(a.v) || value.IsStaleNaN(b.v) {
			return value.IsStaleNaN(a.v) && value.IsStaleNaN(b.v)
		}
		return a.v == b.v || math.Abs(a.v-b.v) <= 1e-12*math.Abs(b.v)
	}
	if len(got) == len(want) {
		ok := true
		for i := range got {
			ok = ok && same(got[i], want[i])
		}
		if ok {
			return ""
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "got %d samples:\n", len(got))
	for _, s := range got {
		fmt.Fprintf(&b, "  %v\n", s)
	}
	fmt.Fprintf(&b, "want %d:\n", len(want))
	for _, s := range want {
		fmt.Fprintf(&b, "  %v\n", s)
	}
	return b.String()
}

func sortSamples(s []sample) []sample {
	sort.SliceStable(s, func(i, j int) bool {
		if s[i].series != s[j].series {
			return s[i].series < s[j].series
		}
		return s[i].t < s[j].t
	})
	return s
}

// nopAppender discards everything; it measures the registry alone.
type nopAppender struct{}

func (nopAppender) Append(ref storage.SeriesRef, _ labels.Labels, _ int64, _ float64) (storage.SeriesRef, error) {
	if ref == 0 {
		ref = 1
	}
	return ref, nil
}
func (nopAppender) AppendExemplar(ref storage.SeriesRef, _ labels.Labels, _ exemplar.Exemplar) (storage.SeriesRef, error) {
	return ref, nil
}
func (nopAppender) SetOptions(*storage.AppendOptions) {}
func (nopAppender) AppendHistogram(ref storage.SeriesRef, _ labels.Labels, _ int64, _ *histogram.Histogram, _ *histogram.FloatHistogram) (storage.SeriesRef, error) {
	return ref, nil
}
func (nopAppender) AppendHistogramSTZeroSample(ref storage.SeriesRef, _ labels.Labels, _, _ int64, _ *histogram.Histogram, _ *histogram.FloatHistogram) (storage.SeriesRef, error) {
	return ref, nil
}
func (nopAppender) UpdateMetadata(ref storage.SeriesRef, _ labels.Labels, _ metadata.Metadata) (storage.SeriesRef, error) {
	return ref, nil
}
func (nopAppender) AppendSTZeroSample(ref storage.SeriesRef, _ labels.Labels, _, _ int64) (storage.SeriesRef, error) {
	return ref, nil
}
func (nopAppender) Commit() error   { return nil }
func (nopAppender) Rollback() error { return nil }

var _ storage.Appender = nopAppender{}
