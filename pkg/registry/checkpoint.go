package registry

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
)

// A checkpoint holds the values of the series updated since the last
// collection, so that a crash loses at most what came after the last
// checkpoint instead of everything since the last collection.
//
// Values are absolute, not increments: restored into a restarted registry
// they continue the stored series (the store's last sample is an earlier
// value of the same counter), so restoring the same checkpoint twice, or
// one that a later collection already covers, can never count twice; the
// second case is told by the checkpoint's timestamp, which the caller
// compares with the newest sample in the store.
//
// Layout: magic, the timestamp (varint ms), then one section per metric:
// kind, name, label names, bucket bounds and companion counter names,
// the number of series and, per series, flags, label values and floats,
// and for a native histogram its encoded counts (nativeCounts.appendTo),
// length first; a CRC-32 (Castagnoli) of all that ends the file.

const checkpointMagic = "spangraph registry checkpoint v1\n"

const (
	kindCounter byte = iota + 1
	kindGauge
	kindInfoGauge
	kindHistogram
	// A native histogram, and one that is both classic and native.
	kindNativeHistogram
	kindBothHistogram
)

const (
	flagOverflow byte = 1 << iota
	flagNew
)

// ErrCheckpointCorrupt is returned for a checkpoint that cannot be read.
var ErrCheckpointCorrupt = errors.New("registry checkpoint corrupt")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// section is one metric's part of a checkpoint.
type section struct {
	kind       byte
	name       string
	labelNames []string
	bounds     []float64
	counters   []string
}

// floats is how many values each series of the section carries.
func (s *section) floats() int {
	switch s.kind {
	case kindHistogram, kindBothHistogram:
		return len(s.bounds) + 1 + 2 + len(s.counters)
	case kindNativeHistogram:
		return len(s.counters)
	}
	return 1
}

// native reports whether each series carries a native histogram.
func (s *section) native() bool {
	return s.kind == kindNativeHistogram || s.kind == kindBothHistogram
}

func (s *section) sameShape(o *section) bool {
	return s.kind == o.kind && slices.Equal(s.labelNames, o.labelNames) &&
		slices.Equal(s.bounds, o.bounds) && slices.Equal(s.counters, o.counters)
}

// checkpointed is what a metric does for checkpoints.
type checkpointed interface {
	section() section
	// eachUpdated calls f for each series updated at or after since,
	// under the series' lock; native is its encoded native histogram,
	// nil for other kinds.
	eachUpdated(since int64, f func(flags byte, values []string, floats []float64, native []byte))
	// restore adds one series as read from a checkpoint and reports
	// whether it fitted under the limits.
	restore(flags byte, values []string, floats []float64, native *nativeCounts) bool
}

// each calls f on every series of sh, shard by shard under the shard's
// lock.
func each[S any, P chained[S]](sh *shards[S], f func(*S)) {
	for i := range sh.s {
		shard := &sh.s[i]
		shard.Lock()
		for _, s := range shard.m {
			for cur := s; cur != nil; cur = *P(cur).link() {
				f(cur)
			}
		}
		shard.Unlock()
	}
}

// restoreInto finds or creates the series of values in sh for a restore,
// and calls set on it under its shard's lock. A series that does not fit
// under the limits is not restored: folding a continued counter into the
// overflow series would add its whole history there again.
func restoreInto[S any, P chained[S]](sh *shards[S], b *base, values []string, seriesPer, stored int64, create func(map[uint64]*S, LabelValues) *S, set func(*S)) bool {
	lv := b.limit(MakeLabelValues(values))
	shard := &sh.s[lv.hash%shardCount]
	shard.Lock()
	defer shard.Unlock()
	s := find[S, P](shard.m, lv)
	if s == nil {
		if !b.fits(seriesPer, stored) {
			return false
		}
		s = create(shard.m, lv)
	}
	set(s)
	return true
}

// CheckpointStats describes a checkpoint written or restored.
type CheckpointStats struct {
	// Series is how many series were written or restored.
	Series int
	// Skipped counts series not restored: their metric is gone or its
	// shape (label names, buckets) changed, or they did not fit under
	// max_active_series or the memory budget.
	Skipped int
	// Stale reports a checkpoint older than the store's newest sample:
	// a later collection holds everything it held, and it is ignored.
	Stale bool
}

// WriteCheckpoint writes the series updated since the last collection (or
// shortly before it, see checkpointSince), and at, the checkpoint's
// timestamp (unix ms), which must be later than every collection before
// it and earlier than every collection after it.
func (r *Registry) WriteCheckpoint(w io.Writer, at int64) (CheckpointStats, error) {
	return r.writeCheckpoint(w, at, r.checkpointSince.Load())
}

// MoveTo hands every series of r to dst, a registry built under a new
// config (a reload): a series whose metric keeps its name, label names
// and buckets goes on in dst with its value, as after a crash; the others
// end. r must not be used afterwards: its memory goes back to its pool
// before dst draws on it.
func (r *Registry) MoveTo(dst *Registry) (CheckpointStats, error) {
	var buf bytes.Buffer
	if _, err := r.writeCheckpoint(&buf, 0, math.MinInt64); err != nil {
		return CheckpointStats{}, err
	}
	r.Close()
	return dst.RestoreCheckpoint(&buf, math.MinInt64)
}

func (r *Registry) writeCheckpoint(w io.Writer, at, since int64) (CheckpointStats, error) {
	// The file is built in memory, reused from one checkpoint to the
	// next: a section's series count comes before its series, and
	// nothing is written to w under a shard lock.
	r.cpMu.Lock()
	defer r.cpMu.Unlock()
	out := append(r.cpBuf[:0], checkpointMagic...)
	out = binary.AppendVarint(out, at)
	r.mu.Lock()
	metrics := r.metrics
	r.mu.Unlock()
	var stats CheckpointStats
	body := r.cpBody
	for _, m := range metrics {
		cm := m.(checkpointed)
		sec := cm.section()
		n := 0
		body = body[:0]
		cm.eachUpdated(since, func(flags byte, values []string, floats []float64, native []byte) {
			n++
			body = append(body, flags)
			body = appendStrings(body, values)
			for _, f := range floats {
				body = binary.LittleEndian.AppendUint64(body, math.Float64bits(f))
			}
			if sec.native() {
				body = append(binary.AppendUvarint(body, uint64(len(native))), native...)
			}
		})
		if n > 0 {
			out = appendSection(out, &sec)
			out = binary.AppendUvarint(out, uint64(n))
			out = append(out, body...)
			stats.Series += n
		}
	}
	out = append(out, 0) // end of sections
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
	r.cpBuf, r.cpBody = out, body
	_, err := w.Write(out)
	return stats, err
}

// RestoreCheckpoint reads a checkpoint into a registry whose metrics are
// registered and that has not been updated yet. storedUpTo is the newest
// sample in the store: a checkpoint not newer is ignored (Stale).
//
// A restored series keeps its value and continues its stored series; one
// that had never been collected gets its leading zero as a new series
// does. Series of metrics that no longer exist, or whose label names or
// buckets changed, are skipped and counted.
func (r *Registry) RestoreCheckpoint(rd io.Reader, storedUpTo int64) (CheckpointStats, error) {
	var stats CheckpointStats
	data, err := io.ReadAll(rd)
	if err != nil {
		return stats, err
	}
	if len(data) < len(checkpointMagic)+4 || string(data[:len(checkpointMagic)]) != checkpointMagic {
		return stats, fmt.Errorf("%w: not a checkpoint of this version", ErrCheckpointCorrupt)
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return stats, fmt.Errorf("%w: checksum mismatch", ErrCheckpointCorrupt)
	}
	cr := &cpReader{b: body[len(checkpointMagic):]}
	at := cr.varint()
	if cr.err != nil {
		return stats, cr.err
	}
	if at < storedUpTo {
		stats.Stale = true
		return stats, nil
	}
	byName := map[string]checkpointed{}
	r.mu.Lock()
	for _, m := range r.metrics {
		cm := m.(checkpointed)
		byName[cm.section().name] = cm
	}
	r.mu.Unlock()
	// Read it all once before restoring anything, so that a checkpoint
	// that fails half way restores nothing rather than half.
	sections := cr.b
	if err := readSections(cr, nil, nil); err != nil {
		return stats, err
	}
	return stats, readSections(&cpReader{b: sections}, byName, &stats)
}

// readSections reads the sections of a checkpoint and, when byName is not
// nil, restores their series into the metrics of the same name and shape.
func readSections(cr *cpReader, byName map[string]checkpointed, stats *CheckpointStats) error {
	for {
		sec, ok := cr.section()
		if !ok {
			break
		}
		target := byName[sec.name]
		if target != nil {
			if have := target.section(); !have.sameShape(&sec) {
				target = nil
			}
		}
		n := cr.uvarint()
		if n > uint64(len(cr.b)) { // each series takes at least a byte
			cr.fail("series count")
			break
		}
		floats := make([]float64, sec.floats())
		for range n {
			flags := cr.byte()
			values := cr.strings()
			for i := range floats {
				floats[i] = cr.float()
			}
			var nat *nativeCounts
			if sec.native() {
				nat = cr.native()
			}
			if cr.err != nil {
				return cr.err
			}
			switch {
			case byName == nil:
			case target != nil && target.restore(flags, values, floats, nat):
				stats.Series++
			default:
				stats.Skipped++
			}
		}
	}
	if cr.err == nil && len(cr.b) != 0 {
		cr.fail("end")
	}
	return cr.err
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

func appendSection(b []byte, s *section) []byte {
	b = append(b, s.kind)
	b = appendString(b, s.name)
	b = appendStrings(b, s.labelNames)
	b = binary.AppendUvarint(b, uint64(len(s.bounds)))
	for _, f := range s.bounds {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
	}
	return appendStrings(b, s.counters)
}

type cpReader struct {
	b   []byte
	err error
}

func (r *cpReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: bad %s", ErrCheckpointCorrupt, what)
	}
	r.b = nil
}

func (r *cpReader) byte() byte {
	if len(r.b) < 1 {
		r.fail("byte")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *cpReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *cpReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *cpReader) float() float64 {
	if len(r.b) < 8 {
		r.fail("value")
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

func (r *cpReader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail("string")
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *cpReader) strings() []string {
	n := r.uvarint()
	if n > uint64(len(r.b)) { // each string takes at least a byte
		r.fail("list")
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = r.string()
	}
	return out
}

// section reads a section header; false at the end marker or on error.
func (r *cpReader) section() (section, bool) {
	kind := r.byte()
	if kind == 0 || r.err != nil {
		return section{}, false
	}
	if kind > kindBothHistogram {
		r.fail("section kind")
		return section{}, false
	}
	s := section{kind: kind, name: r.string(), labelNames: r.strings()}
	nb := r.uvarint()
	if nb > uint64(len(r.b))/8 {
		r.fail("bounds")
		return section{}, false
	}
	for range nb {
		s.bounds = append(s.bounds, r.float())
	}
	s.counters = r.strings()
	if len(s.labelNames) == 0 {
		s.labelNames = nil
	}
	if len(s.counters) == 0 {
		s.counters = nil
	}
	return s, r.err == nil
}

// appendTo encodes the counts for a checkpoint: schema, zero count, count,
// sum, then the buckets from the first populated one, as their first key
// and counts. When the series last reset is not kept: a restored series
// counts from its restore.
func (c *nativeCounts) appendTo(b []byte) []byte {
	b = binary.AppendVarint(b, int64(c.schema))
	b = binary.AppendUvarint(b, c.zeroCount)
	b = binary.AppendUvarint(b, c.count)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(c.sum))
	lo, hi := 0, len(c.buckets)
	for lo < hi && c.buckets[lo] == 0 {
		lo++
	}
	for hi > lo && c.buckets[hi-1] == 0 {
		hi--
	}
	b = binary.AppendVarint(b, int64(c.lo)+int64(lo))
	b = binary.AppendUvarint(b, uint64(hi-lo))
	for _, n := range c.buckets[lo:hi] {
		b = binary.AppendUvarint(b, n)
	}
	return b
}

// native reads a native histogram that appendTo encoded, length first.
func (r *cpReader) native() *nativeCounts {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.fail("native histogram")
		return nil
	}
	nr := &cpReader{b: r.b[:n]}
	r.b = r.b[n:]
	c := &nativeCounts{}
	schema := nr.varint()
	c.zeroCount = nr.uvarint()
	c.count = nr.uvarint()
	c.sum = nr.float()
	lo := nr.varint()
	nb := nr.uvarint()
	if nr.err != nil || schema < minSchema || schema > maxSchema || nb > uint64(len(nr.b)) ||
		lo < math.MinInt32 || lo+int64(nb) > math.MaxInt32 {
		r.fail("native histogram")
		return nil
	}
	c.schema, c.lo = int32(schema), int32(lo)
	c.buckets = make([]uint64, nb)
	for i := range c.buckets {
		c.buckets[i] = nr.uvarint()
		if c.buckets[i] > 0 {
			c.populated++
		}
	}
	if nr.err != nil || len(nr.b) != 0 {
		r.fail("native histogram")
		return nil
	}
	return c
}
