// Package rolling keeps, per tenant, the recent samples of the series the
// node graph and the RED table read, in memory, so that a window inside
// its horizon is answered without opening the TSDB.
//
// It holds every sample the collection wrote (one per collection and
// series, plus leading zeros), not a coarser summary: the readers compute
// Prometheus' extrapolated rate(), whose figures depend on the first and
// last sample of the window and on how many there are, and the node graph
// must show what a PromQL panel over the TSDB shows. What makes it small
// and fast is the shape of the data: all series of a collection share its
// timestamp, so timestamps are kept once per tenant (the grid) and a series
// keeps one presence bit per grid point and its values; the values are
// stored reset-corrected (monotonic, so mostly small integer offsets from a
// base), so that a window's increase is two lookups, not a walk.
//
// Data flows one way: the collection writes through Appender (a tee in
// front of the TSDB's appender), Rebuild refills it from the TSDB when a
// tenant opens, and readers only read.
package rolling

import (
	"math"
	"math/bits"
	"sort"
	"sync"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/spangraph/spangraph/pkg/budget"
)

// Metrics are the series a Store keeps: what the node graph and the RED
// table read. Everything else the collection writes passes through.
var Metrics = []string{
	"traces_service_graph_request_total",
	"traces_service_graph_request_failed_total",
	"traces_service_graph_request_server_seconds_bucket",
	"traces_service_graph_request_server_seconds_sum",
	"traces_service_graph_request_server_seconds_count",
	"traces_service_graph_request_client_seconds_bucket",
	"traces_service_graph_request_client_seconds_sum",
	"traces_service_graph_request_client_seconds_count",
	"traces_spanmetrics_calls_total",
	"traces_spanmetrics_latency_bucket",
}

// segLen is the grid points of one segment: one presence word.
const segLen = 64

// Bytes charged to the pool. segmentBytes is a segment's fixed part
// (presence, base, width, slice header); an open segment is charged as if
// full of raw values, a sealed one for its encoded values; seriesBytes is
// a series' own struct, its label set's share and its index entries.
const (
	segmentBytes  = 48
	openBytes     = segLen * 8
	seriesBytes   = 256
	offGridBytes  = 24
	resetBytes    = 16
	maxGridPoints = 1 << 40
)

// Store is one tenant's rolling window. Its methods are safe for
// concurrent use: one collection writes at a time, readers share.
type Store struct {
	horizon int64 // ms
	pool    *budget.Pool
	keep    map[string]bool

	mu sync.RWMutex
	// grid holds the timestamps of grid points lo, lo+1, …; lo is a
	// multiple of segLen.
	grid []int64
	lo   int64
	// from: every kept sample with a timestamp after it is held.
	from    int64
	byHash  map[uint64][]*series
	byName  map[string]*nameIndex
	held    int64 // bytes taken from pool
	refused int64 // samples the pool had no room for
}

type nameIndex struct {
	all  []*series
	byLE map[string][]*series
}

// New returns an empty store keeping horizon (ms) of samples, charging
// its memory to pool (nil: no bound). It holds nothing until from: call
// Rebuild, or SetFrom for a tenant without history.
func New(horizon int64, pool *budget.Pool) *Store {
	keep := map[string]bool{}
	for _, m := range Metrics {
		keep[m] = true
	}
	return &Store{
		horizon: horizon,
		pool:    pool,
		keep:    keep,
		from:    math.MaxInt64,
		byHash:  map[uint64][]*series{},
		byName:  map[string]*nameIndex{},
	}
}

// Close returns the store's memory to its pool; the store must not be
// used afterwards. A nil store is closed already.
func (st *Store) Close() {
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.pool.Give(st.held)
	st.held = 0
	st.byHash, st.byName, st.grid = nil, nil, nil
}

// HeldBytes returns the bytes charged to the pool.
func (st *Store) HeldBytes() int64 {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.held
}

// Refused returns how many samples were not kept for want of memory;
// windows that would have held them are read from the TSDB instead.
func (st *Store) Refused() int64 {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.refused
}

func (st *Store) take(n int64) bool {
	if !st.pool.Take(n) {
		return false
	}
	st.held += n
	return true
}

func (st *Store) give(n int64) {
	st.held -= n
	st.pool.Give(n)
}

// series is one kept series.
type series struct {
	labels labels.Labels
	hash   uint64
	// segs[i] covers grid points (firstSeg+i)*segLen onwards.
	firstSeg int64
	segs     []segment
	// open holds the values of the last segment until it is sealed.
	open []float64
	// off holds the samples not on the grid (leading zeros), in time
	// order.
	off []offSample
	// resets: from t on, values are raised by r (the values before each
	// counter reset), in time order.
	resets []reset
	// The newest sample.
	lastT    int64
	lastV    float64
	has      bool
	refusing bool // the newest sample found no room
}

type offSample struct {
	t    int64
	v, c float64
}

type reset struct {
	t int64
	r float64
}

// segment holds the present grid points of segLen and their corrected
// values: base plus an unsigned offset of width bytes each, or raw
// float64 bits when width is 8.
type segment struct {
	present uint64
	base    float64
	width   uint8
	sealed  bool
	data    []byte
}

func (sg *segment) cost() int64 {
	if !sg.sealed {
		return segmentBytes + openBytes
	}
	return segmentBytes + int64(cap(sg.data))
}

// correction is r at t: what a value at t was raised by.
func (s *series) correction(t int64) float64 {
	i := sort.Search(len(s.resets), func(i int) bool { return s.resets[i].t > t })
	if i == 0 {
		return 0
	}
	return s.resets[i-1].r
}

// corrected returns v raised past earlier resets, recording a reset when
// v is below the newest sample, as rate() reads one.
func (st *Store) corrected(s *series, t int64, v float64) (float64, bool) {
	r := 0.0
	if n := len(s.resets); n > 0 {
		r = s.resets[n-1].r
	}
	if s.has && v < s.lastV {
		if !st.take(resetBytes) {
			return 0, false
		}
		r += s.lastV
		s.resets = append(s.resets, reset{t, r})
	}
	return v + r, true
}

// addGrid adds the sample (t, v) at grid point g.
func (st *Store) addGrid(s *series, g, t int64, v float64) bool {
	j := g / segLen
	if len(s.segs) == 0 {
		s.firstSeg = j
	}
	last := s.firstSeg + int64(len(s.segs)) - 1
	if j > last {
		// New segments: the open one is sealed, any between stay empty.
		need := (j - last) * segmentBytes
		need += openBytes
		if !st.take(need) {
			return false
		}
		if len(s.segs) > 0 {
			st.seal(s)
		}
		for k := last + 1; k < j; k++ {
			s.segs = append(s.segs, segment{sealed: true})
		}
		s.segs = append(s.segs, segment{})
		s.open = s.open[:0]
	}
	c, ok := st.corrected(s, t, v)
	if !ok {
		return false
	}
	sg := &s.segs[len(s.segs)-1]
	sg.present |= 1 << uint(g%segLen)
	s.open = append(s.open, c)
	s.lastT, s.lastV, s.has = t, v, true
	return true
}

// addOff adds the sample (t, v) off the grid.
func (st *Store) addOff(s *series, t int64, v float64) bool {
	if !st.take(offGridBytes) {
		return false
	}
	c, ok := st.corrected(s, t, v)
	if !ok {
		st.give(offGridBytes)
		return false
	}
	s.off = append(s.off, offSample{t, v, c})
	s.lastT, s.lastV, s.has = t, v, true
	return true
}

// seal encodes the open segment: offsets from its first value in the
// fewest bytes that hold them exactly, else raw values.
func (st *Store) seal(s *series) {
	sg := &s.segs[len(s.segs)-1]
	vals := s.open
	before := sg.cost()
	sg.sealed = true
	if len(vals) == 0 {
		sg.data = nil
		st.give(before - sg.cost())
		return
	}
	base := vals[0]
	var maxOff uint64
	exact := true
	for _, c := range vals {
		d := c - base
		if d < 0 || d >= 1<<32 || d != math.Trunc(d) || base+float64(uint64(d)) != c {
			exact = false
			break
		}
		maxOff = max(maxOff, uint64(d))
	}
	sg.base = base
	switch {
	case !exact:
		sg.width = 8
	case maxOff == 0:
		sg.width = 0
	case maxOff < 1<<8:
		sg.width = 1
	case maxOff < 1<<16:
		sg.width = 2
	default:
		sg.width = 4
	}
	w := int(sg.width)
	sg.data = make([]byte, w*len(vals))
	for i, c := range vals {
		var x uint64
		if w == 8 {
			x = math.Float64bits(c)
		} else {
			x = uint64(c - base)
		}
		for b := 0; b < w; b++ {
			sg.data[i*w+b] = byte(x >> (8 * b))
		}
	}
	st.give(before - sg.cost())
}

// value returns the corrected value at rank r of segment i.
func (s *series) value(i, r int) float64 {
	if i == len(s.segs)-1 && !s.segs[i].sealed {
		return s.open[r]
	}
	sg := &s.segs[i]
	w := int(sg.width)
	if w == 0 {
		return sg.base
	}
	var x uint64
	for b := 0; b < w; b++ {
		x |= uint64(sg.data[r*w+b]) << (8 * b)
	}
	if w == 8 {
		return math.Float64frombits(x)
	}
	return sg.base + float64(x)
}

// gridRange returns the present grid points of s in [ga, gb]: the first
// and last, and how many, with the corrected values of both ends.
func (s *series) gridRange(ga, gb int64) (first, last int64, n int, cFirst, cLast float64) {
	first, last = -1, -1
	if len(s.segs) == 0 {
		return
	}
	lo := s.firstSeg * segLen
	hi := (s.firstSeg+int64(len(s.segs)))*segLen - 1
	ga, gb = max(ga, lo), min(gb, hi)
	if ga > gb {
		return
	}
	ia, ib := int((ga/segLen)-s.firstSeg), int((gb/segLen)-s.firstSeg)
	for i := ia; i <= ib; i++ {
		w := s.segs[i].present
		if i == ia {
			w &^= (uint64(1) << uint(ga%segLen)) - 1
		}
		if i == ib && gb%segLen != segLen-1 {
			w &= (uint64(1) << uint(gb%segLen+1)) - 1
		}
		if w == 0 {
			continue
		}
		if first < 0 {
			b := bits.TrailingZeros64(w)
			first = (s.firstSeg+int64(i))*segLen + int64(b)
			cFirst = s.value(i, bits.OnesCount64(s.segs[i].present&((uint64(1)<<uint(b))-1)))
		}
		b := 63 - bits.LeadingZeros64(w)
		last = (s.firstSeg+int64(i))*segLen + int64(b)
		cLast = s.value(i, bits.OnesCount64(s.segs[i].present&((uint64(1)<<uint(b))-1)))
		n += bits.OnesCount64(w)
	}
	return
}

// trim drops what lies before the grid's first point and reports whether
// the series holds nothing any more.
func (st *Store) trim(s *series) bool {
	firstSeg := st.lo / segLen
	drop := 0
	for drop < len(s.segs) && s.firstSeg+int64(drop) < firstSeg {
		drop++
	}
	if drop > 0 {
		if drop == len(s.segs) && !s.segs[drop-1].sealed {
			s.open = nil
		}
		for i := 0; i < drop; i++ {
			st.give(s.segs[i].cost())
		}
		s.segs = append([]segment(nil), s.segs[drop:]...)
		s.firstSeg += int64(drop)
	}
	k := 0
	for k < len(s.off) && s.off[k].t <= st.from {
		k++
	}
	if k > 0 {
		st.give(int64(k) * offGridBytes)
		s.off = append([]offSample(nil), s.off[k:]...)
	}
	// Resets before from are folded into the newest of them, which still
	// gives the correction of the points after it.
	k = 0
	for k+1 < len(s.resets) && s.resets[k+1].t <= st.from {
		k++
	}
	if k > 0 {
		st.give(int64(k) * resetBytes)
		s.resets = append([]reset(nil), s.resets[k:]...)
	}
	return len(s.segs) == 0 && len(s.off) == 0
}

// Span is what rate() reads of one series over a window: its first and
// last sample, how many there are, and the increase between them with
// counter resets corrected, as Prometheus counts it.
type Span struct {
	FirstT, LastT    int64
	FirstV, Increase float64
	N                int
}

// span returns s's samples in (mint, maxt], grid points ga..gb.
func (s *series) span(mint, maxt, ga, gb int64, grid []int64, lo int64) (Span, bool) {
	var sp Span
	gf, gl, n, cf, cl := s.gridRange(ga, gb)
	var firstC, lastC float64
	if n > 0 {
		sp.FirstT, sp.LastT, sp.N = grid[gf-lo], grid[gl-lo], n
		firstC, lastC = cf, cl
		sp.FirstV = cf - s.correction(sp.FirstT)
	}
	for _, o := range s.off {
		if o.t <= mint || o.t > maxt {
			continue
		}
		if sp.N == 0 || o.t < sp.FirstT {
			sp.FirstT, sp.FirstV, firstC = o.t, o.v, o.c
		}
		if sp.N == 0 || o.t > sp.LastT {
			sp.LastT, lastC = o.t, o.c
		}
		sp.N++
	}
	if sp.N == 0 {
		return Span{}, false
	}
	sp.Increase = lastC - firstC
	return sp, true
}

// isStale reports a staleness marker, which rate() skips.
func isStale(v float64) bool { return value.IsStaleNaN(v) }
