package rolling

import (
	"context"
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

// apply adds one collection's samples, or keeps them in the backlog
// until Rebuild has run.
func (st *Store) apply(ts int64, samples []pendingSample) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.byHash == nil || len(samples) == 0 {
		return
	}
	if !st.filled {
		if !st.take(int64(len(samples)) * backlogBytes) {
			for _, p := range samples {
				st.refuse(p.t)
			}
			return
		}
		st.backlog = append(st.backlog, collection{ts, samples})
		return
	}
	st.applyLocked(ts, samples)
}

// applyLocked adds one collection's samples; st.mu is held. The
// collection's time becomes a grid point, unless the grid has it
// already (Rebuild read the collection from the TSDB) or a newer one.
func (st *Store) applyLocked(ts int64, samples []pendingSample) {
	g := int64(-1)
	switch n := len(st.grid); {
	case n == 0 || ts > st.grid[n-1]:
		g = st.lo + int64(n)
		st.grid = append(st.grid, ts)
	case ts == st.grid[n-1]:
		g = st.lo + int64(n-1)
	}
	for _, p := range samples {
		st.add(p.l, g, ts, p.t, p.v)
	}
	st.advance(ts)
}

// add keeps one sample; g is the grid point of ts, or -1. A sample no
// newer than the series' newest is held already: Rebuild read it from
// the TSDB before its collection, waiting in the backlog, came in.
func (st *Store) add(l labels.Labels, g, ts, t int64, v float64) {
	s := st.lookup(l)
	if s == nil {
		if !st.take(seriesBytes) {
			st.refuse(t)
			return
		}
		s = st.insert(l)
	}
	if isStale(v) || (s.has && t <= s.lastT) {
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
	st.lost = max(st.lost, t)
	if st.filled {
		st.from = max(st.from, t)
	}
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

// RebuildInBackground runs Rebuild in a goroutine of its own and calls
// done with its error, so that a tenant opens at once however much its
// TSDB holds; Close stops it. Until it ends, reads go to the TSDB and
// collections wait in the backlog.
func (st *Store) RebuildInBackground(q storage.Queryable, now int64, done func(error)) {
	ctx, cancel := context.WithCancel(context.Background())
	st.mu.Lock()
	st.stop, st.done = cancel, make(chan struct{})
	st.mu.Unlock()
	go func() {
		defer close(st.done)
		done(st.Rebuild(ctx, q, now))
	}()
}

// Rebuild fills an empty store with the kept series' samples in
// (now-horizon, now] from q, the tenant's TSDB, so that a restarted or
// reopened tenant answers from memory at once, then adds the collections
// committed meanwhile (the backlog), leaving out the samples the TSDB
// gave already. It reads the TSDB without holding the store, so that
// collections go on.
//
// A timestamp becomes a grid point when some series has a sample there
// that does not begin its life (a leading zero always does, a
// collection's samples mostly do not); the others are kept beside the
// grid. Either way the figures are the same; the grid only makes them
// smaller. When the TSDB cannot be read, the store holds the windows
// after now only.
func (st *Store) Rebuild(ctx context.Context, q storage.Queryable, now int64) error {
	tmp := New(st.horizon, st.pool)
	tmp.filled = true
	err := tmp.read(ctx, q, now)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.byHash == nil {
		// Closed meanwhile.
		tmp.Close()
		return ctx.Err()
	}
	from := now
	if err == nil {
		st.grid, st.lo, st.byHash, st.byName = tmp.grid, tmp.lo, tmp.byHash, tmp.byName
		st.held += tmp.held
		st.refused += tmp.refused
		from = max(now-st.horizon, tmp.lost)
	} else {
		tmp.Close()
	}
	st.from = max(from, st.lost)
	st.filled = true
	st.advance(now)
	for _, c := range st.backlog {
		st.give(int64(len(c.samples)) * backlogBytes)
		st.applyLocked(c.ts, c.samples)
	}
	st.backlog = nil
	return err
}

// read fills a new store from q, as Rebuild does.
func (st *Store) read(ctx context.Context, q storage.Queryable, now int64) error {
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
		for n := 0; set.Next(); n++ {
			if n%1024 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
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
	st.grid, st.lo = grid, 0
	for i, t := range grid {
		index[t] = int64(i)
	}
	var cur labels.Labels
	var s *series
	return each(func(l labels.Labels, t int64, v float64, _ bool) {
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
}

// namesRegexp matches the kept metrics' names.
func namesRegexp() string {
	quoted := make([]string, len(Metrics))
	for i, n := range Metrics {
		quoted[i] = regexp.QuoteMeta(n)
	}
	return strings.Join(quoted, "|")
}
