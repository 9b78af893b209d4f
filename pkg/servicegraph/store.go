package servicegraph

import (
	"encoding/binary"
	"strings"
	"sync"
	"unsafe"

	"github.com/spangraph/spangraph/pkg/budget"
	"github.com/spangraph/spangraph/pkg/otlp"
)

// key is a trace id followed by a span id: the client's own span id or the
// server's parent span id. A fixed-size array hashes without building a
// string.
type key [24]byte

func makeKey(trace *[16]byte, span *[8]byte) key {
	var k key
	copy(k[:16], trace[:])
	copy(k[16:], span[:])
	return k
}

func (k *key) traceID() *[16]byte { return (*[16]byte)(k[:16]) }

// tag hashes the whole key for a shard's index. Every input bit must
// reach the low bits, which place the key: trace ids that count in a few
// bytes would otherwise pile up in a few runs of the index.
func (k *key) tag() uint32 {
	a := binary.LittleEndian.Uint64(k[:8]) ^ binary.LittleEndian.Uint64(k[8:16])
	h := mix(a ^ binary.LittleEndian.Uint64(k[16:])*0xc2b2ae3d27d4eb4f)
	return uint32(h ^ h>>32)
}

// half is what one span tells about its end of a call, on its way through
// a request, an expiry batch or a saved file. In the store it is packed
// into a pending slot.
type half struct {
	service string
	// peer is the span's peer attribute: what it names as its other side.
	peer       string
	start, end uint64 // unix ns
	weight     float64
	// site is the call site of a client or producer span (see sites), 0
	// for the server side and for restored halves.
	site uint64
	kind otlp.SpanKind
	// root marks a server span without a parent span; failed either side
	// of a merge failing; watched that the call site had expirations when
	// the half was pushed, so its pairing must be told to the site table.
	failed, root, watched bool
}

// pending is a half edge waiting in the store. Its strings are ids in the
// shard's string table: 4 bytes each instead of a 16-byte string header,
// and no pointer for the garbage collector to scan. 88 bytes.
type pending struct {
	key key
	// prev and next link the shard's time-ordered list; next also chains
	// the free slots.
	prev, next    int32
	deadline      int64 // unix ns at which the half edge expires
	start, end    uint64
	weight        float64
	site          uint64
	service, peer uint32
	kind, flags   uint8
}

const (
	flagFailed  = 1 << 0
	flagRoot    = 1 << 1
	flagWatched = 1 << 2
)

// PendingBytes is the heap one pending half edge takes at most with nDims
// configured dimensions, once the store holds thousands per shard: its
// 88-byte slot, its share of the shard's index (which grows in powers of
// two, so holds 4/3 to 8/3 entries of 8 bytes per edge: at most 22
// bytes), 4 bytes per dimension value, and up to 10 bytes for the last,
// partly used chunk of slots. Distinct strings cost their bytes once per
// shard on top, shared by every edge that holds them. max_items ×
// PendingBytes(dimensions) bounds the store's memory.
func PendingBytes(nDims int) int {
	return int(unsafe.Sizeof(pending{})) + 22 + 10 + 4*nDims
}

const (
	chunkBits = 8
	chunkSize = 1 << chunkBits
	none      = int32(-1)
)

// chunk is a block of edge slots. Slots live in chunks rather than one
// growing slice so that growth never copies pending edges under the lock,
// and a slot's address stays put while it is in use.
type chunk struct {
	edges [chunkSize]pending
	// dims holds nDims string ids per slot.
	dims []uint32
}

// shard is one lock's worth of the edge store. Spans of one trace always
// land in the same shard, so pairing never takes two locks, and pushes of
// different traces rarely wait for each other.
//
// Slots are found through index, an open-addressed table with linear
// probing: each entry is a key's 32-bit tag and its slot number + 1 (0 is
// empty). The tag's low bits are its home position, so the table grows
// and deletes by backward shift without reading any slot, and a lookup
// reads a slot only when the tag matches: a miss costs one cache line,
// a hit one more, the slot it needs anyway. Slots never move, so the
// time-ordered list links slot numbers.
type shard struct {
	mu     sync.Mutex
	index  []uint64
	chunks []*chunk
	free   int32 // first free slot, chained through next
	// head is the oldest pending edge, tail the newest: edges are linked in
	// insertion order, so expiry pops from the head until it meets one that
	// is not due, and never scans.
	head, tail int32
	n, cap     int
	nDims      int
	strs       strtab
	// pool is the process's memory share for half edges (nil: none),
	// taken a chunk at a time, chunkBytes each.
	pool       *budget.Pool
	chunkBytes int64
	_          [64]byte // keep neighbouring shards' locks on separate cache lines
}

func (sh *shard) init(capacity, nDims int, pool *budget.Pool) {
	sh.head, sh.tail, sh.free = none, none, none
	sh.cap = capacity
	sh.nDims = nDims
	sh.strs.init()
	sh.pool, sh.chunkBytes = pool, int64(chunkSize*PendingBytes(nDims))
}

// releaseChunks gives the shard's chunks back to the pool; the shard must
// not be used afterwards.
func (sh *shard) releaseChunks() {
	sh.pool.Give(int64(len(sh.chunks)) * sh.chunkBytes)
	sh.chunks, sh.index = nil, nil
}

func (sh *shard) edge(i int32) *pending { return &sh.chunks[i>>chunkBits].edges[i&(chunkSize-1)] }

func (sh *shard) dims(i int32) []uint32 {
	o := int(i&(chunkSize-1)) * sh.nDims
	return sh.chunks[i>>chunkBits].dims[o : o+sh.nDims : o+sh.nDims]
}

// find returns the slot holding k, or none.
func (sh *shard) find(k *key) int32 {
	if len(sh.index) == 0 {
		return none
	}
	tag := k.tag()
	mask := len(sh.index) - 1
	for p := int(tag) & mask; ; p = (p + 1) & mask {
		s := sh.index[p]
		if s == 0 {
			return none
		}
		if uint32(s>>32) == tag {
			if i := int32(uint32(s)) - 1; sh.edge(i).key == *k {
				return i
			}
		}
	}
}

// insert takes a free slot for k (which must not be in the store), links
// it as the newest edge and returns it, or returns none when the shard is
// full or the memory pool has no room for another chunk. The caller fills
// it with put.
func (sh *shard) insert(k *key, deadline int64) int32 {
	if sh.n >= sh.cap {
		return none
	}
	if sh.free == none {
		if !sh.pool.Take(sh.chunkBytes) {
			return none
		}
		c := &chunk{dims: make([]uint32, chunkSize*sh.nDims)}
		base := int32(len(sh.chunks)) << chunkBits
		sh.chunks = append(sh.chunks, c)
		for j := int32(chunkSize - 1); j >= 0; j-- {
			c.edges[j].next = sh.free
			sh.free = base + j
		}
	}
	if (sh.n+1)*4 > len(sh.index)*3 {
		sh.grow()
	}
	i := sh.free
	e := sh.edge(i)
	sh.free = e.next
	*e = pending{key: *k, deadline: deadline, prev: sh.tail, next: none}
	if sh.tail != none {
		sh.edge(sh.tail).next = i
	} else {
		sh.head = i
	}
	sh.tail = i
	tag := k.tag()
	mask := len(sh.index) - 1
	p := int(tag) & mask
	for sh.index[p] != 0 {
		p = (p + 1) & mask
	}
	sh.index[p] = uint64(tag)<<32 | uint64(uint32(i+1))
	sh.n++
	return i
}

// grow doubles the index. Entries are placed by their tags alone.
func (sh *shard) grow() {
	old := sh.index
	sh.index = make([]uint64, max(2*len(old), 64))
	mask := len(sh.index) - 1
	for _, s := range old {
		if s == 0 {
			continue
		}
		p := int(uint32(s>>32)) & mask
		for sh.index[p] != 0 {
			p = (p + 1) & mask
		}
		sh.index[p] = s
	}
}

// unindex deletes slot i's index entry, shifting back the entries after
// it that probed past it, so that no lookup needs tombstones.
func (sh *shard) unindex(i int32) {
	mask := len(sh.index) - 1
	want := uint64(uint32(i + 1))
	p := int(sh.edge(i).key.tag()) & mask
	for sh.index[p]&0xffffffff != want {
		p = (p + 1) & mask
	}
	for q := (p + 1) & mask; sh.index[q] != 0; q = (q + 1) & mask {
		// The entry at q may fill the hole at p unless its home lies
		// after p on the way to q.
		home := int(uint32(sh.index[q]>>32)) & mask
		if (q-home)&mask >= (q-p)&mask {
			sh.index[p] = sh.index[q]
			p = q
		}
	}
	sh.index[p] = 0
}

// compact moves the pending edges into as few chunks as they need, in an
// index sized for them, and lets the rest go: after a burst (the first
// wait of silent call sites, a spike) the store gives its memory back.
// Slots are renumbered; string ids stay.
func (sh *shard) compact() {
	chunks, head, nd := sh.chunks, sh.head, sh.nDims
	sh.chunks, sh.index = nil, nil
	sh.free, sh.head, sh.tail, sh.n = none, none, none, 0
	for i := head; i != none; {
		c := chunks[i>>chunkBits]
		e := &c.edges[i&(chunkSize-1)]
		j := sh.insert(&e.key, e.deadline)
		ne := sh.edge(j)
		prev, next := ne.prev, ne.next
		*ne = *e
		ne.prev, ne.next = prev, next
		o := int(i&(chunkSize-1)) * nd
		copy(sh.dims(j), c.dims[o:o+nd])
		i = e.next
	}
	sh.pool.Give(int64(len(chunks)-len(sh.chunks)) * sh.chunkBytes)
}

// sparse says the shard uses under a quarter of more than minChunks
// chunks: worth compacting. A shard that fills up again after a
// compaction takes at least four times its pending edges to come back.
func (sh *shard) sparse() bool {
	const minChunks = 4
	return len(sh.chunks) > minChunks && sh.n*4 < len(sh.chunks)*chunkSize
}

// put stores h and its dimension values into slot i.
func (sh *shard) put(i int32, h *half, dims []string) {
	e := sh.edge(i)
	e.start, e.end, e.weight, e.site = h.start, h.end, h.weight, h.site
	e.service, e.peer = sh.strs.ref(h.service), sh.strs.ref(h.peer)
	e.kind = uint8(h.kind)
	e.flags = 0
	if h.failed {
		e.flags |= flagFailed
	}
	if h.root {
		e.flags |= flagRoot
	}
	if h.watched {
		e.flags |= flagWatched
	}
	d := sh.dims(i)
	for j, v := range dims {
		d[j] = sh.strs.ref(v)
	}
}

// get reads slot i back into h and dims.
func (sh *shard) get(i int32, h *half, dims []string) {
	e := sh.edge(i)
	*h = half{
		service: sh.strs.str(e.service), peer: sh.strs.str(e.peer),
		start: e.start, end: e.end, weight: e.weight, site: e.site,
		kind:    otlp.SpanKind(e.kind),
		failed:  e.flags&flagFailed != 0,
		root:    e.flags&flagRoot != 0,
		watched: e.flags&flagWatched != 0,
	}
	for j, id := range sh.dims(i) {
		dims[j] = sh.strs.str(id)
	}
}

// release drops slot i's string references.
func (sh *shard) release(i int32) {
	e := sh.edge(i)
	sh.strs.unref(e.service)
	sh.strs.unref(e.peer)
	for _, id := range sh.dims(i) {
		sh.strs.unref(id)
	}
}

// remove unlinks slot i and returns it to the free list.
func (sh *shard) remove(i int32) {
	sh.unindex(i)
	sh.release(i)
	e := sh.edge(i)
	if e.prev != none {
		sh.edge(e.prev).next = e.next
	} else {
		sh.head = e.next
	}
	if e.next != none {
		sh.edge(e.next).prev = e.prev
	} else {
		sh.tail = e.prev
	}
	*e = pending{next: sh.free}
	clear(sh.dims(i))
	sh.free = i
	sh.n--
}

// strtab interns the strings of a shard's pending edges: each distinct
// string is copied out of the request once and referenced by id. A
// string whose last reference goes is kept until unreferenced ones are
// half the table, then swept in bulk, so that a value that comes and goes
// (a service whose edges all just paired) is not copied again each time,
// and the table stays within twice the live strings.
type strtab struct {
	ids   map[string]uint32
	strs  []string // by id; id 0 is ""
	refs  []int32
	free  []uint32
	zeros int // interned strings without references
}

func (t *strtab) init() {
	t.ids = make(map[string]uint32)
	t.strs, t.refs = []string{""}, []int32{0}
}

func (t *strtab) str(id uint32) string { return t.strs[id] }

func (t *strtab) ref(s string) uint32 {
	if s == "" {
		return 0
	}
	id, ok := t.ids[s]
	if !ok {
		if t.zeros > 256 && t.zeros > len(t.ids)/2 {
			t.sweep()
		}
		c := strings.Clone(s)
		if n := len(t.free); n > 0 {
			id = t.free[n-1]
			t.free = t.free[:n-1]
			t.strs[id] = c
		} else {
			id = uint32(len(t.strs))
			t.strs = append(t.strs, c)
			t.refs = append(t.refs, 0)
		}
		t.ids[c] = id
		t.zeros++
	}
	if t.refs[id] == 0 {
		t.zeros--
	}
	t.refs[id]++
	return id
}

func (t *strtab) unref(id uint32) {
	if id == 0 {
		return
	}
	if t.refs[id]--; t.refs[id] == 0 {
		t.zeros++
	}
}

func (t *strtab) sweep() {
	for id := 1; id < len(t.strs); id++ {
		if t.refs[id] == 0 && t.strs[id] != "" {
			delete(t.ids, t.strs[id])
			t.strs[id] = ""
			t.free = append(t.free, uint32(id))
		}
	}
	t.zeros = 0
}

// shardIndex spreads trace ids over 1<<bits shards. Trace ids are usually
// random, but some generators put a timestamp or a counter in them, so all
// 16 bytes are mixed, and the shard comes from the top bits of the product,
// the only ones that every input bit reaches.
func shardIndex(trace *[16]byte, bits uint) uint64 {
	h := binary.LittleEndian.Uint64(trace[:8]) ^ binary.BigEndian.Uint64(trace[8:])
	return (h * 0x9e3779b97f4a7c15) >> (64 - bits)
}

// shardCount picks up to 128 shards but keeps at least 1024 slots in each,
// so that a small store is not split into shards too small to absorb the
// unevenness of hashing.
func shardCount(maxItems int) int {
	n := 128
	for n > 1 && maxItems/n < 1024 {
		n /= 2
	}
	return n
}
