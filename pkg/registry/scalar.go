package registry

import (
	"sync"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// Counter is a monotonically increasing metric.
type Counter struct{ scalar }

// Gauge is a metric that is set rather than added to.
type Gauge struct{ scalar }

type scalarSeries struct {
	seriesHead[scalarSeries]
	labels labels.Labels
	ref    storage.SeriesRef
	value  float64
}

type scalar struct {
	base
	isCounter bool
	series    shards[scalarSeries]

	overflowMu sync.Mutex
	overflow   *scalarSeries
}

// NewCounter registers a counter with the given label names.
func (r *Registry) NewCounter(name string, labelNames []string) *Counter {
	c := &Counter{scalar{base: r.newBase(name, labelNames), isCounter: true}}
	c.series.init()
	r.add(c)
	return c
}

// NewGauge registers a gauge with the given label names.
func (r *Registry) NewGauge(name string, labelNames []string) *Gauge {
	g := &Gauge{scalar{base: r.newBase(name, labelNames)}}
	g.series.init()
	r.add(g)
	return g
}

// NewInfoGauge registers a gauge whose series have label sets of their own:
// the values given to Set alternate label names and values, as for
// traces_target_info, whose labels are a resource's attributes.
func (r *Registry) NewInfoGauge(name string) *Gauge {
	g := &Gauge{scalar{base: r.newBase(name, nil)}}
	g.pairs = true
	g.series.init()
	r.add(g)
	return g
}

// Add adds v to the series of lv.
func (c *Counter) Add(lv LabelValues, v float64) { c.update(lv, v, true) }

// Set sets the series of lv to v.
func (g *Gauge) Set(lv LabelValues, v float64) { g.update(lv, v, false) }

func (s *scalarSeries) update(v float64, add bool, now int64) {
	if add {
		s.value += v
	} else {
		s.value = v
	}
	s.lastUpdate.Store(now)
}

func (m *scalar) update(lv LabelValues, v float64, add bool) {
	lv = m.limit(lv)
	now := m.reg.now.Load()
	sh := &m.series.s[lv.hash%shardCount]
	sh.Lock()
	s := find(sh.m, lv)
	if s == nil {
		if !m.admit(1, 1) {
			sh.Unlock()
			m.overflowMu.Lock()
			m.overflowSeries().update(v, add, now)
			m.overflowMu.Unlock()
			return
		}
		s = m.create(sh.m, lv)
	}
	s.update(v, add, now)
	sh.Unlock()
}

// create adds a series for lv under the shard lock of lv.
func (m *scalar) create(mp map[uint64]*scalarSeries, lv LabelValues) *scalarSeries {
	values := m.ownValues(lv.values)
	s := &scalarSeries{
		seriesHead: seriesHead[scalarSeries]{values: values, isNew: true},
		labels:     m.labelsFor(m.name, values),
	}
	insert(mp, lv.hash, s)
	return s
}

// overflowSeries is shared by every shard, so it has its own lock,
// overflowMu, which the caller holds.
func (m *scalar) overflowSeries() *scalarSeries {
	if m.overflow == nil {
		m.overflow = &scalarSeries{
			seriesHead: seriesHead[scalarSeries]{isNew: true},
			labels:     m.overflowLabels(m.name),
		}
	}
	return m.overflow
}

func (m *scalar) collect(c *collector) {
	sweep(&m.series, func(s *scalarSeries) bool { return m.collectOne(c, s) })
	m.overflowMu.Lock()
	if m.overflow != nil {
		m.collectOne(c, m.overflow)
	}
	m.overflowMu.Unlock()
}

// collectOne appends s and reports whether it stays active.
func (m *scalar) collectOne(c *collector, s *scalarSeries) bool {
	if s.lastUpdate.Load() < c.staleBefore && s.values != nil {
		c.append(&s.ref, s.labels, c.ts, staleNaN)
		m.release(1, 1)
		c.removed++
		return false
	}
	if s.isNew && m.isCounter {
		c.append(&s.ref, s.labels, c.zeroTS, 0)
	}
	s.isNew = false
	c.append(&s.ref, s.labels, c.ts, s.value)
	return true
}

func (m *scalar) section() section {
	kind := kindGauge
	switch {
	case m.isCounter:
		kind = kindCounter
	case m.pairs:
		kind = kindInfoGauge
	}
	return section{kind: kind, name: m.name, labelNames: m.labelNames}
}

func (m *scalar) eachUpdated(since int64, f func(flags byte, values []string, floats []float64, native []byte)) {
	var v [1]float64
	emit := func(s *scalarSeries, flags byte) {
		if s.lastUpdate.Load() < since {
			return
		}
		if s.isNew {
			flags |= flagNew
		}
		v[0] = s.value
		f(flags, s.values, v[:], nil)
	}
	each(&m.series, func(s *scalarSeries) { emit(s, 0) })
	m.overflowMu.Lock()
	defer m.overflowMu.Unlock()
	if m.overflow != nil {
		emit(m.overflow, flagOverflow)
	}
}

func (m *scalar) restore(flags byte, values []string, floats []float64, _ *nativeCounts) bool {
	now := m.reg.now.Load()
	set := func(s *scalarSeries) {
		s.value = floats[0]
		s.isNew = flags&flagNew != 0
		s.lastUpdate.Store(now)
	}
	if flags&flagOverflow != 0 {
		m.overflowMu.Lock()
		set(m.overflowSeries())
		m.overflowMu.Unlock()
		return true
	}
	return restoreInto(&m.series, &m.base, values, 1, 1, m.create, set)
}
