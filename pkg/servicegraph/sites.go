package servicegraph

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// Silent call sites.
//
// A client span to a peer that sends no spans (a payment provider named by
// peer.service, a host known only by server.address) can never pair: by
// Tempo's rules it waits the whole wait and then becomes a virtual edge
// or an unpaired span. At full rate such half edges are most of the edge
// store. A call site whose half edges keep expiring is therefore marked
// silent, and its later spans are settled at once, with exactly the series
// and counts waiting would give (the same labels, latency observations,
// exemplars, expired and unpaired counts), only wait earlier.
//
// A call site is the client's service, its span kind and the peer it
// names; when it names none, its span name and server.address. Its run
// counts the Expire rounds (the engine runs one a second) in which any of
// its half edges expired, with no pairing of the site in between; the site
// is silent once its run reaches silentAfter rounds. Rounds rather than
// half edges, because one lost batch (an exporter dropping a request, a
// network blip) makes dozens of a healthy site's halves expire in one or
// two rounds: counted one by one they would silence it at once, and for up
// to a wait its client spans would be settled while their server spans
// arrive and wait in vain. A site whose halves expire every round turns
// silent at its silentAfter-th round, silentAfter-1 seconds after its
// first expiration. Until then the store holds what it holds for any
// peer: a wait's worth of the site's halves, growing by a round's worth
// between rounds. Against turning silent at the first round, that costs
// up to one round of its halves at the store's peak, not silentAfter-1,
// as older halves expire as fast as new ones come (at full rate with a
// quarter of 1.1 M spans/s never paired: 0.26 M halves × PendingBytes ≈
// 30 MB on ~300 MB); the peak lasts silentAfter-1 seconds longer, and
// that many seconds of the site's spans wait instead of being settled at
// once. Each pairing of a site that had expirations doubles the run it
// needs (up to silentAfter<<maxShift rounds, about 51 minutes), so a site
// whose calls mostly pair (with some server spans lost) does not turn
// silent on a run of bad luck.
// It stops being silent when
//   - a server or consumer span arrives from a service of the name its
//     peer attribute gives (the peer started reporting), or
//   - its probe pairs: one span per wait still waits, as for any peer, so a peer
//     known only by its address that starts reporting pairs again within
//     one wait.
//
// Where the rule can differ from waiting: a silent site's span whose
// server span does come (a peer that just started reporting, under no
// name) is settled before it arrives, until the next probe pairs; and a
// client span sent twice is counted twice rather than merged.
//
// The table holds siteBuckets×siteWays entries per tenant (64 Ki, 2 MiB,
// allocated at the first expiration of a client span), set-associative so
// that a lookup reads one bucket. It never grows: a new site replaces an
// empty entry, else one not touched for staleAfter waits, else the one with
// the shortest run. A flood of unique span names only churns the entries
// of short runs, while silent sites (with runs of silentAfter rounds and
// more, touched by their probes every wait) stay. Reads take no lock;
// writes (expirations, pairings of watched halves, probes) take one of
// siteLocks stripes.
//
// Services seen serving are kept in a set of servingEntries name hashes,
// overwritten in place when a bucket is full: a name lost that way only
// means its peer can turn silent, which its next server span undoes.
const (
	siteWays       = 8
	siteBucketBits = 13
	siteBuckets    = 1 << siteBucketBits
	siteLocks      = 64
	silentAfter    = 3
	maxShift       = 10
	staleAfter     = 6
	servingBits    = 9
	servingBuckets = 1 << servingBits
)

type siteBucket struct {
	tag [siteWays]atomic.Uint64
	// state is the run of rounds with expirations (high 32 bits) and the
	// shift its threshold has (low 32 bits).
	state [siteWays]atomic.Uint64
	// probe is when the next probe may wait, touched the round in which
	// the entry was last expired into (unix ns).
	probe, touched [siteWays]atomic.Int64
}

// sites is a tenant's table of call sites and of serving services.
type sites struct {
	seed    maphash.Seed
	wait    int64
	table   atomic.Pointer[[siteBuckets]siteBucket]
	serving atomic.Pointer[[servingBuckets][siteWays]atomic.Uint64]
	locks   [siteLocks]sync.Mutex
	// silent counts half edges settled at once.
	silent atomic.Uint64
}

func (t *sites) init(wait int64) {
	t.seed = maphash.MakeSeed()
	t.wait = wait
}

func mix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

// hash returns the seeded hash of s.
func (t *sites) hash(s string) uint64 { return maphash.String(t.seed, s) }

// site returns the call site of a client-side span of the service whose
// hash is svc. Never 0, which marks no site.
func (t *sites) site(svc uint64, client bool, peer, name, addr string) uint64 {
	h := svc
	if !client {
		h ^= 0x5851f42d4c957f2d
	}
	if peer != "" {
		h = mix(h ^ t.hash(peer))
	} else {
		h = mix(mix(h^0x2545f4914f6cdd1d^t.hash(name)) ^ t.hash(addr))
	}
	return h | 1
}

// lookup finds site in b: its way and state, or -1.
func lookup(b *siteBucket, site uint64) (int, uint64) {
	for w := range b.tag {
		if b.tag[w].Load() == site {
			s := b.state[w].Load()
			if b.tag[w].Load() == site {
				return w, s
			}
		}
	}
	return -1, 0
}

func (t *sites) bucket(site uint64) (*siteBucket, *sync.Mutex) {
	tbl := t.table.Load()
	if tbl == nil {
		return nil, nil
	}
	// The top bits: the lowest one is always set.
	i := site >> (64 - siteBucketBits)
	return &tbl[i], &t.locks[i%siteLocks]
}

// settleNow reports whether a client-side half of site, naming peer, is
// to be settled at once; else whether its pairing must be reported
// (watched). A silent site lets one span per wait wait, as its probe.
func (t *sites) settleNow(site uint64, peer string, now int64) (settle, watched bool) {
	b, mu := t.bucket(site)
	if b == nil {
		return false, false
	}
	w, s := lookup(b, site)
	if w < 0 {
		return false, false
	}
	run, shift := s>>32, s&0xffffffff
	if run < silentAfter<<shift {
		return false, run > 0
	}
	if peer != "" && t.serves(peer) {
		mu.Lock()
		if b.tag[w].Load() == site {
			b.state[w].Store(shift)
		}
		mu.Unlock()
		return false, false
	}
	if p := b.probe[w].Load(); now >= p && b.probe[w].CompareAndSwap(p, now+t.wait) {
		return false, true
	}
	return true, false
}

// paired records that a half of site paired: its run of expirations ends.
func (t *sites) paired(site uint64) {
	b, mu := t.bucket(site)
	if b == nil {
		return
	}
	if w, s := lookup(b, site); w < 0 || s>>32 == 0 {
		return
	}
	mu.Lock()
	if w, s := lookup(b, site); w >= 0 && s>>32 > 0 {
		b.state[w].Store(min(s&0xffffffff+1, maxShift))
	}
	mu.Unlock()
}

// expired records that n halves of site waited the whole wait in the
// Expire round at now. A round adds one to the site's run, however many
// of its halves expired and in however many calls. Site 0 is no site.
func (t *sites) expired(site, n uint64, now int64) {
	if site == 0 || n == 0 {
		return
	}
	tbl := t.table.Load()
	if tbl == nil {
		t.table.CompareAndSwap(nil, new([siteBuckets]siteBucket))
	}
	b, mu := t.bucket(site)
	mu.Lock()
	defer mu.Unlock()
	if w, s := lookup(b, site); w >= 0 {
		run := s >> 32
		// A pairing may have ended the run earlier in this round: the
		// halves expired since start a new one.
		if run == 0 || b.touched[w].Load() != now {
			run = min(run+1, 1<<31)
		}
		b.state[w].Store(run<<32 | s&0xffffffff)
		b.touched[w].Store(now)
		return
	}
	// Replace the least useful entry: empty, else stale, else the one
	// with the shortest run.
	victim, best := 0, uint64(1<<64-1)
	for w := range b.tag {
		if b.tag[w].Load() == 0 {
			victim = w
			break
		}
		if now-b.touched[w].Load() > staleAfter*t.wait {
			victim, best = w, 0
			continue
		}
		if run := b.state[w].Load() >> 32; run < best {
			victim, best = w, run
		}
	}
	b.tag[victim].Store(0)
	b.state[victim].Store(1 << 32)
	b.probe[victim].Store(0)
	b.touched[victim].Store(now)
	b.tag[victim].Store(site)
}

// serve records that service sent a server or consumer span.
func (t *sites) serve(service string) {
	set := t.serving.Load()
	if set == nil {
		t.serving.CompareAndSwap(nil, new([servingBuckets][siteWays]atomic.Uint64))
		set = t.serving.Load()
	}
	h := t.hash(service) | 1
	b := &set[h>>(64-servingBits)]
	for w := range b {
		switch b[w].Load() {
		case h:
			return
		case 0:
			if b[w].CompareAndSwap(0, h) {
				return
			}
		}
	}
	b[(h>>1)%siteWays].Store(h)
}

// serves reports whether a service named name sent a server or consumer
// span.
func (t *sites) serves(name string) bool {
	set := t.serving.Load()
	if set == nil {
		return false
	}
	h := t.hash(name) | 1
	b := &set[h>>(64-servingBits)]
	for w := range b {
		if b[w].Load() == h {
			return true
		}
	}
	return false
}
