package limits

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spangraph/spangraph/pkg/otlp"
)

const (
	// OverflowSpanName replaces every new span name of a tenant that has
	// reached max_span_names, so that its spans are still counted (in one
	// series per service, kind and status) instead of being dropped or
	// creating unbounded series. The double underscores keep it apart from
	// real operation names; grep dashboards for it.
	OverflowSpanName = "__overflow__"

	// ClusterPlaceholder replaces an id-like segment when
	// span_name_clustering is on: `GET /users/123` → `GET /users/<_>`. It
	// is the placeholder of log-template miners (Drain), so it reads as
	// "a variable was here".
	ClusterPlaceholder = "<_>"

	// MaxSpanNameLength: when max_span_names or clustering is on, names are
	// cut (on a UTF-8 boundary) to this many bytes before they are looked
	// up and stored, so that the memory of a tenant's set is bounded in
	// bytes (max_span_names × 1 KiB plus map overhead), not only in count.
	// Such names are pathological anyway, and the registry's label value
	// length limit would cut them too.
	MaxSpanNameLength = 1024

	// internCap bounds the set kept for clustering alone
	// (max_span_names = 0): clustered names are interned so that a
	// rewritten name costs no allocation once seen, but an unlimited
	// tenant must not grow the set forever. Past the cap, rewritten names
	// are allocated per span instead; nothing is replaced by the overflow
	// name since the tenant has no max_span_names.
	internCap = 1 << 16
)

// SpanNames caps and normalises the span names of each tenant. It is safe
// for concurrent use.
//
// Each tenant has a set of the names it has used, owned copies (strings
// of a batch point into its request buffer, which is reused). A known
// name costs one map read under a read lock; only a batch with a new name
// takes the write lock.
//
// Names age out: a name not seen for the TTL (the registry's
// stale_duration, after which its series are gone too) leaves the set
// when a new name finds the set full. Without that, a burst of unique
// names would fill the set once and turn every later new name into
// OverflowSpanName until a restart.
type SpanNames struct {
	limit func(tenant string) (maxNames int, cluster bool)
	ttl   time.Duration
	now   func() time.Time

	mu      sync.RWMutex
	tenants map[string]*nameSet
}

type nameSet struct {
	mu sync.RWMutex
	// names maps a name to its entry, whose owned copy replaces the span's
	// name: a clustered name built in a scratch buffer is then looked up
	// (m[string(buf)] does not allocate) and assigned without allocating.
	names map[string]*nameEntry
	// pruned is when stale names were last looked for (unix seconds),
	// guarded by mu; a full set looks at most once per pruneEvery.
	pruned int64
}

// nameEntry is a stored name and when it was last seen (unix seconds).
// lastSeen is written at most once a second per name, so the read-locked
// fast path rarely writes shared memory.
type nameEntry struct {
	owned    string
	lastSeen atomic.Int64
}

// touch records that the name was seen at now (unix seconds).
func (e *nameEntry) touch(now int64) {
	if e.lastSeen.Load() != now {
		e.lastSeen.Store(now)
	}
}

// NewSpanNames returns span-name sets whose limits come from limit: the
// tenant's max_span_names (0 = unlimited) and span_name_clustering. Names
// unseen for ttl make room for new ones once the set is full; ttl 0
// keeps every name for the life of the process.
func NewSpanNames(limit func(tenant string) (maxNames int, cluster bool), ttl time.Duration) *SpanNames {
	return &SpanNames{limit: limit, ttl: ttl, now: time.Now, tenants: map[string]*nameSet{}}
}

// Len returns the number of names stored for tenant.
func (n *SpanNames) Len(tenant string) int {
	n.mu.RLock()
	set := n.tenants[tenant]
	n.mu.RUnlock()
	if set == nil {
		return 0
	}
	set.mu.RLock()
	defer set.mu.RUnlock()
	return len(set.names)
}

func (n *SpanNames) set(tenant string) *nameSet {
	n.mu.RLock()
	set := n.tenants[tenant]
	n.mu.RUnlock()
	if set != nil {
		return set
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if set = n.tenants[tenant]; set == nil {
		set = &nameSet{names: map[string]*nameEntry{}}
		n.tenants[tenant] = set
	}
	return set
}

// Apply normalises the span names of b in place, before the processors
// see them: clustering first (when on), then the max_span_names cap,
// which replaces names beyond it with OverflowSpanName. It returns the
// number of spans so renamed, also counted in
// spangraph_limits_span_names_overflowed_total.
//
// With every name already known, Apply allocates nothing, clustered names
// included.
func (n *SpanNames) Apply(tenant string, b *otlp.Batch) (overflowed int) {
	maxNames, cluster := n.limit(tenant)
	if maxNames <= 0 && !cluster {
		return 0
	}
	capacity, overflow := maxNames, true
	if maxNames <= 0 {
		capacity, overflow = internCap, false
	}
	set := n.set(tenant)
	now := n.now().Unix()
	// Scratch for clustered names: on the stack for names up to its size
	// (almost all of them), so Apply needs no pool.
	var scratch [256]byte
	buf := scratch[:0]

	set.mu.RLock()
	writing := false
	for ri := range b.Resources {
		spans := b.Resources[ri].Spans
		for i := range spans {
			s := &spans[i]
			name := truncateUTF8(s.Name, MaxSpanNameLength)
			changed := false
			if cluster {
				buf, changed = AppendClustered(buf[:0], name)
			}
			if e := set.find(buf, changed, name); e != nil {
				e.touch(now)
				s.Name = e.owned
				continue
			}
			if !writing {
				// A new name: switch to the write lock for the rest of the
				// batch (new names come in bursts, and steady state has
				// none). Another batch may have added the name meanwhile.
				set.mu.RUnlock()
				set.mu.Lock()
				writing = true
				if e := set.find(buf, changed, name); e != nil {
					e.touch(now)
					s.Name = e.owned
					continue
				}
			}
			if len(set.names) >= capacity {
				n.prune(set, now)
			}
			switch {
			case len(set.names) < capacity:
				e := &nameEntry{owned: strings.Clone(name)}
				if changed {
					e.owned = string(buf)
				}
				e.touch(now)
				set.names[e.owned] = e
				s.Name = e.owned
			case overflow:
				s.Name = OverflowSpanName
				overflowed++
			case changed:
				s.Name = string(buf)
			default:
				s.Name = name
			}
		}
	}
	if writing {
		set.mu.Unlock()
	} else {
		set.mu.RUnlock()
	}
	if overflowed > 0 {
		spanNamesOverflowed.WithLabelValues(tenant).Add(float64(overflowed))
	}
	return overflowed
}

// find returns the entry of the clustered name in buf when changed, else
// of name; m[string(buf)] does not allocate.
func (set *nameSet) find(buf []byte, changed bool, name string) *nameEntry {
	if changed {
		return set.names[string(buf)]
	}
	return set.names[name]
}

// pruneEvery spaces out the scans of a full set for stale names: while a
// burst of new names overflows, each would otherwise scan the whole set.
const pruneEvery = 10 * time.Second

// prune removes the names of set not seen for the TTL. set.mu must be
// held for writing.
func (n *SpanNames) prune(set *nameSet, now int64) {
	if n.ttl <= 0 || now-set.pruned < int64(pruneEvery/time.Second) {
		return
	}
	set.pruned = now
	staleBefore := now - int64(n.ttl/time.Second)
	for name, e := range set.names {
		if e.lastSeen.Load() < staleBefore {
			delete(set.names, name)
		}
	}
}

// ClusterSpanName returns name with its id-like segments replaced by
// ClusterPlaceholder (see AppendClustered). It returns name itself, without
// allocating, when nothing is replaced.
func ClusterSpanName(name string) string {
	buf, changed := AppendClustered(nil, name)
	if !changed {
		return name
	}
	return string(buf)
}

// AppendClustered appends to dst the name with every id-like segment
// replaced by ClusterPlaceholder and reports whether it replaced any. When
// it replaces none it appends nothing and returns dst unchanged, so that
// the common case (a name that is already a template) neither copies nor
// allocates: the caller keeps using name.
//
// Segments are the runs between the delimiters / space ? & = ; , : #. A
// segment is id-like when it is
//   - all ASCII digits (`/users/123`, `/search?page=2`),
//   - a UUID, 8-4-4-4-12 hex digits with dashes,
//   - or 8 hex digits or more (`/orders/9f86d081884c7d65`, hashes,
//     dash-less UUIDs).
//
// Mixed segments (`v2`, `user-123`, `report.pdf`) are kept: replacing
// them would merge operations that really differ. '.' and '-' are not
// delimiters for the same reason. Already clustered names are unchanged,
// so clustering is idempotent.
func AppendClustered(dst []byte, name string) ([]byte, bool) {
	changed := false
	copied := 0 // name[:copied] has been appended to dst
	for i := 0; i <= len(name); i++ {
		// One pass over the segment with a class table: the names of a
		// busy tenant go through here once per span.
		start := i
		class := uint8(classDigit | classHex)
		for ; i < len(name); i++ {
			c := byteClass[name[i]]
			if c&classDelim != 0 {
				break
			}
			class &= c
		}
		n := i - start
		if n == 0 {
			continue
		}
		if class&classDigit != 0 || (class&classHex != 0 && n >= 8) || (n == 36 && isUUID(name[start:i])) {
			dst = append(dst, name[copied:start]...)
			dst = append(dst, ClusterPlaceholder...)
			copied = i
			changed = true
		}
	}
	if !changed {
		return dst, false
	}
	return append(dst, name[copied:]...), true
}

const (
	classDelim = 1 << iota
	classDigit
	classHex
)

// byteClass classifies bytes for AppendClustered: delimiters, and the
// digits and hex digits id-like segments are made of.
var byteClass = func() (t [256]uint8) {
	for _, c := range "/ ?&=;,:#" {
		t[c] = classDelim
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = classDigit | classHex
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = classHex
		t[c-'a'+'A'] = classHex
	}
	return t
}()

func isHex(c byte) bool { return byteClass[c]&classHex != 0 }

// isUUID reports whether s is 8-4-4-4-12 hex digits separated by dashes.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHex(s[i]) {
				return false
			}
		}
	}
	return true
}
