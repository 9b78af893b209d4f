package rolling

import (
	"context"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// Appender returns an appender that writes to inner and, once inner has
// committed, keeps the samples of the kept metrics: exactly those the
// store accepted, so that both hold the same. ts is the collection's
// timestamp: samples at it go on the grid, others (leading zeros) beside.
func (st *Store) Appender(inner storage.Appender, ts int64) storage.Appender {
	return &tee{Appender: inner, st: st, ts: ts}
}

type tee struct {
	storage.Appender
	st      *Store
	ts      int64
	pending []pendingSample
}

type pendingSample struct {
	l labels.Labels
	t int64
	v float64
}

func (a *tee) Append(ref storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	ref, err := a.Appender.Append(ref, l, t, v)
	if err == nil && a.st.keep[l.Get(labels.MetricName)] {
		a.pending = append(a.pending, pendingSample{l, t, v})
	}
	return ref, err
}

func (a *tee) Commit() error {
	if err := a.Appender.Commit(); err != nil {
		return err
	}
	a.st.apply(a.ts, a.pending)
	a.pending = nil
	return nil
}

func (a *tee) Rollback() error {
	a.pending = nil
	return a.Appender.Rollback()
}

// apply adds one collection's samples.
func (st *Store) apply(ts int64, samples []pendingSample) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.byHash == nil || len(samples) == 0 {
		return
	}
	g := int64(-1)
	if n := len(st.grid); n == 0 || ts > st.grid[n-1] {
		g = st.lo + int64(len(st.grid))
		st.grid = append(st.grid, ts)
	}
	for _, p := range samples {
		st.add(p.l, g, ts, p.t, p.v)
	}
	st.advance(ts)
}

// add keeps one sample; g is the grid point of ts, or -1.
func (st *Store) add(l labels.Labels, g, ts, t int64, v float64) {
	s := st.lookup(l)
	if s == nil {
		if !st.take(seriesBytes) {
			st.refuse(t)
			return
		}
		s = st.insert(l)
	}
	if isStale(v) {
		// rate() skips staleness markers; the series has no point here.
		return
	}
	ok := false
	if g >= 0 && t == ts {
		ok = st.addGrid(s, g, t, v)
	} else {
		ok = st.addOff(s, t, v)
	}
	s.refusing = !ok
	if !ok {
		st.refuse(t)
	}
}

// refuse notes a sample the pool had no room for: windows reaching back
// to it are no longer whole.
func (st *Store) refuse(t int64) {
	st.refused++
	// Before Rebuild (from is MaxInt64) nothing is whole anyway.
	st.from = max(st.from, t)
}

func (st *Store) lookup(l labels.Labels) *series {
	h := l.Hash()
	for _, s := range st.byHash[h] {
		if labels.Equal(s.labels, l) {
			return s
		}
	}
	return nil
}

func (st *Store) insert(l labels.Labels) *series {
	s := &series{labels: l, hash: l.Hash()}
	st.byHash[s.hash] = append(st.byHash[s.hash], s)
	name := l.Get(labels.MetricName)
	ix := st.byName[name]
	if ix == nil {
		ix = &nameIndex{byLE: map[string][]*series{}}
		st.byName[name] = ix
	}
	ix.all = append(ix.all, s)
	if le := l.Get("le"); le != "" {
		ix.byLE[le] = append(ix.byLE[le], s)
	}
	return s
}

// advance drops the grid's oldest segment once all of it lies beyond the
// horizon from now, with what every series holds of it.
func (st *Store) advance(now int64) {
	dropped := false
	for len(st.grid) > segLen && st.grid[segLen-1] <= now-st.horizon {
		st.from = max(st.from, st.grid[segLen-1])
		st.grid = append([]int64(nil), st.grid[segLen:]...)
		st.lo += segLen
		dropped = true
	}
	if !dropped {
		return
	}
	for name, ix := range st.byName {
		all := ix.all[:0]
		for _, s := range ix.all {
			if st.trim(s) {
				st.give(seriesBytes)
				st.unhash(s)
				continue
			}
			all = append(all, s)
		}
		clear(ix.all[len(all):])
		ix.all = all
		if len(all) == 0 {
			delete(st.byName, name)
			continue
		}
		ix.byLE = map[string][]*series{}
		for _, s := range all {
			if le := s.labels.Get("le"); le != "" {
				ix.byLE[le] = append(ix.byLE[le], s)
			}
		}
	}
}

func (st *Store) unhash(s *series) {
	list := st.byHash[s.hash]
	for i, x := range list {
		if x == s {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(st.byHash, s.hash)
	} else {
		st.byHash[s.hash] = list
	}
}

// Rebuild fills an empty store with the kept series' samples in
// (now-horizon, now] from q, the tenant's TSDB, so that a restarted or
// reopened tenant answers from memory at once. A timestamp becomes a grid
// point when some series has a sample there that does not begin its life
// (a leading zero always does, a collection's samples mostly do not);
// the others are kept beside the grid. Either way the figures are the
// same; the grid only makes them smaller.
func (st *Store) Rebuild(ctx context.Context, q storage.Queryable, now int64) error {
	mint := now - st.horizon
	querier, err := q.Querier(mint+1, now)
	if err != nil {
		return err
	}
	defer querier.Close()
	names := labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, namesRegexp())
	each := func(f func(l labels.Labels, t int64, v float64, lifeStart bool)) error {
		set := querier.Select(ctx, false, &storage.SelectHints{Start: mint + 1, End: now}, names)
		var it chunkenc.Iterator
		for set.Next() {
			s := set.At()
			it = s.Iterator(it)
			start := true
			for vt := it.Seek(mint + 1); vt == chunkenc.ValFloat; vt = it.Next() {
				t, v := it.At()
				if t > now {
					break
				}
				f(s.Labels(), t, v, start)
				start = isStale(v)
			}
		}
		return set.Err()
	}
	gridSet := map[int64]bool{}
	if err := each(func(_ labels.Labels, t int64, v float64, lifeStart bool) {
		if !lifeStart && !isStale(v) {
			gridSet[t] = true
		}
	}); err != nil {
		return err
	}
	grid := make([]int64, 0, len(gridSet))
	for t := range gridSet {
		grid = append(grid, t)
	}
	slices.Sort(grid)
	index := make(map[int64]int64, len(grid))
	st.mu.Lock()
	defer st.mu.Unlock()
	st.grid, st.lo = grid, 0
	for i, t := range grid {
		index[t] = int64(i)
	}
	var cur labels.Labels
	var s *series
	err = each(func(l labels.Labels, t int64, v float64, _ bool) {
		if s == nil || !labels.Equal(cur, l) {
			cur = l.Copy()
			if s = st.lookup(cur); s == nil {
				if !st.take(seriesBytes) {
					st.refuse(t)
					return
				}
				s = st.insert(cur)
			}
		}
		if isStale(v) {
			return
		}
		var ok bool
		if g, on := index[t]; on {
			ok = st.addGrid(s, g, t, v)
		} else {
			ok = st.addOff(s, t, v)
		}
		if !ok {
			st.refuse(t)
		}
	})
	if err != nil {
		return err
	}
	if st.from == math.MaxInt64 || st.from < mint {
		st.from = mint
	}
	st.advance(now)
	return nil
}

// namesRegexp matches the kept metrics' names.
func namesRegexp() string {
	quoted := make([]string, len(Metrics))
	for i, n := range Metrics {
		quoted[i] = regexp.QuoteMeta(n)
	}
	return strings.Join(quoted, "|")
}
