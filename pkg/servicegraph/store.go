package servicegraph

import (
	"encoding/binary"
	"sync"

	"github.com/spangraph/spangraph/pkg/otlp"
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

// half is what one span tells about its end of a call. Strings of a half
// in the store are owned copies, never request memory.
type half struct {
	service string
	// peer is the span's peer attribute: what it names as its other side.
	peer       string
	start, end uint64 // unix ns
	weight     float64
	kind       otlp.SpanKind
	failed     bool
	// root marks a server span without a parent span.
	root bool
}

// pending is a half edge waiting in the store for its other side. It holds
// one side only: the other one, when it comes, completes the edge and never
// needs storing.
type pending struct {
	key        key
	prev, next int32 // the shard's time-ordered list
	deadline   int64 // unix ns at which the half edge expires
	half
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
	// dims holds nDims dimension values per slot.
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

func (sh *shard) edge(i int32) *pending { return &sh.chunks[i>>chunkBits].edges[i&(chunkSize-1)] }

func (sh *shard) dims(i int32) []string {
	o := int(i&(chunkSize-1)) * sh.nDims
	return sh.chunks[i>>chunkBits].dims[o : o+sh.nDims : o+sh.nDims]
}

// insert takes a free slot for k, links it as the newest edge and returns
// it, or returns none when the shard is full.
func (sh *shard) insert(k key, deadline int64) int32 {
	if sh.n >= sh.cap {
		return none
	}
	if len(sh.free) == 0 {
		c := &chunk{dims: make([]string, chunkSize*sh.nDims)}
		base := int32(len(sh.chunks)) << chunkBits
		sh.chunks = append(sh.chunks, c)
		for j := int32(chunkSize - 1); j >= 0; j-- {
			sh.free = append(sh.free, base+j)
		}
	}
	i := sh.free[len(sh.free)-1]
	sh.free = sh.free[:len(sh.free)-1]
	e := sh.edge(i)
	*e = pending{key: k, deadline: deadline, prev: sh.tail, next: none}
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
	*e = pending{}
	clear(sh.dims(i))
	sh.free = append(sh.free, i)
	sh.n--
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
