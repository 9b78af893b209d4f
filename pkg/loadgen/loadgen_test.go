package loadgen

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/otlp"
)

func decode(t *testing.T, body []byte) map[[16]byte]int {
	t.Helper()
	b := otlp.GetBatch()
	defer b.Release()
	if err := b.DecodeProto(append([]byte(nil), body...)); err != nil {
		t.Fatal(err)
	}
	traces := map[[16]byte]int{}
	for _, rs := range b.Resources {
		for _, s := range rs.Spans {
			traces[s.TraceID]++
		}
	}
	return traces
}

func TestShopTraces(t *testing.T) {
	gen := NewGenerator(Shop(15, rand.New(rand.NewPCG(1, 2))), 1)
	req := gen.Request(50, time.Now())
	services := map[string]bool{}
	kinds := map[string]int{}
	for _, rs := range req.ResourceSpans {
		services[rs.Resource.Attributes[0].Value.GetStringValue()] = true
		for _, s := range rs.ScopeSpans[0].Spans {
			kinds[s.Kind.String()]++
			if len(s.TraceId) != 16 || len(s.SpanId) != 8 || s.EndTimeUnixNano < s.StartTimeUnixNano {
				t.Fatalf("bad span %v", s)
			}
		}
	}
	if !services["frontend"] || !services["checkout"] {
		t.Errorf("services %v lack the shop's core", services)
	}
	for _, k := range []string{"SPAN_KIND_SERVER", "SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"} {
		if kinds[k] == 0 {
			t.Errorf("no %s spans in %v", k, kinds)
		}
	}
}

// Re-sent payloads must be new traces with their spans still together.
func TestUniqueTraceIDs(t *testing.T) {
	gen := NewGenerator(Shop(10, rand.New(rand.NewPCG(1, 2))), 1)
	body, _ := proto.Marshal(gen.Request(20, time.Now()))
	p := payload{body: body, traceIDs: traceIDOffsets(body)}
	orig := decode(t, body)
	if len(p.traceIDs) == 0 || len(orig) != 20 {
		t.Fatalf("%d offsets, %d traces", len(p.traceIDs), len(orig))
	}
	a := decode(t, p.unique(1, nil))
	b := decode(t, p.unique(2, nil))
	if len(a) != 20 || len(b) != 20 {
		t.Fatalf("traces split: %d and %d, want 20", len(a), len(b))
	}
	for id, n := range a {
		if _, clash := orig[id]; clash {
			t.Errorf("trace %x was not changed", id)
		}
		if _, clash := b[id]; clash {
			t.Errorf("trace %x repeats across sends", id)
		}
		if n == 0 {
			t.Error("empty trace")
		}
	}
}

// TestSplitByService: each part holds one service's spans; the parts of a
// batch get one uniqueness number, so a client span and its server span
// keep one trace id across requests, and the next pass gets new ones.
func TestSplitByService(t *testing.T) {
	opts := DefaultOptions()
	opts.SplitByService, opts.TracesPerRequest = true, 20
	gen := NewGenerator(Shop(10, rand.New(rand.NewPCG(1, 2))), 1)
	payloads, err := build(opts, gen, 2)
	if err != nil {
		t.Fatal(err)
	}
	pl := newPool(payloads)
	pass := func(round int) map[[16]byte]int {
		traces := map[[16]byte]int{}
		for i := range payloads {
			p, seq := pl.get(round*len(payloads) + i)
			if p.group != 0 {
				break
			}
			for id, n := range decode(t, p.unique(seq, nil)) {
				traces[id] += n
			}
		}
		return traces
	}
	parts := 0
	for _, p := range payloads {
		b := otlp.GetBatch()
		if err := b.DecodeProto(append([]byte(nil), p.body...)); err != nil {
			t.Fatal(err)
		}
		if len(b.Resources) != 1 {
			t.Errorf("a part holds %d services, want 1", len(b.Resources))
		}
		b.Release()
		if p.group == 0 {
			parts++
		}
	}
	first, second := pass(0), pass(1)
	if parts < 5 || len(first) != 20 || len(second) != 20 {
		t.Fatalf("%d parts in the first batch; %d and %d traces across them, want 20", parts, len(first), len(second))
	}
	for id := range first {
		if _, again := second[id]; again {
			t.Errorf("trace %x repeats in the next pass", id)
		}
	}
}

// TestRebuildKeepsBatchesWhole: a rebuilt pool takes over at the start of
// the next pass, so that a pass under way, whose split parts must pair,
// ends on the payloads it began with.
func TestRebuildKeepsBatchesWhole(t *testing.T) {
	mk := func(tag string, n int) []payload {
		out := make([]payload, n)
		for i := range out {
			out[i] = payload{body: []byte(fmt.Sprintf("%s%d", tag, i)), group: i / 2}
		}
		return out
	}
	pl := newPool(mk("a", 6))
	for _, c := range []struct {
		i       int
		rebuild bool
		body    string
		seq     uint64
	}{
		{i: 0, body: "a0", seq: 1},
		{i: 7, body: "a1", seq: 4},
		{i: 8, rebuild: true, body: "a2", seq: 5}, // the pass that began at 6 ends on a
		{i: 11, body: "a5", seq: 6},
		{i: 12, body: "b0", seq: 1},
		{i: 9, body: "a3", seq: 5}, // a sender behind the others
		{i: 19, body: "b1", seq: 4},
	} {
		if c.rebuild {
			pl.replace(mk("b", 6))
		}
		p, seq := pl.get(c.i)
		if string(p.body) != c.body || seq != c.seq {
			t.Errorf("get(%d) = %s, %d; want %s, %d", c.i, p.body, seq, c.body, c.seq)
		}
	}
}

func TestRunCountsAndRefusals(t *testing.T) {
	var spans atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req coltracepb.ExportTraceServiceRequest
		buf, _ := io.ReadAll(r.Body)
		if err := proto.Unmarshal(buf, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				spans.Add(int64(len(ss.Spans)))
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	o := DefaultOptions()
	// --spans sends exactly that many, whole requests and then a last
	// one cut to what is left.
	for _, tc := range []struct {
		spans int64
		split bool
	}{{5000, false}, {4321, false}, {777, true}} {
		spans.Store(0)
		o.Endpoint, o.Rate, o.Duration, o.Spans, o.TracesPerRequest, o.SplitByService = srv.URL, 0, 10*time.Second, tc.spans, 10, tc.split
		rep, err := Run(context.Background(), o, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Spans != tc.spans || spans.Load() != tc.spans {
			t.Errorf("--spans %d (split %v): report says %d spans, server got %d", tc.spans, tc.split, rep.Spans, spans.Load())
		}
	}

	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	defer refusing.Close()
	o.Endpoint, o.Spans, o.Duration = refusing.URL, 0, 300*time.Millisecond
	rep, err := Run(context.Background(), o, nil)
	if err == nil || rep.Refusals["401"] == 0 {
		t.Errorf("a target that refuses everything: err %v, refusals %v", err, rep.Refusals)
	}
}

func TestDepthAndAttributeCardinality(t *testing.T) {
	gen := NewGenerator(Shop(10, rand.New(rand.NewPCG(1, 2))), 1)
	gen.MaxDepth, gen.AttributeValues = 1, 3
	req := gen.Request(50, time.Now())
	customers := map[string]bool{}
	for _, rs := range req.ResourceSpans {
		if svc := rs.Resource.Attributes[0].Value.GetStringValue(); svc == "payment" || svc == "redis" {
			t.Errorf("%s is two calls deep, beyond depth 1", svc)
		}
		for _, s := range rs.ScopeSpans[0].Spans {
			for _, a := range s.Attributes {
				if a.Key == "app.customer" {
					customers[a.Value.GetStringValue()] = true
				}
			}
		}
	}
	if len(customers) == 0 || len(customers) > 3 {
		t.Errorf("app.customer values %v, want 1 to 3", customers)
	}
}

// TestSilentFraction: the asked share of spans are client calls that can
// never pair, half to peers named by peer.service, half to hosts known
// only by server.address, each the child of a server span of its trace.
func TestSilentFraction(t *testing.T) {
	gen := NewGenerator(Shop(10, rand.New(rand.NewPCG(1, 2))), 1)
	gen.SilentFraction = 0.25
	req := gen.Request(2000, time.Now())
	servers := map[string]bool{}
	total, named, hosts := 0, 0, 0
	for _, rs := range req.ResourceSpans {
		for _, s := range rs.ScopeSpans[0].Spans {
			if s.Kind == tracepb.Span_SPAN_KIND_SERVER {
				servers[string(s.TraceId)+string(s.SpanId)] = true
			}
		}
	}
	for _, rs := range req.ResourceSpans {
		for _, s := range rs.ScopeSpans[0].Spans {
			total++
			if s.Kind != tracepb.Span_SPAN_KIND_CLIENT {
				continue
			}
			attrs := map[string]string{}
			for _, a := range s.Attributes {
				attrs[a.Key] = a.Value.GetStringValue()
			}
			switch {
			case slices.Contains(silentPeers, attrs["peer.service"]):
				named++
			case slices.Contains(silentHosts, attrs["server.address"]) && attrs["peer.service"] == "":
				hosts++
			default:
				continue
			}
			if !servers[string(s.TraceId)+string(s.ParentSpanId)] {
				t.Errorf("silent call %q has no server span of its trace as parent", s.Name)
			}
		}
	}
	share := float64(named+hosts) / float64(total)
	if share < 0.24 || share > 0.26 || named*10 < (named+hosts)*4 || hosts*10 < (named+hosts)*4 {
		t.Errorf("%d named and %d bare-host calls of %d spans (%.3f), want a quarter, half each", named, hosts, total, share)
	}
	o := DefaultOptions()
	o.SilentFraction = 1
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--silent-fraction") {
		t.Errorf("--silent-fraction 1: %v", err)
	}
}

// A list of endpoints gets the requests in turn, as behind a load
// balancer.
func TestRunSpraysOverEndpoints(t *testing.T) {
	var requests [3]atomic.Int64
	var urls []string
	for i := range requests {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			requests[i].Add(1)
			w.Header().Set("Content-Type", "application/x-protobuf")
		}))
		defer srv.Close()
		urls = append(urls, srv.URL)
	}
	o := DefaultOptions()
	o.Endpoint, o.Rate, o.Duration, o.Spans, o.TracesPerRequest, o.Concurrency = strings.Join(urls, ","), 0, 10*time.Second, 3000, 1, 1
	rep, err := Run(context.Background(), o, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range requests {
		if n := requests[i].Load(); n < rep.Requests/3 || n > rep.Requests/3+1 {
			t.Errorf("endpoint %d got %d of %d requests, want a third", i, n, rep.Requests)
		}
	}
}
