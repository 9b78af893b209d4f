package registry

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
)

// HistogramMode selects the series a Histogram writes, as Tempo's
// generate_native_histograms does.
type HistogramMode uint8

const (
	// Classic writes _bucket{le}, _sum and _count.
	Classic HistogramMode = iota
	// Native writes one native (sparse, exponential) histogram series
	// under the histogram's own name.
	Native
	// Both writes the classic series and the native one.
	Both
)

var modeNames = [...]string{Classic: "classic", Native: "native", Both: "both"}

func (m HistogramMode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("HistogramMode(%d)", m)
}

// ParseHistogramMode reads "classic", "native" or "both"; "" is classic.
func ParseHistogramMode(s string) (HistogramMode, error) {
	if s == "" {
		return Classic, nil
	}
	for m, name := range modeNames {
		if s == name {
			return HistogramMode(m), nil
		}
	}
	return Classic, fmt.Errorf("%q is not a histogram mode: classic, native or both", s)
}

func (m HistogramMode) classic() bool { return m != Native }
func (m HistogramMode) native() bool  { return m != Classic }

// NativeOptions shape native histograms, with the meaning of client_golang's
// (and Tempo's) settings of the same names.
type NativeOptions struct {
	// BucketFactor is the largest ratio allowed between the bounds of a
	// bucket: the schema is the highest whose factor 2^(2^-schema) does
	// not exceed it (1.1 gives schema 3, a factor of 1.09).
	BucketFactor float64
	// MaxBucketNumber caps the populated buckets of a series: beyond it
	// the series halves its resolution (schema - 1) until it fits; 0 means
	// no cap.
	MaxBucketNumber uint32
	// MinResetDuration: a series that had to lower its resolution is
	// reset (its counts start again from zero, at its configured schema)
	// once this long has passed since its last reset, at a collection;
	// 0 never resets, and the resolution stays lowered.
	MinResetDuration time.Duration
}

// DefaultNativeOptions are Tempo's defaults.
func DefaultNativeOptions() NativeOptions {
	return NativeOptions{BucketFactor: 1.1, MaxBucketNumber: 100, MinResetDuration: 15 * time.Minute}
}

// Validate checks the options; errors name the key under prefix with
// Tempo's key names.
func (o *NativeOptions) Validate(prefix string) error {
	switch {
	case !(o.BucketFactor > 1) || math.IsInf(o.BucketFactor, 0):
		return fmt.Errorf("%s.native_histogram_bucket_factor: must be greater than 1, got %v", prefix, o.BucketFactor)
	case o.MinResetDuration < 0:
		return fmt.Errorf("%s.native_histogram_min_reset_duration: must not be negative, got %s", prefix, o.MinResetDuration)
	}
	return nil
}

// HistogramOptions are what NewHistogramWith takes beyond NewHistogram's
// arguments. The zero value is a classic histogram.
type HistogramOptions struct {
	Mode   HistogramMode
	Native NativeOptions
}

// The schemas of exponential native histograms.
const (
	minSchema = -4
	maxSchema = 8
)

// nativeZeroThreshold is client_golang's default zero bucket width
// (2^-128): observations at or below it count in the zero bucket.
const nativeZeroThreshold = 2.938735877055719e-39

// schemaFor is the highest schema whose bucket factor does not exceed
// factor, as client_golang picks it.
func schemaFor(factor float64) int32 {
	floor := math.Floor(math.Log2(math.Log2(factor)))
	switch {
	case floor <= -maxSchema:
		return maxSchema
	case floor >= -minSchema:
		return minSchema
	default:
		return -int32(floor)
	}
}

// fracBounds[s] (s = 1..8) holds the 2^s bucket bounds of schema s within
// one power of two, scaled into [0.5, 1): the fractions math.Frexp returns.
// They are read from Prometheus' own bucket bounds (the upper bounds of
// buckets 0..2^s-1, 1 up to just under 2, halved), so that a value on a
// bound lands in the bucket Prometheus and client_golang put it in.
var fracBounds = func() [maxSchema + 1][]float64 {
	var out [maxSchema + 1][]float64
	for s := int32(1); s <= maxSchema; s++ {
		n := 1 << s
		h := &histogram.Histogram{
			Schema:          s,
			PositiveSpans:   []histogram.Span{{Offset: 0, Length: uint32(n)}},
			PositiveBuckets: make([]int64, n),
		}
		bounds := make([]float64, 0, n)
		for it := h.PositiveBucketIterator(); it.Next(); {
			bounds = append(bounds, it.At().Upper/2)
		}
		out[s] = bounds
	}
	return out
}()

// bucketKey is the index of the bucket of v (> the zero threshold) at
// schema: bucket i holds (2^((i-1)·2^-schema), 2^(i·2^-schema)].
func bucketKey(v float64, schema int32) int32 {
	inf := math.IsInf(v, 1)
	if inf {
		v = math.MaxFloat64
	}
	frac, exp := math.Frexp(v)
	var key int
	if schema > 0 {
		bounds := fracBounds[schema]
		key = sort.SearchFloat64s(bounds, frac) + (exp-1)*len(bounds)
	} else {
		key = exp
		if frac == 0.5 {
			key--
		}
		key = (key + 1<<-schema - 1) >> -schema
	}
	if inf {
		key++
	}
	return int32(key)
}

// nativeCounts is the native part of a histogram series: dense bucket
// counts from key lo up, so that an observation is an index, not a map
// lookup; the slice grows only when an observation falls outside the range
// seen so far, so steady traffic allocates nothing.
type nativeCounts struct {
	schema    int32
	lo        int32 // key of buckets[0]
	buckets   []uint64
	populated uint32 // buckets with a count > 0
	zeroCount uint64
	count     uint64
	sum       float64
	// lastReset (unix ms) is when the counts last started from zero;
	// resetAt, when not 0, is the time from which the next collection
	// resets them.
	lastReset, resetAt int64
}

// observations is how many observations a weight stands for: like Tempo,
// which observes a sampled span's value once per started unit of its
// multiplier, ceil(weight); a native histogram counts whole observations.
func observations(weight float64) uint64 {
	switch {
	case weight <= 0 || math.IsNaN(weight):
		return 0
	case weight >= 1<<53:
		return 1 << 53
	}
	return uint64(math.Ceil(weight))
}

// observe adds v n times; now (unix ms) schedules a reset if the series has
// to lower its resolution.
func (c *nativeCounts) observe(v float64, n uint64, o *NativeOptions, now int64) {
	c.count += n
	c.sum += v * float64(n)
	switch {
	case math.IsNaN(v):
		// Counted and summed, in no bucket, as client_golang does.
		return
	case v <= nativeZeroThreshold:
		// The registry's histograms hold durations: a negative one,
		// which the processors never pass, counts as zero.
		c.zeroCount += n
		return
	}
	c.add(bucketKey(v, c.schema), n)
	if c.over(o) {
		c.limit(o, now)
	}
}

// maxDenseBuckets bounds the range of a series' dense counts (64 KB): the
// range is 2^schema buckets per doubling between the fastest and the
// slowest observation, so at the default schema 3 even 1 ns and 292 years
// (2^63 ns) span 504, at schema 6 4 032; only at schema 7 or 8 (bucket
// factors below 1.011) can a spread wider than 2^64 or 2^32 reach it,
// and the resolution is then halved as for too many populated buckets.
const maxDenseBuckets = 8192

// over reports whether the counts exceed the bucket cap or the dense
// range.
func (c *nativeCounts) over(o *NativeOptions) bool {
	return (o.MaxBucketNumber > 0 && c.populated > o.MaxBucketNumber) || len(c.buckets) > maxDenseBuckets
}

// add adds n to the bucket of key, growing the range to hold it.
func (c *nativeCounts) add(key int32, n uint64) {
	switch {
	case len(c.buckets) == 0:
		c.lo = key
		c.buckets = append(c.buckets[:0], 0)
	case key < c.lo:
		// Room below as well, so that a slowly falling minimum does not
		// copy the range on every new bucket; not beyond maxDenseBuckets,
		// which the range it needs is held to.
		need := int(c.lo-key) + len(c.buckets)
		grow := int(c.lo-key) + max(0, min(len(c.buckets)/4, maxDenseBuckets-need))
		nb := make([]uint64, grow+len(c.buckets), grow+cap(c.buckets))
		copy(nb[grow:], c.buckets)
		c.buckets, c.lo = nb, c.lo-int32(grow)
	case int(key-c.lo) >= len(c.buckets):
		need := int(key-c.lo) + 1
		if need <= cap(c.buckets) {
			c.buckets = c.buckets[:need]
		} else {
			c.buckets = append(c.buckets, make([]uint64, need-len(c.buckets))...)
		}
	}
	b := &c.buckets[key-c.lo]
	if *b == 0 {
		c.populated++
	}
	*b += n
}

// limit brings the populated buckets back under the cap (and the range
// under maxDenseBuckets) by halving the resolution, as client_golang does
// when it may not reset yet. Unlike
// client_golang, which resets at once when min_reset_duration has passed
// and so drops what was observed since the last collection, the reset is
// left to the next collection, after it has written the counts.
func (c *nativeCounts) limit(o *NativeOptions, now int64) {
	if o.MinResetDuration > 0 && c.resetAt == 0 {
		c.resetAt = max(now, c.lastReset+o.MinResetDuration.Milliseconds())
	}
	for c.over(o) && c.schema > minSchema {
		c.halve()
	}
}

// halve merges each pair of buckets: schema s-1's bucket k holds schema
// s's buckets 2k-1 and 2k.
func (c *nativeCounts) halve() {
	c.schema--
	if len(c.buckets) == 0 {
		return
	}
	newLo := (c.lo + 1) >> 1
	hi := c.lo + int32(len(c.buckets)) - 1
	// In place: bucket i moves to an index at or below i.
	c.populated = 0
	for i, n := range c.buckets {
		c.buckets[i] = 0
		if n == 0 {
			continue
		}
		j := ((c.lo+int32(i))+1)>>1 - newLo
		if c.buckets[j] == 0 {
			c.populated++
		}
		c.buckets[j] += n
	}
	c.buckets = c.buckets[:(hi+1)>>1-newLo+1]
	c.lo = newLo
}

// reset starts the counts again from zero at schema, keeping the bucket
// slice's memory.
func (c *nativeCounts) reset(schema int32, now int64) {
	clear(c.buckets)
	*c = nativeCounts{schema: schema, buckets: c.buckets[:0], lastReset: now}
}

// lowerTo halves the resolution down to schema (a restored series written
// at a finer schema than the one configured now).
func (c *nativeCounts) lowerTo(schema int32) {
	for c.schema > schema {
		c.halve()
	}
}

// histogram returns the counts as a Prometheus native histogram: spans
// over the populated buckets, a gap of one or two empty buckets kept
// inside a span as client_golang encodes it, and counts as deltas.
func (c *nativeCounts) histogram() *histogram.Histogram {
	h := &histogram.Histogram{
		Schema:        c.schema,
		ZeroThreshold: nativeZeroThreshold,
		ZeroCount:     c.zeroCount,
		Count:         c.count,
		Sum:           c.sum,
	}
	if c.populated == 0 {
		return h
	}
	h.PositiveBuckets = make([]int64, 0, c.populated)
	var prev int64
	last := int32(0)
	for i, n := range c.buckets {
		if n == 0 {
			continue
		}
		key := c.lo + int32(i)
		switch gap := key - last - 1; {
		case len(h.PositiveSpans) == 0:
			h.PositiveSpans = append(h.PositiveSpans, histogram.Span{Offset: key, Length: 1})
		case gap <= 2:
			for range gap {
				h.PositiveBuckets = append(h.PositiveBuckets, -prev)
				prev = 0
			}
			h.PositiveSpans[len(h.PositiveSpans)-1].Length += uint32(gap) + 1
		default:
			h.PositiveSpans = append(h.PositiveSpans, histogram.Span{Offset: gap, Length: 1})
		}
		h.PositiveBuckets = append(h.PositiveBuckets, int64(n)-prev)
		prev = int64(n)
		last = key
	}
	return h
}
