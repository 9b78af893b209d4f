package loadgen

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/otlp"
)

// Options of a load run.
type Options struct {
	// Endpoint is the OTLP/HTTP base URL (http://host:4318) or the gRPC
	// address (host:4317); a comma-separated list sends round-robin.
	Endpoint string
	// Protocol is http or grpc.
	Protocol string
	// Encoding is protobuf or json (HTTP only).
	Encoding string
	// Gzip compresses request bodies.
	Gzip bool
	// Rate is the target in spans per second; 0 sends as fast as accepted.
	Rate float64
	// Duration and Spans end the run, whichever comes first; 0 is no limit.
	Duration time.Duration
	Spans    int64
	// Concurrency is the number of requests in flight.
	Concurrency int
	// Services, TracesPerRequest, SpanNames and ErrorScale shape the
	// traffic (see Shop and Generator).
	Services         int
	TracesPerRequest int
	SpanNames        int
	ErrorScale       float64
	// SplitByService sends each service's spans of a batch of traces in a
	// request of its own, as services exporting through their own SDKs
	// do: a client span and its server span then arrive in different
	// requests, usually from different senders.
	SplitByService bool
	// Depth bounds the call depth of a trace; AttributeValues is the
	// cardinality of the app.customer attribute (0: none).
	Depth           int
	AttributeValues int
	// SilentFraction is the share of spans that are client calls to peers
	// that never answer (see Generator.SilentFraction).
	SilentFraction float64
	// Tenant is sent as X-Scope-OrgID when set.
	Tenant string
	// Seed makes the traffic reproducible.
	Seed uint64
}

// DefaultOptions returns a modest run against a local Spangraph.
func DefaultOptions() Options {
	return Options{
		Endpoint: "http://127.0.0.1:4318", Protocol: "http", Encoding: "protobuf",
		Rate: 1000, Duration: 10 * time.Second, Concurrency: 4,
		Services: 10, TracesPerRequest: 100, ErrorScale: 1, Seed: 1, Depth: 6,
	}
}

// Validate checks the options; errors name the flag.
func (o *Options) Validate() error {
	switch {
	case o.Endpoint == "":
		return errors.New("--endpoint: required")
	case o.Protocol != "http" && o.Protocol != "grpc":
		return fmt.Errorf("--protocol: %q is not http or grpc", o.Protocol)
	case o.Encoding != "protobuf" && o.Encoding != "json":
		return fmt.Errorf("--encoding: %q is not protobuf or json", o.Encoding)
	case o.Protocol == "grpc" && o.Encoding == "json":
		return errors.New("--encoding: json is only for --protocol http")
	case o.Rate < 0:
		return fmt.Errorf("--rate: must not be negative, got %v", o.Rate)
	case o.Concurrency < 1:
		return fmt.Errorf("--concurrency: must be at least 1, got %d", o.Concurrency)
	case o.Services < 1:
		return fmt.Errorf("--services: must be at least 1, got %d", o.Services)
	case o.TracesPerRequest < 1:
		return fmt.Errorf("--traces-per-request: must be at least 1, got %d", o.TracesPerRequest)
	case o.Depth < 1:
		return fmt.Errorf("--depth: must be at least 1, got %d", o.Depth)
	case !(o.SilentFraction >= 0 && o.SilentFraction < 1):
		return fmt.Errorf("--silent-fraction: must be at least 0 and below 1, got %v", o.SilentFraction)
	case o.Duration == 0 && o.Spans == 0:
		return errors.New("--duration or --spans: one of them must end the run")
	}
	return nil
}

// Report is the outcome of a run.
type Report struct {
	Elapsed  time.Duration
	Requests int64
	// Spans were accepted; SpansRefused were in refused requests or
	// reported back as rejected in partial_success.
	Spans, SpansRefused int64
	// Refusals counts refused requests by status (HTTP code or gRPC code
	// name), and "error" for transport failures.
	Refusals map[string]int64
	// LastError describes the last failure, for the log.
	LastError string
	// Latency percentiles of accepted requests.
	P50, P99 time.Duration
}

// Rate returns accepted spans per second.
func (r Report) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Spans) / r.Elapsed.Seconds()
}

func (r Report) String() string {
	var refusals []string
	for k, v := range r.Refusals {
		refusals = append(refusals, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(refusals)
	s := fmt.Sprintf("sent %d spans in %d requests over %s: %.0f spans/s accepted; request latency p50 %s p99 %s; refused spans %d",
		r.Spans, r.Requests, r.Elapsed.Round(time.Millisecond), r.Rate(), r.P50, r.P99, r.SpansRefused)
	if len(refusals) > 0 {
		s += " (" + strings.Join(refusals, " ") + ")"
	}
	return s
}

// payload is one pre-encoded request.
type payload struct {
	body  []byte
	spans int64
	// group numbers the batch of traces the payload belongs to, within
	// its pool: the parts of one batch split by service share it.
	group int
	// traceIDs are the offsets of every trace id in body (protobuf, not
	// gzipped), so that each send can make them unique.
	traceIDs []int
}

// traceIDOffsets finds the trace ids in an encoded request: field 1 of
// each Span (ExportTraceServiceRequest.1 → ResourceSpans.2 → ScopeSpans.2).
func traceIDOffsets(body []byte) []int {
	var out []int
	wants := []protowire.Number{1, 2, 2}
	var walk func(data []byte, base, level int)
	walk = func(data []byte, base, level int) {
		for pos := 0; pos < len(data); {
			num, typ, n := protowire.ConsumeTag(data[pos:])
			if n < 0 {
				return
			}
			pos += n
			if typ != protowire.BytesType {
				m := protowire.ConsumeFieldValue(num, typ, data[pos:])
				if m < 0 {
					return
				}
				pos += m
				continue
			}
			v, m := protowire.ConsumeBytes(data[pos:])
			if m < 0 {
				return
			}
			start := base + pos + m - len(v)
			switch {
			case level < len(wants) && num == wants[level]:
				walk(v, start, level+1)
			case level == len(wants) && num == 1 && len(v) == 16:
				out = append(out, start)
			}
			pos += m
		}
	}
	walk(body, 0, 0)
	return out
}

// unique returns a copy of p's body in which every trace id is XORed with
// seq, so that re-sent payloads are new traces (spans of one trace stay
// together) and the edge store sees real traffic, not the same keys again.
func (p payload) unique(seq uint64, buf []byte) []byte {
	buf = append(buf[:0], p.body...)
	for _, off := range p.traceIDs {
		for i := 0; i < 8; i++ {
			buf[off+i] ^= byte(seq >> (8 * i))
		}
	}
	return buf
}

// pool holds pre-encoded requests, rebuilt in the background so that their
// timestamps stay within the receiver's ingestion slack while the senders
// never wait for encoding.
type pool struct {
	mu sync.Mutex
	// cur serves sends from cur.from on, prev those before: a rebuilt set
	// takes over only where a pass over the current one would start, so
	// that the parts of one batch split by service all come from one set
	// and still pair.
	cur, prev payloadSet
	// next is one past the highest send number handed out.
	next int
	// genMu serialises the generator between the rebuilds and last.
	genMu sync.Mutex
}

// payloadSet is one build of the pool, serving sends from send number from.
type payloadSet struct {
	payloads []payload
	from     int
}

func newPool(payloads []payload) *pool { return &pool{cur: payloadSet{payloads: payloads}} }

// replace makes fresh the set for every send from the next pass on.
func (p *pool) replace(fresh []payload) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.cur.payloads)
	passes := 0
	if p.next > p.cur.from {
		passes = (p.next - p.cur.from + n - 1) / n
	}
	p.prev = p.cur
	p.cur = payloadSet{payloads: fresh, from: p.cur.from + passes*n}
}

// get returns the i-th payload to send and the number that makes its
// trace ids unique (see unique): the same for every part of one batch of
// traces and pass over the pool, so that split parts still pair.
func (p *pool) get(i int) (payload, uint64) {
	p.mu.Lock()
	p.next = max(p.next, i+1)
	set := p.cur
	if i < set.from && p.prev.payloads != nil {
		set = p.prev
	}
	p.mu.Unlock()
	j := i - set.from
	if j < 0 {
		// A sender more than a rebuild behind: its batch is lost anyway.
		j = i
	}
	pl := set.payloads[j%len(set.payloads)]
	groups := set.payloads[len(set.payloads)-1].group + 1
	return pl, uint64(j/len(set.payloads)*groups+pl.group) + 1
}

// last builds a request of exactly n spans (fewer than one payload has),
// the end of a run of --spans: whole traces, the last one cut short.
func (p *pool) last(opts Options, gen *Generator, n int64) (payload, error) {
	// Traces vary in size: generate until there are n spans to cut from.
	req := &coltracepb.ExportTraceServiceRequest{}
	p.genMu.Lock()
	for have := int64(0); have < n; {
		more := gen.Request(opts.TracesPerRequest, time.Now())
		req.ResourceSpans = append(req.ResourceSpans, more.ResourceSpans...)
		have += spanCount(more)
	}
	p.genMu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			k := min(int64(len(ss.Spans)), n)
			ss.Spans = ss.Spans[:k]
			n -= k
		}
	}
	return encode(opts, req)
}

func build(opts Options, gen *Generator, n int) ([]payload, error) {
	var out []payload
	now := time.Now()
	for g := 0; g < n; g++ {
		req := gen.Request(opts.TracesPerRequest, now)
		parts := []*coltracepb.ExportTraceServiceRequest{req}
		if opts.SplitByService {
			parts = parts[:0]
			for _, rs := range req.ResourceSpans {
				parts = append(parts, &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{rs}})
			}
		}
		for _, part := range parts {
			p, err := encode(opts, part)
			if err != nil {
				return nil, err
			}
			p.group = g
			out = append(out, p)
		}
	}
	return out, nil
}

// encode turns req into a payload as opts ask.
func encode(opts Options, req *coltracepb.ExportTraceServiceRequest) (payload, error) {
	var body []byte
	var err error
	if opts.Encoding == "json" {
		body, err = otlp.MarshalJSON(req)
	} else {
		body, err = proto.Marshal(req)
	}
	if err != nil {
		return payload{}, err
	}
	var offsets []int
	if opts.Encoding == "protobuf" && !opts.Gzip {
		offsets = traceIDOffsets(body)
	}
	if opts.Gzip && opts.Protocol == "http" {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(body)
		_ = zw.Close()
		body = buf.Bytes()
	}
	return payload{body: body, spans: spanCount(req), traceIDs: offsets}, nil
}

func spanCount(req *coltracepb.ExportTraceServiceRequest) int64 {
	n := int64(0)
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			n += int64(len(ss.Spans))
		}
	}
	return n
}

// sender sends one payload and returns the refused span count from
// partial_success, or an error with the refusal's status.
type sender interface {
	send(ctx context.Context, p payload) (refused int64, err error)
	close()
}

// refusal is a request the server answered with an error status.
type refusal struct {
	code       string
	retryAfter time.Duration
	msg        string
}

func (r *refusal) Error() string { return r.code + ": " + r.msg }

// Run sends traffic until the duration or span count is reached or ctx
// ends. progress, when not nil, gets a status line every second.
func Run(ctx context.Context, opts Options, progress io.Writer) (Report, error) {
	if err := opts.Validate(); err != nil {
		return Report{}, err
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 7))
	gen := NewGenerator(Shop(opts.Services, rng), opts.Seed)
	gen.SpanNames = opts.SpanNames
	gen.ErrorScale = opts.ErrorScale
	gen.MaxDepth = opts.Depth
	gen.AttributeValues = opts.AttributeValues
	gen.SilentFraction = opts.SilentFraction
	const poolSize = 16
	payloads, err := build(opts, gen, poolSize)
	if err != nil {
		return Report{}, err
	}
	pl := newPool(payloads)

	s, err := newSender(opts)
	if err != nil {
		return Report{}, err
	}
	defer s.close()

	// sendCtx ends only with the caller's ctx (Ctrl-C), so that requests
	// in flight when the run ends complete and are counted as the target
	// counted them; ctx ends when the duration is over (the workers stop
	// by themselves once --spans are scheduled).
	sendCtx := ctx
	if opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Duration)
		defer cancel()
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()

	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				pl.genMu.Lock()
				fresh, err := build(opts, gen, poolSize)
				pl.genMu.Unlock()
				if err == nil {
					pl.replace(fresh)
				}
			}
		}
	}()

	var (
		st        stats
		scheduled atomic.Int64 // spans handed to senders, for --spans
		pace      = newPacer(opts.Rate)
		wg        sync.WaitGroup
		start     = time.Now()
	)
	st.refusals = map[string]int64{}
	for w := 0; w < opts.Concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var buf []byte
			for i := w; ctx.Err() == nil; i += opts.Concurrency {
				p, seq := pl.get(i)
				if len(p.traceIDs) > 0 {
					buf = p.unique(seq, buf)
					p.body = buf
				}
				if prev := scheduled.Add(p.spans) - p.spans; opts.Spans > 0 && prev+p.spans >= opts.Spans {
					// Each worker ends on its own: cancelling ctx would
					// stop others between scheduling spans and sending them.
					if prev >= opts.Spans {
						return
					}
					// The last request: exactly the spans --spans has left.
					last, err := pl.last(opts, gen, opts.Spans-prev)
					if err != nil {
						st.record(0, 0, 0, err)
						return
					}
					p = last
				}
				if !pace.wait(ctx, p.spans) {
					return
				}
				t0 := time.Now()
				refused, err := s.send(sendCtx, p)
				if sendCtx.Err() != nil && err != nil {
					return
				}
				st.record(p.spans, refused, time.Since(t0), err)
				var rf *refusal
				if errors.As(err, &rf) && rf.retryAfter > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(rf.retryAfter):
					}
				}
			}
		}(w)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-done:
			rep := st.report(time.Since(start))
			if progress != nil {
				fmt.Fprintln(progress)
			}
			if rep.Spans == 0 {
				return rep, fmt.Errorf("no span was accepted by %s: %s", opts.Endpoint, rep.LastError)
			}
			return rep, nil
		case <-tick.C:
			if progress != nil {
				rep := st.report(time.Since(start))
				fmt.Fprintf(progress, "\r%s  %d spans accepted, %.0f/s, %d refused   ",
					rep.Elapsed.Round(time.Second), rep.Spans, rep.Rate(), rep.SpansRefused)
			}
		}
	}
}

type stats struct {
	mu        sync.Mutex
	requests  int64
	spans     int64
	refused   int64
	refusals  map[string]int64
	lastError string
	latencies []time.Duration
}

func (s *stats) record(spans, refused int64, d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if err != nil {
		s.refused += spans
		code := "error"
		var rf *refusal
		if errors.As(err, &rf) {
			code = rf.code
		}
		s.refusals[code]++
		s.lastError = err.Error()
		return
	}
	s.spans += spans - refused
	s.refused += refused
	// A bounded reservoir keeps long runs in constant memory.
	if len(s.latencies) < 100_000 {
		s.latencies = append(s.latencies, d)
	} else {
		s.latencies[rand.IntN(len(s.latencies))] = d
	}
}

func (s *stats) report(elapsed time.Duration) Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := Report{Elapsed: elapsed, Requests: s.requests, Spans: s.spans, SpansRefused: s.refused,
		Refusals: map[string]int64{}, LastError: s.lastError}
	for k, v := range s.refusals {
		r.Refusals[k] = v
	}
	if n := len(s.latencies); n > 0 {
		l := append([]time.Duration(nil), s.latencies...)
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		r.P50 = l[n/2].Round(time.Microsecond)
		r.P99 = l[n*99/100].Round(time.Microsecond)
	}
	return r
}

// pacer spaces requests so that spans flow at rate per second on average.
type pacer struct {
	mu   sync.Mutex
	rate float64
	next time.Time
}

func newPacer(rate float64) *pacer { return &pacer{rate: rate} }

func (p *pacer) wait(ctx context.Context, spans int64) bool {
	if p.rate <= 0 {
		return ctx.Err() == nil
	}
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	at := p.next
	p.next = p.next.Add(time.Duration(float64(spans) / p.rate * float64(time.Second)))
	p.mu.Unlock()
	if d := time.Until(at); d > 0 {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
		}
	}
	return true
}

// newSender returns the sender of opts: with several endpoints, one that
// sends each request to the next in turn, as a load balancer in front of
// a ring of instances does.
func newSender(opts Options) (sender, error) {
	var all spray
	for _, e := range strings.Split(opts.Endpoint, ",") {
		one := opts
		one.Endpoint = strings.TrimSpace(e)
		if opts.Protocol != "grpc" {
			all.senders = append(all.senders, newHTTPSender(one))
			continue
		}
		g, err := newGRPCSender(one)
		if err != nil {
			all.close()
			return nil, err
		}
		all.senders = append(all.senders, g)
	}
	if len(all.senders) == 1 {
		return all.senders[0], nil
	}
	return &all, nil
}

// spray sends round-robin over several senders.
type spray struct {
	senders []sender
	next    atomic.Uint64
}

func (s *spray) send(ctx context.Context, p payload) (int64, error) {
	return s.senders[(s.next.Add(1)-1)%uint64(len(s.senders))].send(ctx, p)
}

func (s *spray) close() {
	for _, x := range s.senders {
		x.close()
	}
}

type httpSender struct {
	url    string
	opts   Options
	client *http.Client
}

func newHTTPSender(opts Options) *httpSender {
	url := strings.TrimSuffix(opts.Endpoint, "/")
	if !strings.HasSuffix(url, "/v1/traces") {
		url += "/v1/traces"
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = opts.Concurrency
	return &httpSender{url: url, opts: opts, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (h *httpSender) send(ctx context.Context, p payload) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(p.body))
	if err != nil {
		return 0, err
	}
	asJSON := h.opts.Encoding == "json"
	if asJSON {
		req.Header.Set("Content-Type", "application/json")
	} else {
		req.Header.Set("Content-Type", "application/x-protobuf")
	}
	if h.opts.Gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	if h.opts.Tenant != "" {
		req.Header.Set("X-Scope-OrgID", h.opts.Tenant)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return 0, &refusal{code: strconv.Itoa(resp.StatusCode), retryAfter: time.Duration(ra) * time.Second, msg: string(body)}
	}
	var out coltracepb.ExportTraceServiceResponse
	if asJSON {
		err = protojson.Unmarshal(body, &out)
	} else {
		err = proto.Unmarshal(body, &out)
	}
	if err != nil {
		return 0, fmt.Errorf("decoding the response: %w", err)
	}
	return out.GetPartialSuccess().GetRejectedSpans(), nil
}

func (h *httpSender) close() { h.client.CloseIdleConnections() }

// rawBytes carries a pre-encoded request through gRPC unchanged.
type rawBytes []byte

type rawClientCodec struct{ proto encoding.CodecV2 }

func (c rawClientCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(rawBytes); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return c.proto.Marshal(v)
}

func (c rawClientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return c.proto.Unmarshal(data, v)
}

func (rawClientCodec) Name() string { return grpcproto.Name }

type grpcSender struct {
	conn *grpc.ClientConn
	opts Options
}

func newGRPCSender(opts Options) (*grpcSender, error) {
	conn, err := grpc.NewClient(opts.Endpoint,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawClientCodec{proto: encoding.GetCodecV2(grpcproto.Name)})),
	)
	if err != nil {
		return nil, fmt.Errorf("--endpoint %s: %w", opts.Endpoint, err)
	}
	return &grpcSender{conn: conn, opts: opts}, nil
}

func (g *grpcSender) send(ctx context.Context, p payload) (int64, error) {
	if g.opts.Tenant != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-scope-orgid", g.opts.Tenant)
	}
	var out coltracepb.ExportTraceServiceResponse
	err := g.conn.Invoke(ctx, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", rawBytes(p.body), &out)
	if err != nil {
		st := status.Convert(err)
		rf := &refusal{code: st.Code().String(), msg: st.Message()}
		if st.Code() == codes.Unavailable || st.Code() == codes.ResourceExhausted {
			// What OTLP exporters do: back off, then retry.
			rf.retryAfter = 100 * time.Millisecond
		}
		return 0, rf
	}
	return out.GetPartialSuccess().GetRejectedSpans(), nil
}

func (g *grpcSender) close() { _ = g.conn.Close() }
