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
// stored reset-corrected (monotonic, so mostly small integer rises from
// one to the next), so that a window's increase is its two ends.
//
// Data flows one way: the collection writes through Appender (a tee in
// front of the TSDB's appender), Rebuild fills it from the TSDB when a
// tenant opens (in the background: collections meanwhile wait in a
// backlog, and reads go to the TSDB), and readers only read.
package rolling

import (
	"encoding/binary"
	"math"
	"math/bits"
	"sort"
	"sync"
	"sync/atomic"

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
// (presence, first and last value, width, slice header), to which the
// capacity of its packed values is added as it grows, growStep values at
// a time; seriesBytes is a series' own struct, its label set's share,
// its index entries and, in memoBytes, what the readers derive from its
// labels (Series.Memo).
const (
	segmentBytes  = 56
	growStep      = 16
	memoBytes     = 48
	seriesBytes   = 256 + memoBytes
	offGridBytes  = 24
	backlogBytes  = 32 // a sample waiting for Rebuild
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
	// lost is the newest refused sample's time.
	lost int64
	// filled says Rebuild has run; until then collections wait in
	// backlog (charged to the pool), in commit order.
	filled  bool
	backlog []collection
	// stop cancels a background Rebuild, and done is closed when it ends.
	stop func()
	done chan struct{}
}

// collection is the kept samples of one commit, at the collection time
// ts.
type collection struct {
	ts      int64
	samples []pendingSample
}

type nameIndex struct {
	all  []*series
	byLE map[string][]*series
}

// New returns an empty store keeping horizon (ms) of samples, charging
// its memory to pool (nil: no bound). It answers no window until Rebuild
// (or RebuildInBackground) has filled it, from an empty TSDB for a new
// tenant.
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
		lost:    math.MinInt64,
		byHash:  map[uint64][]*series{},
		byName:  map[string]*nameIndex{},
	}
}

// Close stops a background Rebuild and waits for it, so that the TSDB it
// reads can be closed next, and returns the store's memory to its pool;
// the store must not be used afterwards. A nil store is closed already.
func (st *Store) Close() {
	if st == nil {
		return
	}
	st.mu.Lock()
	stop, done := st.stop, st.done
	st.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.pool.Give(st.held)
	st.held = 0
	st.byHash, st.byName, st.grid, st.backlog = nil, nil, nil, nil
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
	// memo is what the readers derived from labels (Series.Memo), once
	// memoSet.
	memo    [len(Memo{})]atomic.Uint64
	memoSet atomic.Bool
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
// values, packed as they arrive: the first value, then the rise from
// each value to the next as an unsigned integer of width bytes (0 when
// all are equal), or, when a rise is not such an integer, every value as
// raw float64 bits (width 8). Counters of spans rise by whole numbers,
// mostly under 256 a collection, so a sample takes a byte or two. The
// newest value is kept too, and the sum of the first markRank rises
// (mark, in what was padding), so that a value is read by summing at most
// markRank/2 rises from the nearest of the first value, the mark and the
// newest.
type segment struct {
	present     uint64
	first, last float64
	width       uint8
	marked      bool
	mark        uint32
	data        []byte
}

// markRank is the rank whose value the mark holds: the middle of a
// segment.
const markRank = segLen / 2

func (sg *segment) cost() int64 { return segmentBytes + int64(cap(sg.data)) }

// n is the number of values held.
func (sg *segment) n() int { return bits.OnesCount64(sg.present) }

// rise returns the k-th rise (between values k and k+1) of a packed
// segment.
func (sg *segment) rise(k int) uint64 {
	w := int(sg.width)
	var x uint64
	for b := 0; b < w; b++ {
		x |= uint64(sg.data[k*w+b]) << (8 * b)
	}
	return x
}

// value returns the value of rank r.
func (sg *segment) value(r int) float64 {
	n := sg.n()
	switch {
	case sg.width == 8:
		return math.Float64frombits(binary.LittleEndian.Uint64(sg.data[8*r:]))
	case r == 0:
		return sg.first
	case r == n-1:
		return sg.last
	case sg.width == 0:
		return sg.first
	}
	// The rises are whole numbers under 2^32 and every value was checked
	// to be the first plus the integer sum of the rises before it, when it
	// was packed. So each value is first + (an integer sum) and last -
	// (an integer sum) exactly: the sums are exact in float64 (under
	// 2^38), and a float64 operation whose exact result is representable
	// returns it. Summing from the nearest end or the mark reads the same
	// value.
	fromFirst, fromLast, fromMark := r, n-1-r, n
	if sg.marked {
		fromMark = r - markRank
		if fromMark < 0 {
			fromMark = -fromMark
		}
	}
	switch {
	case fromMark < fromFirst && fromMark < fromLast && r >= markRank:
		return sg.first + float64(uint64(sg.mark)+sg.rises(markRank, r))
	case fromMark < fromFirst && fromMark < fromLast:
		return sg.first + float64(uint64(sg.mark)-sg.rises(r, markRank))
	case fromLast < fromFirst:
		return sg.last - float64(sg.rises(r, n-1))
	}
	return sg.first + float64(sg.rises(0, r))
}

// rises returns the sum of the rises from value a to value b (a <= b) of
// a packed segment.
func (sg *segment) rises(a, b int) uint64 {
	var sum uint64
	switch sg.width {
	case 1:
		for _, x := range sg.data[a:b] {
			sum += uint64(x)
		}
	default:
		for k := a; k < b; k++ {
			sum += sg.rise(k)
		}
	}
	return sum
}

// widthFor returns the bytes a rise from prev to c takes packed, or 8
// when it is not a whole number under 2^32 that adds back exactly.
func widthFor(prev, c float64) uint8 {
	d := c - prev
	switch {
	case d < 0 || d >= 1<<32 || d != math.Trunc(d) || prev+d != c:
		return 8
	case d == 0:
		return 0
	case d < 1<<8:
		return 1
	case d < 1<<16:
		return 2
	}
	return 4
}

// packed returns the segment's data with value c appended, at width w
// (at least the segment's), in a slice of capacity grown by growStep
// values when full; the caller charges any capacity added.
func (sg *segment) packed(c float64, w uint8) []byte {
	n := sg.n()
	data := sg.data
	if w != sg.width {
		// Repack what is held at the new width.
		vals := make([]float64, n)
		for r := range vals {
			vals[r] = sg.value(r)
		}
		held := (n - 1) * int(w)
		if w == 8 {
			held = n * 8
		}
		data = make([]byte, 0, grown(0, held, w))
		if w == 8 {
			for _, v := range vals {
				data = binary.LittleEndian.AppendUint64(data, math.Float64bits(v))
			}
		} else {
			for r := 1; r < n; r++ {
				data = appendRise(data, uint64(vals[r]-vals[r-1]), w)
			}
		}
	}
	var need int
	switch {
	case w == 8:
		need = 8
	case n > 0:
		need = int(w)
	}
	if len(data)+need > cap(data) {
		grownData := make([]byte, len(data), grown(cap(data), len(data)+need, w))
		copy(grownData, data)
		data = grownData
	}
	switch {
	case w == 8:
		data = binary.LittleEndian.AppendUint64(data, math.Float64bits(c))
	case n > 0:
		data = appendRise(data, uint64(c-sg.last), w)
	}
	return data
}

// grown returns a capacity of at least need bytes, from have, in steps
// of growStep values of width w, never past a full segment.
func grown(have, need int, w uint8) int {
	if w == 0 {
		return 0
	}
	step := growStep * int(w)
	c := max(have, step)
	for c < need {
		c += step
	}
	return min(c, segLen*int(w))
}

func appendRise(data []byte, x uint64, w uint8) []byte {
	for b := 0; b < int(w); b++ {
		data = append(data, byte(x>>(8*b)))
	}
	return data
}

// correction is r at t: what a value at t was raised by.
func (s *series) correction(t int64) float64 {
	i := sort.Search(len(s.resets), func(i int) bool { return s.resets[i].t > t })
	if i == 0 {
		return 0
	}
	return s.resets[i-1].r
}

// corrected returns v raised by r, the correction past earlier resets,
// and whether v is itself a reset (below the newest sample, as rate()
// reads one), which adds the newest value to r from then on.
func (s *series) corrected(v float64) (c, r float64, isReset bool) {
	if n := len(s.resets); n > 0 {
		r = s.resets[n-1].r
	}
	if s.has && v < s.lastV {
		r += s.lastV
		isReset = true
	}
	return v + r, r, isReset
}

// keep notes (t, v) as the newest sample, and r from t on when it is a
// reset.
func (s *series) keep(t int64, v, r float64, isReset bool) {
	if isReset {
		s.resets = append(s.resets, reset{t, r})
	}
	s.lastT, s.lastV, s.has = t, v, true
}

// addGrid adds the sample (t, v) at grid point g; nothing changes when
// the pool has no room for it.
func (st *Store) addGrid(s *series, g, t int64, v float64) bool {
	c, r, isReset := s.corrected(v)
	j := g / segLen
	last := s.firstSeg + int64(len(s.segs)) - 1
	fresh := len(s.segs) == 0 || j > last
	need := int64(0)
	if fresh {
		// New segments: any between stay empty.
		need = segmentBytes
		if len(s.segs) > 0 {
			need += (j - last - 1) * segmentBytes
		}
	}
	if isReset {
		need += resetBytes
	}
	var sg segment
	if !fresh {
		sg = s.segs[len(s.segs)-1]
	}
	w := sg.width
	if sg.present != 0 && w != 8 {
		w = max(w, widthFor(sg.last, c))
	}
	data := sg.packed(c, w)
	need += int64(cap(data) - cap(sg.data))
	if !st.take(need) {
		return false
	}
	if len(s.segs) == 0 {
		s.firstSeg = j
	} else if j > last {
		st.shrink(&s.segs[len(s.segs)-1])
		for k := last + 1; k < j; k++ {
			s.segs = append(s.segs, segment{})
		}
	}
	if sg.present == 0 {
		sg.first = c
	}
	if sg.n() == markRank && w != 8 && c-sg.first <= math.MaxUint32 {
		// c is the value of rank markRank.
		sg.marked, sg.mark = true, uint32(c-sg.first)
	}
	sg.present |= 1 << uint(g%segLen)
	sg.last, sg.width, sg.data = c, w, data
	if fresh {
		s.segs = append(s.segs, sg)
	} else {
		s.segs[len(s.segs)-1] = sg
	}
	s.keep(t, v, r, isReset)
	return true
}

// shrink gives back the capacity a full segment no longer needs.
func (st *Store) shrink(sg *segment) {
	if len(sg.data) == cap(sg.data) {
		return
	}
	before := sg.cost()
	if len(sg.data) == 0 {
		sg.data = nil
	} else {
		sg.data = append([]byte(nil), sg.data...)
	}
	st.give(before - sg.cost())
}

// addOff adds the sample (t, v) off the grid.
func (st *Store) addOff(s *series, t int64, v float64) bool {
	c, r, isReset := s.corrected(v)
	need := int64(offGridBytes)
	if isReset {
		need += resetBytes
	}
	if !st.take(need) {
		return false
	}
	s.off = append(s.off, offSample{t, v, c})
	s.keep(t, v, r, isReset)
	return true
}

// gridRange returns the present grid points of s in [ga, gb]: the first
// and last, and how many, with the corrected values of both ends. It
// counts presence words and decodes only the two ends.
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
	word := func(i int) uint64 {
		w := s.segs[i].present
		if i == ia {
			w &^= (uint64(1) << uint(ga%segLen)) - 1
		}
		if i == ib && gb%segLen != segLen-1 {
			w &= (uint64(1) << uint(gb%segLen+1)) - 1
		}
		return w
	}
	fi, li := -1, -1
	for i := ia; i <= ib; i++ {
		if w := word(i); w != 0 {
			if fi < 0 {
				fi = i
			}
			li = i
			n += bits.OnesCount64(w)
		}
	}
	if n == 0 {
		return
	}
	rank := func(i, b int) int { return bits.OnesCount64(s.segs[i].present & ((uint64(1) << uint(b)) - 1)) }
	b := bits.TrailingZeros64(word(fi))
	first = (s.firstSeg+int64(fi))*segLen + int64(b)
	cFirst = s.segs[fi].value(rank(fi, b))
	b = 63 - bits.LeadingZeros64(word(li))
	last = (s.firstSeg+int64(li))*segLen + int64(b)
	cLast = s.segs[li].value(rank(li, b))
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
