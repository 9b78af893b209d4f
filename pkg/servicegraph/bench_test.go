package servicegraph

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"

	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/registry"
)

const pairsPerBatch = 100

// httpAttrs are the attributes of a typical instrumented HTTP span.
func httpAttrs(kind string) []*commonpb.KeyValue {
	return []*commonpb.KeyValue{
		otlptest.Str("http.request.method", "POST"), otlptest.Str("http.route", "/checkout"),
		otlptest.Int("http.response.status_code", 200), otlptest.Str("url.scheme", "https"),
		otlptest.Str("url.path", "/checkout"), otlptest.Str("server.address", "checkout.internal"),
		otlptest.Int("server.port", 8443), otlptest.Str("network.protocol.version", "1.1"),
		otlptest.Str("user_agent.original", "Mozilla/5.0"), otlptest.Str("span.origin", kind),
	}
}

// pairBatches returns pairsPerBatch client/server pairs of distinct
// traces, numbered from first: in one batch (as from a Collector batching
// by trace) and split into a batch per service (as from SDK exporters).
// With dims, each span carries ten typical HTTP attributes and each side
// an env (resource) and an http.route (span) dimension.
func pairBatches(b testing.TB, first uint64, dims bool) (one, clients, servers *otlp.Batch) {
	var cs, ss []sp
	for i := uint64(0); i < pairsPerBatch; i++ {
		c, s := client(first+i), server(first+i)
		if dims {
			c.attrs, s.attrs = httpAttrs("client"), httpAttrs("server")
		}
		cs, ss = append(cs, c), append(ss, s)
	}
	var attrs []*commonpb.KeyValue
	if dims {
		attrs = []*commonpb.KeyValue{otlptest.Str("env", "prod")}
	}
	fe := res{service: "frontend", attrs: attrs, spans: cs}
	co := res{service: "checkout", attrs: attrs, spans: ss}
	return makeBatch(b, fe, co), makeBatch(b, fe), makeBatch(b, co)
}

func benchProcessor(b testing.TB, dims bool) *Processor {
	cfg := DefaultConfig()
	if dims {
		cfg.Dimensions = []string{"env", "http.route"}
	}
	p, err := New(cfg, registry.New(registry.Config{}), Options{})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkPairing measures one client+server pair per op in the steady
// state, the edge going to the registry: with both sides in one request
// (paired inside it), and with each service's spans in a request of its
// own, where the client waits in the shared store for the server; there
// also with 500 000 other half edges waiting, as at full rate, when the
// store no longer fits in the caches.
func BenchmarkPairing(b *testing.B) {
	for _, bc := range []struct {
		name    string
		dims    bool
		split   bool
		waiting int
	}{
		{"one request/bare", false, false, 0},
		{"one request/attrs=10,dims=2", true, false, 0},
		{"split/bare", false, true, 0},
		{"split/attrs=10,dims=2", true, true, 0},
		{"split/bare,500k waiting", false, true, 500_000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := benchProcessor(b, bc.dims)
			if bc.waiting > 0 {
				next := uint64(1 << 40)
				fillClients(p, clientBatch(b, 1000, true), &next, bc.waiting)
			}
			one, clients, servers := pairBatches(b, 0, bc.dims)
			push := func() {
				if bc.split {
					p.Push(clients)
					p.Push(servers)
				} else {
					p.Push(one)
				}
			}
			push()
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; n += pairsPerBatch {
				push()
			}
			b.StopTimer()
			if st := p.Stats(); st.Pending != bc.waiting || st.Dropped != 0 {
				b.Fatalf("stats %+v", st)
			}
		})
	}
}

// BenchmarkPairingInFlight measures one client+server pair per op as SDK
// exporters send them: each service's spans in requests of their own, new
// trace ids in every request, and a server request arriving only after
// inFlight other client requests, so that the store holds thousands of
// pairs in flight (besides other half edges waiting out the whole wait):
// a server finds its client among them, where BenchmarkPairing/split
// finds it in the slot the previous server just freed.
func BenchmarkPairingInFlight(b *testing.B) {
	const inFlight = 64
	for _, waiting := range []int{0, 200_000} {
		b.Run(fmt.Sprintf("waiting=%d", waiting), func(b *testing.B) {
			p := benchProcessor(b, false)
			next := uint64(1 << 40)
			if waiting > 0 {
				fillClients(p, clientBatch(b, 1000, true), &next, waiting)
			}
			_, clients, servers := pairBatches(b, 0, false)
			// Request r carries traces r*pairsPerBatch+1 onwards.
			number := func(batch *otlp.Batch, r int) {
				spans := batch.Resources[0].Spans
				for i := range spans {
					binary.BigEndian.PutUint64(spans[i].TraceID[8:], uint64(r*pairsPerBatch+i+1))
				}
			}
			r := 0
			push := func() {
				number(clients, r)
				p.Push(clients)
				if r >= inFlight {
					number(servers, r-inFlight)
					p.Push(servers)
				}
				r++
			}
			for r < 2*inFlight {
				push()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; n += pairsPerBatch {
				push()
			}
			b.StopTimer()
			if st := p.Stats(); st.Pending != waiting+inFlight*pairsPerBatch || st.Dropped != 0 {
				b.Fatalf("stats %+v", st)
			}
		})
	}
}

// BenchmarkPushParallel is BenchmarkPairing from every core at once, each
// goroutine with traces of its own.
func BenchmarkPushParallel(b *testing.B) {
	p := benchProcessor(b, true)
	batches := make([]*otlp.Batch, 64)
	for i := range batches {
		batches[i], _, _ = pairBatches(b, uint64(i)*pairsPerBatch, true)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		batch := batches[next.Add(1)-1]
		for i := 0; pb.Next(); i++ {
			if i%pairsPerBatch == 0 {
				p.Push(batch)
			}
		}
	})
	b.StopTimer()
	if st := p.Stats(); st.Pending != 0 || st.Dropped != 0 {
		b.Fatalf("stats %+v", st)
	}
}

// fillClients pushes n client half edges that name a peer, so each
// becomes a virtual edge when it expires. The batch's trace ids are
// rewritten in place to keep every key distinct.
func fillClients(p *Processor, batch *otlp.Batch, next *uint64, n int) {
	spans := batch.Resources[0].Spans
	for n > 0 {
		k := min(n, len(spans))
		for i := 0; i < k; i++ {
			*next++
			binary.BigEndian.PutUint64(spans[i].TraceID[8:], *next)
		}
		batch.Resources[0].Spans = spans[:k]
		p.Push(batch)
		n -= k
	}
	batch.Resources[0].Spans = spans
}

func clientBatch(b testing.TB, n int, peer bool) *otlp.Batch {
	spans := make([]sp, n)
	for i := range spans {
		spans[i] = client(0)
		if peer {
			spans[i].attrs = []*commonpb.KeyValue{otlptest.Str("peer.service", "stripe")}
		}
	}
	return makeBatch(b, res{service: "frontend", spans: spans})
}

// BenchmarkExpire measures one expired half edge per op: taking it off the
// store and recording it as a virtual edge.
func BenchmarkExpire(b *testing.B) {
	clock := newClock()
	cfg := DefaultConfig()
	p, err := New(cfg, registry.New(registry.Config{}), Options{Now: clock.Now})
	if err != nil {
		b.Fatal(err)
	}
	batch := clientBatch(b, 1000, true)
	var next uint64
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(b.N-done, 100_000)
		b.StopTimer()
		// A peer of its own each round, or the call site would turn
		// silent and its spans would no longer wait.
		peer := fmt.Sprintf("stripe-%d", done)
		for i := range batch.Resources[0].Spans {
			batch.Resources[0].Spans[i].Attributes[0].Value.Str = peer
		}
		fillClients(p, batch, &next, n)
		clock.Advance(cfg.Wait)
		b.StartTimer()
		p.Expire()
		done += n
	}
	b.StopTimer()
	if st := p.Stats(); st.Pending != 0 || st.Virtual != uint64(b.N) {
		b.Fatalf("stats %+v, want %d virtual", st, b.N)
	}
}

// TestPendingBytes backs PendingBytes and the sizing in DefaultMaxItems:
// it measures the heap taken by pending half edges. (Before the compact
// layout: 170 bytes, 207 with two dimensions.)
func TestPendingBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a store")
	}
	const n = 1 << 18
	for _, c := range []struct {
		dims  int
		limit float64
	}{{0, 120}, {2, 128}} {
		if pb := float64(PendingBytes(c.dims)); pb > c.limit {
			t.Errorf("PendingBytes(%d) = %.0f, above %.0f", c.dims, pb, c.limit)
		}
		cfg := DefaultConfig()
		for i := 0; i < c.dims; i++ {
			cfg.Dimensions = append(cfg.Dimensions, string(rune('a'+i)))
		}
		p, err := New(cfg, registry.New(registry.Config{}), Options{})
		if err != nil {
			t.Fatal(err)
		}
		batch := clientBatch(t, 1000, false)
		var next uint64
		fillClients(p, batch, &next, 1000) // warm the scratch state
		before := heap()
		fillClients(p, batch, &next, n)
		perItem := float64(heap()-before) / n
		runtime.KeepAlive(p)
		t.Logf("%d dimensions: %.0f bytes per pending half edge", c.dims, perItem)
		if pb := float64(PendingBytes(c.dims)); perItem > pb {
			t.Errorf("%d dimensions: %.0f bytes per pending half edge, PendingBytes says at most %.0f", c.dims, perItem, pb)
		}
	}
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
