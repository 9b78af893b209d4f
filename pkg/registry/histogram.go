package registry

import (
	"encoding/hex"
	"sort"
	"strconv"
	"sync"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// Histogram is a classic Prometheus histogram: _bucket{le}, _sum and _count.
type Histogram struct {
	base
	bounds []float64 // upper bounds without +Inf
	les    []string  // le label values, +Inf last
	series shards[histogramSeries]

	overflowMu sync.Mutex
	overflow   *histogramSeries
}

type histogramSeries struct {
	seriesHead[histogramSeries]
	// buckets holds non-cumulative counts, +Inf last; collection
	// accumulates them.
	buckets []float64
	sum     float64
	count   float64

	// labels: one per bucket, then _sum, then _count; refs alike.
	labels []labels.Labels
	refs   []storage.SeriesRef

	// The latest exemplar since the last collection.
	exemplarTrace [16]byte
	exemplarValue float64
	exemplarTS    int64
	hasExemplar   bool
}

// NewHistogram registers a histogram with the given label names and bucket
// upper bounds (ascending, without +Inf).
func (r *Registry) NewHistogram(name string, labelNames []string, bounds []float64) *Histogram {
	les := make([]string, 0, len(bounds)+1)
	for _, b := range bounds {
		les = append(les, strconv.FormatFloat(b, 'f', -1, 64))
	}
	les = append(les, "+Inf")
	h := &Histogram{
		base:   r.newBase(name, labelNames),
		bounds: append([]float64(nil), bounds...),
		les:    les,
	}
	h.series.init()
	r.add(h)
	return h
}

// Observe records value (in the histogram's unit) weight times: weight is 1
// for a plain span and the span's multiplier for sampled traces. A non-nil
// traceID becomes the series' exemplar.
func (h *Histogram) Observe(lv LabelValues, value, weight float64, traceID *[16]byte, tsMillis int64) {
	lv = h.limit(lv)
	now := h.reg.now.Load()
	sh := &h.series.s[lv.hash%shardCount]
	sh.Lock()
	s := find(sh.m, lv)
	if s == nil {
		if !h.admit() {
			sh.Unlock()
			h.overflowMu.Lock()
			h.overflowSeries().observe(h.bounds, value, weight, traceID, tsMillis, now)
			h.overflowMu.Unlock()
			return
		}
		s = h.create(sh.m, lv)
	}
	s.observe(h.bounds, value, weight, traceID, tsMillis, now)
	sh.Unlock()
}

func (s *histogramSeries) observe(bounds []float64, value, weight float64, traceID *[16]byte, ts, now int64) {
	i := sort.SearchFloat64s(bounds, value) // first bound >= value; len = +Inf
	s.buckets[i] += weight
	s.sum += value * weight
	s.count += weight
	if traceID != nil {
		s.exemplarTrace = *traceID
		s.exemplarValue = value
		s.exemplarTS = ts
		s.hasExemplar = true
	}
	s.lastUpdate.Store(now)
}

func (h *Histogram) newSeries(values []string, ls func(name string, extra ...string) labels.Labels) *histogramSeries {
	n := len(h.les)
	s := &histogramSeries{
		seriesHead: seriesHead[histogramSeries]{values: values, isNew: true},
		buckets:    make([]float64, n),
		labels:     make([]labels.Labels, 0, n+2),
		refs:       make([]storage.SeriesRef, n+2),
	}
	for _, le := range h.les {
		s.labels = append(s.labels, ls(h.name+"_bucket", "le", le))
	}
	s.labels = append(s.labels, ls(h.name+"_sum"), ls(h.name+"_count"))
	return s
}

func (h *Histogram) create(mp map[uint64]*histogramSeries, lv LabelValues) *histogramSeries {
	values := h.ownValues(lv.values)
	s := h.newSeries(values, func(name string, extra ...string) labels.Labels {
		return h.labelsFor(name, values, extra...)
	})
	insert(mp, lv.hash, s)
	return s
}

func (h *Histogram) overflowSeries() *histogramSeries {
	if h.overflow == nil {
		h.overflow = h.newSeries(nil, h.overflowLabels)
	}
	return h.overflow
}

func (h *Histogram) collect(c *collector) {
	sweep(&h.series, func(s *histogramSeries) bool { return h.collectOne(c, s) })
	h.overflowMu.Lock()
	if h.overflow != nil {
		h.collectOne(c, h.overflow)
	}
	h.overflowMu.Unlock()
}

func (h *Histogram) collectOne(c *collector, s *histogramSeries) bool {
	nb := len(s.buckets)
	if s.lastUpdate.Load() < c.staleBefore && s.values != nil {
		for i := range s.labels {
			c.append(&s.refs[i], s.labels[i], c.ts, staleNaN)
		}
		h.reg.active.Add(-1)
		c.removed++
		return false
	}
	if s.isNew {
		// Leading zeros for _bucket and _count so that rate() sees the
		// first observations; _sum needs none for ratios of increases.
		for i := 0; i < nb; i++ {
			c.append(&s.refs[i], s.labels[i], c.zeroTS, 0)
		}
		c.append(&s.refs[nb+1], s.labels[nb+1], c.zeroTS, 0)
		s.isNew = false
	}
	cum := 0.0
	exemplarBucket := -1
	if s.hasExemplar {
		exemplarBucket = sort.SearchFloat64s(h.bounds, s.exemplarValue)
	}
	for i := 0; i < nb; i++ {
		cum += s.buckets[i]
		c.append(&s.refs[i], s.labels[i], c.ts, cum)
		if i == exemplarBucket && c.err == nil {
			_, _ = c.app.AppendExemplar(s.refs[i], s.labels[i], exemplar.Exemplar{
				Labels: labels.FromStrings("trace_id", hex.EncodeToString(s.exemplarTrace[:])),
				Value:  s.exemplarValue,
				Ts:     s.exemplarTS,
				HasTs:  true,
			})
		}
	}
	c.append(&s.refs[nb], s.labels[nb], c.ts, s.sum)
	c.append(&s.refs[nb+1], s.labels[nb+1], c.ts, s.count)
	s.hasExemplar = false
	return true
}
