package servicegraph

import (
	"encoding/binary"
	"sync"
)

// key is a trace id followed by a span id: the client's own span id or the
// server's parent span id. A fixed-size array hashes without building a
// string and keeps the map free of pointers, so the garbage collector never
// scans it however many edges wait.
type key [24]byte

func makeKey(trace *[16]byte, span *[8]byte) key {
	var k key
	copy(k[:16], trace[:])
	copy(k[16:], span[:])
	return k
}

func (k *key) traceID() *[16]byte { return (*[16]byte)(k[:16]) }

// edge is one pending half edge, or a whole one on its way to the
// registry. Strings are owned copies (interned), never request memory.
type edge struct {
	key        key
	prev, next int32 // the shard's time-ordered list
	deadline   int64 // unix ns at which the half edge expires

	clientService, serverService string
	// peer is what the present side names as its other side: a client's
	// peer attribute, or a root server's.
	peer string

	clientStart, clientEnd uint64
	serverStart, serverEnd uint64
	weight                 float64

	// clientKind and serverKind are the sides' otlp.SpanKind; 0 means the
	// side has not been seen.
	clientKind, serverKind uint8
	failed                 bool
	// root marks a server side without a parent span.
	root bool
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
	edges [chunkSize]edge
	// dims holds 2×nDims values per slot: the client's, then the server's.
	dims []string
}

// shard is one lock's worth of the edge store. Spans of one trace always
// land in the same shard, so pairing never takes two locks, and pushes of
// different traces rarely wait for each other.
type shard struct {
	mu     sync.Mutex
	index  map[key]int32
	chunks []*chunk
	free   []int32
	// head is the oldest pending edge, tail the newest: edges are linked in
	// insertion order, so expiry pops from the head until it meets one that
	// is not due, and never scans the map.
	head, tail int32
	n, cap     int
	nDims      int
	_          [64]byte // keep neighbouring shards' locks on separate cache lines
}

func (sh *shard) init(capacity, nDims int) {
	sh.index = make(map[key]int32)
	sh.head, sh.tail = none, none
	sh.cap = capacity
	sh.nDims = nDims
}

func (sh *shard) edge(i int32) *edge { return &sh.chunks[i>>chunkBits].edges[i&(chunkSize-1)] }

func (sh *shard) dims(i int32) []string {
	w := 2 * sh.nDims
	o := int(i&(chunkSize-1)) * w
	return sh.chunks[i>>chunkBits].dims[o : o+w : o+w]
}

// insert takes a free slot for k, links it as the newest edge and returns
// it, or returns none when the shard is full.
func (sh *shard) insert(k key, deadline int64) int32 {
	if sh.n >= sh.cap {
		return none
	}
	if len(sh.free) == 0 {
		c := &chunk{dims: make([]string, chunkSize*2*sh.nDims)}
		base := int32(len(sh.chunks)) << chunkBits
		sh.chunks = append(sh.chunks, c)
		for j := int32(chunkSize - 1); j >= 0; j-- {
			sh.free = append(sh.free, base+j)
		}
	}
	i := sh.free[len(sh.free)-1]
	sh.free = sh.free[:len(sh.free)-1]
	e := sh.edge(i)
	*e = edge{key: k, deadline: deadline, prev: sh.tail, next: none}
	if sh.tail != none {
		sh.edge(sh.tail).next = i
	} else {
		sh.head = i
	}
	sh.tail = i
	sh.index[k] = i
	sh.n++
	return i
}

// remove unlinks slot i and returns it to the free list. The strings are
// cleared so that a recycled slot keeps nothing alive.
func (sh *shard) remove(i int32) {
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
	delete(sh.index, e.key)
	*e = edge{}
	clear(sh.dims(i))
	sh.free = append(sh.free, i)
	sh.n--
}

// shardIndex spreads trace ids over the shards. Trace ids are usually
// random, but some generators put a timestamp or a counter in front, so all
// 16 bytes are mixed.
func shardIndex(trace *[16]byte, mask uint64) uint64 {
	h := binary.LittleEndian.Uint64(trace[:8]) ^ binary.LittleEndian.Uint64(trace[8:])
	h *= 0x9e3779b97f4a7c15
	return (h >> 32) & mask
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
