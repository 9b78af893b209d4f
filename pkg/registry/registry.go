// Package registry keeps the active series that the processors update and
// writes them, once per collection interval, into a storage.Appender.
//
// Processors hand in label values, not label sets: a series is found by a
// hash of its values in a sharded map, and its Prometheus labels are built
// only the first time it is seen. Updating an existing series therefore does
// no allocation and builds no string.
package registry

import (
	"fmt"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"

	"github.com/spangraph/spangraph/pkg/budget"
)

// Config holds the registry limits.
type Config struct {
	// StaleDuration is how long a series may go without an update before it
	// is removed (with a staleness marker).
	StaleDuration time.Duration `yaml:"stale_duration"`
	// MaxActiveSeries caps the series of one tenant; beyond it new series of
	// a metric fold into its overflow series. 0 means no cap.
	MaxActiveSeries int `yaml:"max_active_series"`
	// MaxLabelNameLength and MaxLabelValueLength truncate longer names and
	// values. 0 means no limit.
	MaxLabelNameLength  int `yaml:"max_label_name_length"`
	MaxLabelValueLength int `yaml:"max_label_value_length"`
	// ConstLabels are added to every series. In a ring the engine sets
	// __metrics_gen_instance, as Tempo's generators do, so that the series
	// of different instances never collide in a shared store.
	ConstLabels labels.Labels `yaml:"-"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		StaleDuration:       15 * time.Minute,
		MaxActiveSeries:     1_000_000,
		MaxLabelNameLength:  1024,
		MaxLabelValueLength: 2048,
	}
}

// Validate checks the config; errors name the key under prefix.
func (c *Config) Validate(prefix string) error {
	switch {
	case c.StaleDuration < time.Second:
		return fmt.Errorf("%s.stale_duration: must be at least 1s, got %s", prefix, c.StaleDuration)
	case c.MaxActiveSeries < 0:
		return fmt.Errorf("%s.max_active_series: must not be negative (0 means no limit), got %d", prefix, c.MaxActiveSeries)
	case c.MaxLabelNameLength < 0:
		return fmt.Errorf("%s.max_label_name_length: must not be negative, got %d", prefix, c.MaxLabelNameLength)
	case c.MaxLabelValueLength < 0:
		return fmt.Errorf("%s.max_label_value_length: must not be negative, got %d", prefix, c.MaxLabelValueLength)
	}
	return nil
}

// OverflowLabel marks the series that collects the updates of series that
// did not fit under MaxActiveSeries.
const OverflowLabel = "metric_overflow"

// Registry is the set of metrics of one tenant.
type Registry struct {
	cfg     Config
	metrics []metric
	mu      sync.Mutex // guards metrics

	// active counts live series over all metrics, for the cap.
	active atomic.Int64
	// overflowed counts updates that went to an overflow series.
	overflowed atomic.Int64
	// now is a coarse clock (unix ms) for staleness, set at each
	// collection, so that updates need not read the time.
	now atomic.Int64
	// checkpointSince (unix ms) is the collection before the last one:
	// a checkpoint writes the series updated since. Not the last one: an
	// update that read the clock just before a collection set it may land
	// after that collection passed its series, stamped with the old time.
	checkpointSince atomic.Int64
	// cpBuf and cpBody are the last checkpoint's buffers, reused; cpMu
	// guards them.
	cpMu          sync.Mutex
	cpBuf, cpBody []byte
	// pool is the process's memory share for series, which every
	// tenant's registry draws on; nil means no bound but the cap.
	pool *budget.Pool
	// held is what this registry took from pool, returned by Close.
	held atomic.Int64
	// zeroFloor (unix ms): leading zeros land after it; see SetZeroFloor.
	zeroFloor atomic.Int64
}

// SetZeroFloor makes leading zeros land after ms. The engine passes the
// newest sample already in the store when it opens it, so that a series
// reborn by a restart gets its zero after its last stored sample: a zero
// before it would be refused as out of order, and the reset it marks
// (100, then 0 and 10 after the restart) would read as no reset. Remote
// write passes the earliest time its WAL reader ships, which skips older
// samples.
func (r *Registry) SetZeroFloor(ms int64) {
	for {
		have := r.zeroFloor.Load()
		if ms <= have || r.zeroFloor.CompareAndSwap(have, ms) {
			return
		}
	}
}

// StoredSeriesBytes is what one stored series costs while it is active:
// the registry's series with its label set, and the TSDB head's series,
// postings and open chunk. A default span-metrics histogram set writes 19
// stored series (15 buckets, _sum, _count and two companion counters),
// measured at 12.9 KB together in the embedded store.
const StoredSeriesBytes = 680

// UsePool makes new series take their memory from pool, shared with the
// other tenants' registries, besides max_active_series: a series that
// does not fit folds into the overflow series as one over the cap does.
// Call it before the registry's first update.
func (r *Registry) UsePool(pool *budget.Pool) { r.pool = pool }

// Close returns what the registry took from its pool; the registry must
// not be used afterwards.
func (r *Registry) Close() { r.pool.Give(r.held.Swap(0)) }

// New returns an empty registry.
func New(cfg Config) *Registry {
	if cfg.StaleDuration <= 0 {
		cfg.StaleDuration = 15 * time.Minute
	}
	r := &Registry{cfg: cfg}
	r.now.Store(time.Now().UnixMilli())
	return r
}

// ActiveSeries returns the number of live series (a histogram counts once).
func (r *Registry) ActiveSeries() int64 { return r.active.Load() }

// Overflowed returns how many updates went to overflow series so far.
func (r *Registry) Overflowed() int64 { return r.overflowed.Load() }

type metric interface {
	collect(c *collector)
}

func (r *Registry) add(m metric) {
	r.mu.Lock()
	r.metrics = append(r.metrics, m)
	r.mu.Unlock()
}

// LabelValues are the values of one series, in the order of the metric's
// label names, with their hash. An empty value drops that label.
type LabelValues struct {
	hash   uint64
	values []string
}

// seed keys the series hashes of this process; they never leave it.
var seed = maphash.MakeSeed()

// MakeLabelValues hashes values. values is read again on every update that
// uses the result, so the caller must not change it in between; the
// registry copies it when it creates a series.
//
// Each value is hashed with the runtime's AES-based string hash and the
// results are mixed in order, which is about twice as fast as streaming
// the values through xxhash; position matters, so ("a","") and ("","a")
// differ.
func MakeLabelValues(values []string) LabelValues {
	h := uint64(len(values))
	for _, v := range values {
		h = (h ^ maphash.String(seed, v)) * 0x9e3779b97f4a7c15
		h ^= h >> 32
	}
	return LabelValues{hash: h, values: values}
}

// Values returns the values (for tests and debugging).
func (lv LabelValues) Values() []string { return lv.values }

// seriesHead is what every series kind S shares: identity, lifecycle and
// the collision chain.
type seriesHead[S any] struct {
	values     []string
	lastUpdate atomic.Int64 // unix ms
	isNew      bool
	next       *S // next series with the same hash, rare
}

func (s *seriesHead[S]) link() **S { return &s.next }

func (s *seriesHead[S]) matches(values []string) bool {
	if len(s.values) != len(values) {
		return false
	}
	for i := range values {
		if s.values[i] != values[i] {
			return false
		}
	}
	return true
}

const shardCount = 64

// shards is a hash-sharded map of series, so that updates from several
// cores rarely meet on one mutex.
type shards[S any] struct {
	s [shardCount]struct {
		sync.Mutex
		m map[uint64]*S
		_ [40]byte // keep shards on separate cache lines
	}
}

func (sh *shards[S]) init() {
	for i := range sh.s {
		sh.s[i].m = make(map[uint64]*S)
	}
}

// chained is a pointer to a series kind, with its collision chain.
type chained[S any] interface {
	*S
	link() **S
	matches([]string) bool
}

// find returns the series of lv in m, or nil. It runs under the lock of
// m's shard.
func find[S any, P chained[S]](m map[uint64]*S, lv LabelValues) *S {
	s := m[lv.hash]
	for s != nil && !P(s).matches(lv.values) {
		s = *P(s).link()
	}
	return s
}

// insert adds s under hash, in front of any series it collides with.
func insert[S any, P chained[S]](m map[uint64]*S, hash uint64, s *S) {
	*P(s).link() = m[hash]
	m[hash] = s
}

// sweep calls collect on every series, shard by shard under the shard's
// lock, and forgets those for which it returns false.
func sweep[S any, P chained[S]](sh *shards[S], collect func(*S) bool) {
	for i := range sh.s {
		shard := &sh.s[i]
		shard.Lock()
		for h, s := range shard.m {
			var keep *S
			for cur := s; cur != nil; {
				next := *P(cur).link()
				if collect(cur) {
					*P(cur).link() = keep
					keep = cur
				}
				cur = next
			}
			if keep == nil {
				delete(shard.m, h)
			} else {
				shard.m[h] = keep
			}
		}
		shard.Unlock()
	}
}

// base holds what counters, gauges and histograms share.
type base struct {
	reg        *Registry
	name       string
	labelNames []string
	// pairs: values alternate label names and values (info metrics).
	pairs bool
}

func (r *Registry) newBase(name string, labelNames []string) base {
	names := make([]string, len(labelNames))
	for i, n := range labelNames {
		names[i] = truncate(n, r.cfg.MaxLabelNameLength)
	}
	return base{reg: r, name: name, labelNames: names}
}

func truncate(s string, max int) string {
	if max > 0 && len(s) > max {
		return s[:max]
	}
	return s
}

// admit reports whether n new active series, which write stored series
// to the store, fit under the cap and in the memory pool and, if so,
// counts them; if not, the update that wanted them counts as overflowed.
func (b *base) admit(n, stored int64) bool {
	if b.fits(n, stored) {
		return true
	}
	b.reg.overflowed.Add(1)
	return false
}

// fits is admit without counting a refusal.
func (b *base) fits(n, stored int64) bool {
	r := b.reg
	cost := stored * StoredSeriesBytes
	if !r.pool.Take(cost) {
		return false
	}
	max := int64(r.cfg.MaxActiveSeries)
	for {
		have := r.active.Load()
		if max > 0 && have+n > max {
			r.pool.Give(cost)
			return false
		}
		if r.active.CompareAndSwap(have, have+n) {
			r.held.Add(cost)
			return true
		}
	}
}

// release uncounts n active series that wrote stored series.
func (b *base) release(n, stored int64) {
	r := b.reg
	r.active.Add(-n)
	cost := stored * StoredSeriesBytes
	r.held.Add(-cost)
	r.pool.Give(cost)
}

// ownValues copies values for a new series (they may point into a request
// buffer) and applies the value length limit.
func (b *base) ownValues(values []string) []string {
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = strings.Clone(truncate(v, b.limitFor(i)))
	}
	return out
}

// limitFor is the length limit of values[i]: in pairs the even entries are
// label names.
func (b *base) limitFor(i int) int {
	if b.pairs && i%2 == 0 {
		return b.reg.cfg.MaxLabelNameLength
	}
	return b.reg.cfg.MaxLabelValueLength
}

// limit applies the length limits before lookup, so that values which
// differ only beyond the limit are one series (they have one label set).
// It allocates only when a value is too long, which the cheap length check
// makes rare.
func (b *base) limit(lv LabelValues) LabelValues {
	for i, v := range lv.values {
		if max := b.limitFor(i); max > 0 && len(v) > max {
			vals := make([]string, len(lv.values))
			for j, w := range lv.values {
				vals[j] = truncate(w, b.limitFor(j))
			}
			return MakeLabelValues(vals)
		}
	}
	return lv
}

// labelsFor builds the label set of a series: __name__, extra pairs and the
// non-empty values. A metric without label names takes names and values
// alternately from values.
func (b *base) labelsFor(name string, values []string, extra ...string) labels.Labels {
	sb := labels.NewScratchBuilder(len(values) + 1 + len(extra)/2 + b.reg.cfg.ConstLabels.Len())
	sb.Add(labels.MetricName, name)
	if b.pairs {
		for i := 0; i+1 < len(values); i += 2 {
			if values[i+1] != "" {
				sb.Add(values[i], values[i+1])
			}
		}
	}
	for i, v := range values {
		if v != "" && !b.pairs {
			sb.Add(b.labelNames[i], v)
		}
	}
	for i := 0; i+1 < len(extra); i += 2 {
		sb.Add(extra[i], extra[i+1])
	}
	b.reg.cfg.ConstLabels.Range(func(l labels.Label) { sb.Add(l.Name, l.Value) })
	sb.Sort()
	return sb.Labels()
}

func (b *base) overflowLabels(name string, extra ...string) labels.Labels {
	sb := labels.NewScratchBuilder(2 + len(extra)/2 + b.reg.cfg.ConstLabels.Len())
	sb.Add(labels.MetricName, name)
	sb.Add(OverflowLabel, "true")
	for i := 0; i+1 < len(extra); i += 2 {
		sb.Add(extra[i], extra[i+1])
	}
	b.reg.cfg.ConstLabels.Range(func(l labels.Label) { sb.Add(l.Name, l.Value) })
	sb.Sort()
	return sb.Labels()
}

// collector carries one collection through the metrics.
type collector struct {
	app         storage.Appender
	ts          int64 // this collection's timestamp, ms
	zeroTS      int64 // leading-zero timestamp for new series, ms, or noZero
	staleBefore int64 // series last updated before this are removed
	samples     int
	removed     int
	err         error
}

// noZero as a collection's zeroTS: new series get no leading zero.
const noZero = math.MinInt64

func (c *collector) append(ref *storage.SeriesRef, l labels.Labels, t int64, v float64) {
	if c.err != nil || t == noZero {
		return
	}
	r, err := c.app.Append(*ref, l, t, v)
	if err != nil {
		// A leading zero or staleness marker can land before a sample the
		// store already has (a series revived within a minute); that one
		// sample is expendable, the collection is not.
		if t != c.ts || math.IsNaN(v) {
			return
		}
		c.err = err
		return
	}
	*ref = r
	c.samples++
}

// appendHistogram is append for a native histogram; a stale marker is a
// histogram whose sum is the stale NaN.
func (c *collector) appendHistogram(ref *storage.SeriesRef, l labels.Labels, t int64, h *histogram.Histogram) {
	if c.err != nil || t == noZero {
		return
	}
	r, err := c.app.AppendHistogram(*ref, l, t, h, nil)
	if err != nil {
		// As append: a leading zero or a staleness marker is expendable.
		if t != c.ts || value.IsStaleNaN(h.Sum) {
			return
		}
		c.err = err
		return
	}
	*ref = r
	c.samples++
}

// CollectStats describes one collection.
type CollectStats struct {
	Samples      int
	ActiveSeries int64
	Removed      int
	Duration     time.Duration
}

// Collect appends the current value of every series at now, a leading zero
// for series new since the last collection, and a staleness marker for
// series that were not updated for StaleDuration, which it then forgets.
// The caller commits or rolls back app.
func (r *Registry) Collect(app storage.Appender, now time.Time) (CollectStats, error) {
	start := time.Now()
	ts := now.UnixMilli()
	r.checkpointSince.Store(r.now.Swap(ts))
	// Tempo's convention: the zero lands at the end of the previous
	// minute, so that downsampling never merges it with the first value;
	// but never at or before the floor. Between the floor and this
	// collection there is always room unless the clock went back, and
	// then a new series goes without its zero.
	zeroTS := now.Truncate(time.Minute).Add(-time.Second).UnixMilli()
	if floor := r.zeroFloor.Load(); zeroTS <= floor {
		zeroTS = floor + 1
	}
	if zeroTS >= ts {
		zeroTS = noZero
	}
	c := &collector{
		app:         app,
		ts:          ts,
		zeroTS:      zeroTS,
		staleBefore: now.Add(-r.cfg.StaleDuration).UnixMilli(),
	}
	r.mu.Lock()
	metrics := r.metrics
	r.mu.Unlock()
	for _, m := range metrics {
		m.collect(c)
	}
	return CollectStats{
		Samples:      c.samples,
		ActiveSeries: r.active.Load(),
		Removed:      c.removed,
		Duration:     time.Since(start),
	}, c.err
}

var staleNaN = math.Float64frombits(value.StaleNaN)
