package rolling

import (
	"slices"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
)

// Reader reads one window of a store; the store takes no collection
// while it is open, so Close it promptly. Its methods may be called from
// several goroutines at once.
type Reader struct {
	st         *Store
	mint, maxt int64
	ga, gb     int64 // grid points in the window
}

// Read opens the window (mint, maxt], or reports false when the store
// does not hold every sample of it (older than the horizon, before the
// store was rebuilt, or refused for want of memory); then read the TSDB.
func (st *Store) Read(mint, maxt int64) (*Reader, bool) {
	if st == nil {
		return nil, false
	}
	st.mu.RLock()
	if st.byHash == nil || mint < st.from || mint >= maxt {
		st.mu.RUnlock()
		return nil, false
	}
	// Grid points with mint < t <= maxt.
	a := sort.Search(len(st.grid), func(i int) bool { return st.grid[i] > mint })
	b := sort.Search(len(st.grid), func(i int) bool { return st.grid[i] > maxt }) - 1
	return &Reader{st: st, mint: mint, maxt: maxt, ga: st.lo + int64(a), gb: st.lo + int64(b)}, true
}

// Close releases the store to the collection.
func (r *Reader) Close() { r.st.mu.RUnlock() }

// Series is a kept series as Each hands it to a reader.
type Series struct{ s *series }

// Labels returns the series' labels.
func (x Series) Labels() labels.Labels { return x.s.labels }

// Memo is what a reader derives from a series' labels (keys it groups
// series by, say), kept with the series.
type Memo [5]uint64

// Memo returns what derive makes of the series' labels, calling it on
// the series' first read only, so that a reader looks its keys up in
// the labels once per series rather than once per read, and finds them
// where the series is, without a pointer to chase. Every reader of a
// store must pass the same derive: the first result is kept.
func (x Series) Memo(derive func(labels.Labels) Memo) Memo {
	s := x.s
	if s.memoSet.Load() {
		var m Memo
		for i := range m {
			m[i] = s.memo[i].Load()
		}
		return m
	}
	// Readers share the store: two may derive at once, and store the
	// same words.
	m := derive(s.labels)
	for i, w := range m {
		s.memo[i].Store(w)
	}
	s.memoSet.Store(true)
	return m
}

// Each calls f with every series matching ms that has a sample in the
// window, and what it holds there; ms must name the metric with an
// equality matcher, as every read of the node graph and the RED table
// does.
func (r *Reader) Each(ms []*labels.Matcher, f func(s Series, sp Span)) {
	// The index answers the name and le equalities; only the other
	// matchers are run against each series' labels.
	var name, le string
	var rest []*labels.Matcher
	for _, m := range ms {
		switch {
		case m.Type == labels.MatchEqual && m.Name == labels.MetricName:
			name = m.Value
		case m.Type == labels.MatchEqual && m.Name == "le" && m.Value != "":
			le = m.Value
		default:
			rest = append(rest, m)
		}
	}
	ix := r.st.byName[name]
	if ix == nil {
		return
	}
	list := ix.all
	if le != "" {
		list = ix.byLE[le]
	}
	for _, s := range list {
		if len(rest) > 0 && !matches(s.labels, rest) {
			continue
		}
		if sp, ok := s.span(r.mint, r.maxt, r.ga, r.gb, r.st.grid, r.st.lo); ok {
			f(Series{s}, sp)
		}
	}
}

// LabelValues returns the sorted values of label on the series of ms
// that the store holds, whether or not they have samples in the window.
func (r *Reader) LabelValues(label string, ms []*labels.Matcher) []string {
	seen := map[string]bool{}
	for _, m := range ms {
		if m.Type != labels.MatchEqual || m.Name != labels.MetricName {
			continue
		}
		ix := r.st.byName[m.Value]
		if ix == nil {
			return nil
		}
		if label == "le" {
			// The bucket bounds are the index's keys: one series that
			// matches is enough for each, instead of a scan of every
			// series of the histogram.
			for le, list := range ix.byLE {
				for _, s := range list {
					if matches(s.labels, ms) {
						seen[le] = true
						break
					}
				}
			}
			continue
		}
		for _, s := range ix.all {
			if v := s.labels.Get(label); v != "" && !seen[v] && matches(s.labels, ms) {
				seen[v] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

func matches(l labels.Labels, ms []*labels.Matcher) bool {
	for _, m := range ms {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			continue
		}
		if !m.Matches(l.Get(m.Name)) {
			return false
		}
	}
	return true
}
