package servicegraph

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"

	"github.com/spangraph/spangraph/pkg/budget"
	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/registry"
)

// silentCalls are n client spans of service fe from trace first on, with
// varied durations, failures and weights, as one request.
func silentCalls(t testing.TB, first uint64, n int, kind otlp.SpanKind, attrs ...*commonpb.KeyValue) []res {
	var spans []sp
	for i := 0; i < n; i++ {
		s := client(first+uint64(i), attrs...)
		s.kind = kind
		s.end = time.Duration(1+i*37%300) * time.Millisecond
		s.err = i%3 == 0
		if i%4 == 0 {
			s.attrs = append(s.attrs[:len(s.attrs):len(s.attrs)], otlptest.Float("sampling.multiplier", 5))
		}
		spans = append(spans, s)
	}
	return []res{{service: "fe", attrs: []*commonpb.KeyValue{otlptest.Str("env", "prod")}, spans: spans}}
}

// TestSilentSites: once a call site's half edges have expired in
// silentAfter Expire rounds in a row, its spans are settled at once, all
// but one probe per wait, and the series, exemplars aside, are those that
// waiting gives.
func TestSilentSites(t *testing.T) {
	cases := []struct {
		name  string
		cfg   func(*Config)
		kind  otlp.SpanKind
		attrs []*commonpb.KeyValue
		// virtual: the site becomes virtual edges, else unpaired spans.
		virtual bool
	}{
		{name: "peer named by peer.service", kind: otlp.SpanKindClient, attrs: []*commonpb.KeyValue{otlptest.Str("peer.service", "stripe")}, virtual: true},
		{name: "producer to a named peer", kind: otlp.SpanKindProducer, attrs: []*commonpb.KeyValue{otlptest.Str("peer.service", "queue")}, virtual: true},
		{name: "host known by server.address only", kind: otlp.SpanKindClient, attrs: []*commonpb.KeyValue{otlptest.Str("server.address", "api.example")}},
		{
			name: "dimensions and virtual node label",
			cfg: func(c *Config) {
				c.Dimensions = []string{"env", "http.route"}
				c.EnableVirtualNodeLabel = true
				c.EnableClientServerPrefix = true
			},
			kind:    otlp.SpanKindClient,
			attrs:   []*commonpb.KeyValue{otlptest.Str("peer.service", "stripe"), otlptest.Str("http.route", "/pay")},
			virtual: true,
		},
	}
	const (
		perRound = 4  // spans expiring in each round before the site is silent
		later    = 25 // spans pushed once the site is silent
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.SpanMultiplierKey = "sampling.multiplier"
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			run := func(silent bool) (collected, Stats) {
				reg := registry.New(registry.Config{})
				clock := newClock()
				p, err := New(cfg, reg, Options{Now: clock.Now})
				if err != nil {
					t.Fatal(err)
				}
				// Waiting: every span is pushed before any expired, and
				// they expire in one round. Silent: each round's spans
				// expire before the next round's are pushed.
				for r := 0; r < silentAfter; r++ {
					p.Push(makeBatch(t, silentCalls(t, uint64(1+r*perRound), perRound, tc.kind, tc.attrs...)...))
					if silent {
						clock.Advance(cfg.Wait)
						p.Expire()
					}
				}
				p.Push(makeBatch(t, silentCalls(t, 1000, later, tc.kind, tc.attrs...)...))
				if silent {
					// One probe waits; the others were settled.
					if st := p.Stats(); st.Pending != 1 || st.Silent != later-1 {
						t.Errorf("after the site turned silent: %+v, want 1 pending and %d silent", st, later-1)
					}
				}
				clock.Advance(cfg.Wait)
				p.Expire()
				st := p.Stats()
				st.Silent = 0
				return collect(t, reg), st
			}
			waited, waitedStats := run(false)
			silent, silentStats := run(true)
			// The same observations in another order: sums may differ in
			// the last bit, which checkSeries allows.
			checkSeries(t, silent, waited.series)
			for name := range silent.series {
				if _, ok := waited.series[name]; !ok {
					t.Errorf("%s only when silent: %v", name, silent.series[name])
				}
			}
			if waitedStats != silentStats {
				t.Errorf("stats differ: waiting %+v, silent %+v", waitedStats, silentStats)
			}
			n := uint64(silentAfter*perRound + later)
			want := Stats{Expired: n, Unpaired: n}
			if tc.virtual {
				want = Stats{Expired: n, Completed: n, Virtual: n}
			}
			want.Capacity = silentStats.Capacity
			if silentStats != want {
				t.Errorf("stats %+v, want %+v", silentStats, want)
			}
			if len(silent.series[MetricRequestClientSeconds+"_bucket"]) == 0 && tc.virtual {
				t.Errorf("no latency buckets compared")
			}
		})
	}
}

// silence pushes two spans of a site and lets them expire, silentAfter
// rounds in a row, then checks that the site is silent.
func silence(t *testing.T, p *Processor, clock *fakeClock, attrs ...*commonpb.KeyValue) {
	t.Helper()
	for r := uint64(1); r <= silentAfter; r++ {
		p.Push(makeBatch(t, silentCalls(t, r<<32, 2, otlp.SpanKindClient, attrs...)...))
		clock.Advance(p.cfg.Wait)
		p.Expire()
	}
	before := p.Stats().Silent
	p.Push(makeBatch(t, silentCalls(t, 100, 2, otlp.SpanKindClient, attrs...)...))
	if got := p.Stats().Silent - before; got != 1 {
		t.Fatalf("%d of a probe and a span settled at once, want 1: the site is not silent", got)
	}
}

// TestSilentSiteReportsAgain: a host known only by its address that starts
// sending server spans pairs again once a probe has paired, within one
// wait; a span sent before that probe is settled as unpaired.
func TestSilentSiteReportsAgain(t *testing.T) {
	reg := registry.New(registry.Config{})
	clock := newClock()
	p, err := New(DefaultConfig(), reg, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	addr := otlptest.Str("server.address", "api.example")
	silence(t, p, clock, addr) // its probe (trace 100) waits
	// The host starts reporting: the next span pairs but is settled,
	// the probe claimed the period.
	fe := func(trace uint64) *otlp.Batch {
		return makeBatch(t, res{service: "fe", spans: []sp{client(trace, addr)}})
	}
	be := func(trace uint64) *otlp.Batch { return makeBatch(t, res{service: "be", spans: []sp{server(trace)}}) }
	p.Push(fe(200))
	p.Push(be(200))
	clock.Advance(p.cfg.Wait) // the probe expires, unpaired; a new period
	p.Expire()
	// The next probe pairs, and pairing is back for every span after it.
	p.Push(fe(300))
	p.Push(be(300))
	for trace := uint64(400); trace < 410; trace++ {
		p.Push(fe(trace))
		p.Push(be(trace))
	}
	clock.Advance(p.cfg.Wait)
	p.Expire()
	checkSeries(t, collect(t, reg), map[string]series{
		total:    {`{client="fe",server="be"}`: 11},
		srvCount: {`{client="fe",server="be"}`: 11},
		cliCount: {`{client="fe",server="be"}`: 11},
		// 2 a round to turn silent, 1 settled, its probe, the span before
		// the pairing probe, and the server span that came for it.
		unpaired: {`{client="fe"}`: 2*silentAfter + 3, `{server="be"}`: 1},
	})
	if st := p.Stats(); st.Pending != 0 || st.Silent != 2 {
		t.Errorf("stats %+v, want nothing pending and 2 settled at once", st)
	}
}

// TestSilentSiteServerSpanOfPeer: a server span from a service named like
// the silent site's peer ends the silence at once.
func TestSilentSiteServerSpanOfPeer(t *testing.T) {
	clock := newClock()
	p, err := New(DefaultConfig(), registry.New(registry.Config{}), Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	silence(t, p, clock, otlptest.Str("peer.service", "stripe"))
	p.Push(makeBatch(t, res{service: "stripe", spans: []sp{server(50)}}))
	before := p.Stats()
	p.Push(makeBatch(t, silentCalls(t, 500, 5, otlp.SpanKindClient, otlptest.Str("peer.service", "stripe"))...))
	st := p.Stats()
	if st.Silent != before.Silent || st.Pending != before.Pending+5 {
		t.Errorf("after a span of stripe: %+v, before %+v; want the 5 spans to wait", st, before)
	}
}

// TestSitesMostlyPairingStayAwake: a site whose calls pair between runs of
// rounds with expirations needs a longer run each time, so it does not
// turn silent on runs that once made it so.
func TestSitesMostlyPairingStayAwake(t *testing.T) {
	clock := newClock()
	p, err := New(DefaultConfig(), registry.New(registry.Config{}), Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	trace := uint64(1)
	// expireRounds lets a few calls expire in each of n rounds in a row.
	expireRounds := func(n int) {
		for range n {
			p.Push(makeBatch(t, silentCalls(t, trace, 5, otlp.SpanKindClient)...))
			trace += 5
			clock.Advance(p.cfg.Wait)
			p.Expire()
		}
	}
	for range 5 {
		expireRounds(silentAfter - 1)
		p.Push(makeBatch(t, res{service: "fe", spans: []sp{client(trace)}}))
		p.Push(makeBatch(t, res{service: "be", spans: []sp{server(trace)}}))
		trace++
	}
	// A run of silentAfter+1 rounds would have been enough before any
	// pairing.
	expireRounds(silentAfter + 1)
	p.Push(makeBatch(t, silentCalls(t, trace, 3, otlp.SpanKindClient)...))
	if st := p.Stats(); st.Silent != 0 || st.Pending != 3 {
		t.Errorf("stats %+v, want 3 pending and none settled at once", st)
	}
}

// TestSiteRunCountsRounds: a call site's run grows by one per Expire
// round with expirations, however many halves expired in it and in how
// many calls; a pairing ends it and doubles the run the site needs.
func TestSiteRunCountsRounds(t *testing.T) {
	const second = int64(time.Second)
	// op is an expiration of n halves in the round at second at, or a
	// pairing when n is 0.
	type op struct {
		n  uint64
		at int64
	}
	for _, tc := range []struct {
		name       string
		ops        []op
		run, shift uint64
	}{
		{name: "one round, one call", ops: []op{{50, 1}}, run: 1},
		{name: "one round, several calls", ops: []op{{20, 1}, {30, 1}, {1, 1}}, run: 1},
		{name: "rounds in a row", ops: []op{{2, 1}, {40, 1}, {1, 2}, {1, 3}}, run: 3},
		{name: "a pairing ends the run", ops: []op{{1, 1}, {1, 2}, {}}, shift: 1},
		{name: "a pairing within a round", ops: []op{{1, 1}, {1, 2}, {}, {5, 2}, {5, 3}}, run: 2, shift: 1},
		{name: "pairings double the run needed", ops: []op{{1, 1}, {}, {1, 2}, {}, {1, 3}}, run: 1, shift: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st sites
			st.init(10 * second)
			site := st.site(st.hash("fe"), true, "stripe", "", "")
			for _, o := range tc.ops {
				if o.n == 0 {
					st.paired(site)
				} else {
					st.expired(site, o.n, o.at*second)
				}
			}
			b, _ := st.bucket(site)
			w, s := lookup(b, site)
			if w < 0 {
				t.Fatal("site not in the table")
			}
			if run, shift := s>>32, s&0xffffffff; run != tc.run || shift != tc.shift {
				t.Errorf("run %d, shift %d; want %d, %d", run, shift, tc.run, tc.shift)
			}
		})
	}
}

// TestLostBatchKeepsSiteAwake: a healthy site that loses one batch of
// client spans (their server spans never come) does not turn silent when
// they expire, in one round or across two: its next client spans wait
// and pair. A site whose spans never pair, called all along, still turns
// silent at its silentAfter-th round with expirations.
func TestLostBatchKeepsSiteAwake(t *testing.T) {
	for _, tc := range []struct {
		name string
		// gap between the two halves of the lost batch.
		gap time.Duration
	}{
		{name: "expires in one round"},
		{name: "expires across two rounds", gap: 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := registry.New(registry.Config{})
			clock := newClock()
			p, err := New(DefaultConfig(), reg, Options{Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			healthy := func(first uint64, n int) {
				var clients, servers []sp
				for i := range n {
					clients = append(clients, client(first+uint64(i)))
					servers = append(servers, server(first+uint64(i)))
				}
				before := p.Stats().Silent
				p.Push(makeBatch(t, res{service: "fe", spans: clients}))
				p.Push(makeBatch(t, res{service: "be", spans: servers}))
				if st := p.Stats(); st.Silent != before {
					t.Fatalf("%d spans of the healthy site settled at once: %+v", st.Silent-before, st)
				}
			}
			stripe := otlptest.Str("peer.service", "stripe")
			trace := uint64(1 << 32)
			// call pushes n calls of pay to stripe, which sends no spans,
			// and returns how many of them were settled at once.
			call := func(n int) uint64 {
				before := p.Stats().Silent
				for range n {
					p.Push(makeBatch(t, res{service: "pay", spans: []sp{client(trace, stripe)}}))
					trace++
				}
				return p.Stats().Silent - before
			}
			start := clock.Now()
			healthy(1, 20)
			call(1)
			// The lost batch: 50 calls of fe whose server spans never
			// come, half of them gap later.
			p.Push(makeBatch(t, silentCalls(t, 1000, 25, otlp.SpanKindClient)...))
			clock.Advance(tc.gap)
			p.Push(makeBatch(t, silentCalls(t, 1025, 25, otlp.SpanKindClient)...))
			// An Expire round at every second from start, as the engine
			// runs them; stripe is called between rounds.
			waitSecs := int(p.cfg.Wait / time.Second)
			for sec := 1; ; sec++ {
				clock.Advance(start.Add(time.Duration(sec) * time.Second).Sub(clock.Now()))
				p.Expire()
				if sec == waitSecs+1 {
					// The lost batch has expired.
					healthy(100, 10)
				}
				if sec >= waitSecs {
					// stripe's calls have expired in every round since
					// its first; of two calls, a silent site lets one
					// wait as its probe.
					round := sec - waitSecs + 1
					settled, silent := call(2), round >= silentAfter
					if (settled == 1) != silent {
						t.Fatalf("round %d with expirations: %d of 2 calls to stripe settled at once, want silent %v", round, settled, silent)
					}
					if silent {
						break
					}
				}
				call(1)
			}
			clock.Advance(p.cfg.Wait)
			p.Expire()
			stripeCalls := float64(trace - 1<<32)
			edges := series{feBe: 30, `{client="pay",connection_type="virtual_node",server="stripe"}`: stripeCalls}
			checkSeries(t, collect(t, reg), map[string]series{
				total:    edges,
				srvCount: edges,
				cliCount: edges,
				unpaired: {`{client="fe"}`: 50},
			})
		})
	}
}

// TestSiteTableBounded: a million unique span names of calls that never
// pair fill the call-site table up to its fixed size and no further, and
// do not evict a silent site whose probes keep it fresh.
func TestSiteTableBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("pushes a million spans")
	}
	cfg := DefaultConfig()
	cfg.MaxItems = 1 << 18
	clock := newClock()
	p, err := New(cfg, registry.New(registry.Config{}), Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	stripe := otlptest.Str("peer.service", "stripe")
	silence(t, p, clock, stripe)
	batch := clientBatch(t, 1000, false)
	spans := batch.Resources[0].Spans
	const total, round = 1 << 20, 1 << 17
	var next uint64
	for done := 0; done < total; {
		for n := 0; n < round; n += len(spans) {
			for i := range spans {
				next++
				binary.BigEndian.PutUint64(spans[i].TraceID[8:], next)
				spans[i].Name = fmt.Sprintf("op-%d", next)
			}
			p.Push(batch)
		}
		done += round
		// stripe's probe of this wait.
		p.Push(makeBatch(t, silentCalls(t, next<<8, 1, otlp.SpanKindClient, stripe)...))
		clock.Advance(cfg.Wait)
		p.Expire()
	}
	if st := p.Stats(); st.Dropped != 0 || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
	used := 0
	for i := range p.sites.table.Load() {
		b := &p.sites.table.Load()[i]
		for w := range b.tag {
			if b.tag[w].Load() != 0 {
				used++
			}
		}
	}
	if used > siteBuckets*siteWays {
		t.Errorf("%d call sites held, more than the table's %d", used, siteBuckets*siteWays)
	}
	t.Logf("%d call sites held after %d unique span names", used, total)
	before := p.Stats().Silent
	p.Push(makeBatch(t, silentCalls(t, 1<<40, 2, otlp.SpanKindClient, stripe)...))
	if p.Stats().Silent == before {
		t.Errorf("stripe is no longer silent after the flood")
	}
}

// TestShardIndex checks the open-addressed index against a map through
// random inserts and removals, with keys crowded into few tags' homes.
func TestShardIndex(t *testing.T) {
	var sh shard
	sh.init(1<<12, 1, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[key]int32{}
	var keys []key
	h := half{kind: otlp.SpanKindClient}
	for step := 0; step < 200_000; step++ {
		if len(keys) == 0 || (rng.IntN(2) == 0 && sh.n < sh.cap) {
			var k key
			binary.LittleEndian.PutUint64(k[16:], rng.Uint64N(1<<14))
			binary.LittleEndian.PutUint64(k[:8], rng.Uint64N(4))
			if _, ok := want[k]; ok {
				continue
			}
			i := sh.insert(&k, 0)
			h.service = fmt.Sprint("svc-", rng.IntN(50))
			sh.put(i, &h, []string{h.service})
			want[k] = i
			keys = append(keys, k)
		} else {
			j := rng.IntN(len(keys))
			k := keys[j]
			keys[j] = keys[len(keys)-1]
			keys = keys[:len(keys)-1]
			if got := sh.find(&k); got != want[k] {
				t.Fatalf("step %d: find %x = %d, want %d", step, k, got, want[k])
			}
			sh.remove(want[k])
			delete(want, k)
			if got := sh.find(&k); got != none {
				t.Fatalf("step %d: removed key found at %d", step, got)
			}
		}
	}
	for k, i := range want {
		if got := sh.find(&k); got != i {
			t.Fatalf("find %x = %d, want %d", k, got, i)
		}
		var got half
		sh.get(i, &got, make([]string, 1))
		if got.service == "" {
			t.Fatalf("slot %d lost its service", i)
		}
	}
	if sh.n != len(want) || len(sh.strs.ids) > 2*50+256 {
		t.Errorf("%d pending, want %d; %d strings interned", sh.n, len(want), len(sh.strs.ids))
	}
}

// TestStoreShrinksAfterBurst: once a burst of half edges has expired, the
// shards give back their chunks, and what still waits survives the move.
func TestStoreShrinksAfterBurst(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dimensions = []string{"env"}
	reg := registry.New(registry.Config{})
	clock := newClock()
	p, err := New(cfg, reg, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	batch := clientBatch(t, 1000, true)
	var next uint64
	fillClients(p, batch, &next, 200_000)
	clock.Advance(cfg.Wait / 2)
	// These wait on across the compaction, then pair.
	p.Push(makeBatch(t, res{service: "fe", attrs: []*commonpb.KeyValue{otlptest.Str("env", "prod")}, spans: []sp{client(1 << 40), client(2 << 40), client(3 << 40)}}))
	clock.Advance(cfg.Wait / 2)
	p.Expire()
	for i := range p.shards {
		if sh := &p.shards[i]; len(sh.chunks) > 4 {
			t.Fatalf("shard %d keeps %d chunks for %d pending edges", i, len(sh.chunks), sh.n)
		}
	}
	p.Push(makeBatch(t, res{service: "be", spans: []sp{server(1 << 40), server(2 << 40), server(3 << 40)}}))
	if st := p.Stats(); st.Pending != 0 || st.Completed != 200_000+3 {
		t.Fatalf("stats %+v", st)
	}
	checkSeries(t, collect(t, reg), map[string]series{
		total:    {`{client="frontend",connection_type="virtual_node",server="stripe"}`: 200_000, `{client="fe",env="prod",server="be"}`: 3},
		cliCount: {`{client="frontend",connection_type="virtual_node",server="stripe"}`: 200_000, `{client="fe",env="prod",server="be"}`: 3},
		srvCount: {`{client="frontend",connection_type="virtual_node",server="stripe"}`: 200_000, `{client="fe",env="prod",server="be"}`: 3},
	})
}

// TestStoresShareTheMemoryPool: the tenants' edge stores draw chunks from
// one pool; when it is used up, a span that needs a new chunk is dropped
// and counted, and memory a store gives back (compaction, Close) fits
// again.
func TestStoresShareTheMemoryPool(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxItems = 2000 // one shard: its chunks are taken one after another
	chunk := int64(chunkSize * PendingBytes(0))
	pool := budget.NewPool("memory_limit", budget.Bytes(3*chunk))
	clock := newClock()
	a, err := New(cfg, registry.New(registry.Config{}), Options{Now: clock.Now, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg, registry.New(registry.Config{}), Options{Now: clock.Now, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	batch := clientBatch(t, 100, true)
	var next uint64
	fillClients(a, batch, &next, 2*chunkSize)  // two chunks
	fillClients(b, batch, &next, chunkSize+10) // one chunk, then none left
	if pool.InUse() != pool.Size() {
		t.Fatalf("pool in use %d of %d", pool.InUse(), pool.Size())
	}
	if st := b.Stats(); st.Pending != chunkSize || st.Dropped != 10 {
		t.Fatalf("b: %+v; want %d pending and 10 dropped", st, chunkSize)
	}
	a.Close()
	if pool.InUse() != chunk {
		t.Fatalf("after a.Close: pool in use %d, want one chunk (%d)", pool.InUse(), chunk)
	}
	fillClients(b, batch, &next, 10)
	if st := b.Stats(); st.Pending != chunkSize+10 || st.Dropped != 10 {
		t.Fatalf("b after a's memory came back: %+v", st)
	}
}
