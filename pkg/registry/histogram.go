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

// Histogram is a classic Prometheus histogram: _bucket{le}, _sum and _count,
// optionally with counters of other names that share its series' labels.
type Histogram struct {
	base
	bounds   []float64 // upper bounds without +Inf
	les      []string  // le label values, +Inf last
	counters []string  // names of the companion counters
	series   shards[histogramSeries]

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
	// counters holds the companion counters' values.
	counters []float64

	// labels: one per bucket, then _sum, then _count, then the
	// companion counters; refs alike.
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
//
// Each name in counters is a companion counter: a series of that name with
// the same labels, updated by the same Observe. Span metrics' calls and
// size counters share the latency histogram's labels, so one lookup per
// span serves all three instead of three.
func (r *Registry) NewHistogram(name string, labelNames []string, bounds []float64, counters ...string) *Histogram {
	les := make([]string, 0, len(bounds)+1)
	for _, b := range bounds {
		les = append(les, strconv.FormatFloat(b, 'f', -1, 64))
	}
	les = append(les, "+Inf")
	h := &Histogram{
		base:     r.newBase(name, labelNames),
		bounds:   append([]float64(nil), bounds...),
		les:      les,
		counters: append([]string(nil), counters...),
	}
	h.series.init()
	r.add(h)
	return h
}

// Observe records value (in the histogram's unit) weight times: weight is 1
// for a plain span and the span's multiplier for sampled traces. A non-nil
// traceID becomes the series' exemplar. add holds what to add to each
// companion counter, in the order NewHistogram named them.
func (h *Histogram) Observe(lv LabelValues, value, weight float64, traceID *[16]byte, tsMillis int64, add ...float64) {
	lv = h.limit(lv)
	now := h.reg.now.Load()
	sh := &h.series.s[lv.hash%shardCount]
	sh.Lock()
	s := find(sh.m, lv)
	if s == nil {
		if !h.admit(h.seriesPerSet(), h.storedPerSet()) {
			sh.Unlock()
			h.overflowMu.Lock()
			h.overflowSeries().observe(h.bounds, value, weight, traceID, tsMillis, now, add)
			h.overflowMu.Unlock()
			return
		}
		s = h.create(sh.m, lv)
	}
	s.observe(h.bounds, value, weight, traceID, tsMillis, now, add)
	sh.Unlock()
}

// seriesPerSet is how many active series one label set counts for: the
// histogram, and each companion counter as a counter of its own would.
func (h *Histogram) seriesPerSet() int64 { return 1 + int64(len(h.counters)) }

// storedPerSet is how many series one label set writes to the store:
// a bucket per bound and +Inf, _sum, _count and the companion counters.
func (h *Histogram) storedPerSet() int64 { return int64(len(h.les) + 2 + len(h.counters)) }

func (s *histogramSeries) observe(bounds []float64, value, weight float64, traceID *[16]byte, ts, now int64, add []float64) {
	i := sort.SearchFloat64s(bounds, value) // first bound >= value; len = +Inf
	s.buckets[i] += weight
	s.sum += value * weight
	s.count += weight
	for i := range min(len(add), len(s.counters)) {
		s.counters[i] += add[i]
	}
	if traceID != nil {
		s.exemplarTrace = *traceID
		s.exemplarValue = value
		s.exemplarTS = ts
		s.hasExemplar = true
	}
	s.lastUpdate.Store(now)
}

func (h *Histogram) newSeries(values []string, ls func(name string, extra ...string) labels.Labels) *histogramSeries {
	n := len(h.les) + 2 + len(h.counters)
	s := &histogramSeries{
		seriesHead: seriesHead[histogramSeries]{values: values, isNew: true},
		buckets:    make([]float64, len(h.les)),
		counters:   make([]float64, len(h.counters)),
		labels:     make([]labels.Labels, 0, n),
		refs:       make([]storage.SeriesRef, n),
	}
	for _, le := range h.les {
		s.labels = append(s.labels, ls(h.name+"_bucket", "le", le))
	}
	s.labels = append(s.labels, ls(h.name+"_sum"), ls(h.name+"_count"))
	for _, c := range h.counters {
		s.labels = append(s.labels, ls(c))
	}
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
		h.release(h.seriesPerSet(), h.storedPerSet())
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
		for i := range s.counters {
			c.append(&s.refs[nb+2+i], s.labels[nb+2+i], c.zeroTS, 0)
		}
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
	for i, v := range s.counters {
		c.append(&s.refs[nb+2+i], s.labels[nb+2+i], c.ts, v)
	}
	s.hasExemplar = false
	return true
}

func (h *Histogram) section() section {
	return section{kind: kindHistogram, name: h.name, labelNames: h.labelNames, bounds: h.bounds, counters: h.counters}
}

// The floats of a histogram series: its non-cumulative buckets (+Inf
// last), sum, count and companion counters.
func (h *Histogram) eachUpdated(since int64, f func(flags byte, values []string, floats []float64)) {
	floats := make([]float64, 0, len(h.les)+2+len(h.counters))
	emit := func(s *histogramSeries, flags byte) {
		if s.lastUpdate.Load() < since {
			return
		}
		if s.isNew {
			flags |= flagNew
		}
		floats = append(append(append(floats[:0], s.buckets...), s.sum, s.count), s.counters...)
		f(flags, s.values, floats)
	}
	each(&h.series, func(s *histogramSeries) { emit(s, 0) })
	h.overflowMu.Lock()
	defer h.overflowMu.Unlock()
	if h.overflow != nil {
		emit(h.overflow, flagOverflow)
	}
}

func (h *Histogram) restore(flags byte, values []string, floats []float64) bool {
	now := h.reg.now.Load()
	nb := len(h.les)
	set := func(s *histogramSeries) {
		copy(s.buckets, floats[:nb])
		s.sum, s.count = floats[nb], floats[nb+1]
		copy(s.counters, floats[nb+2:])
		s.isNew = flags&flagNew != 0
		s.lastUpdate.Store(now)
	}
	if flags&flagOverflow != 0 {
		h.overflowMu.Lock()
		set(h.overflowSeries())
		h.overflowMu.Unlock()
		return true
	}
	return restoreInto(&h.series, &h.base, values, h.seriesPerSet(), h.storedPerSet(), h.create, set)
}
