package receiver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/spangraph/spangraph/pkg/limits"
	"github.com/spangraph/spangraph/pkg/otlp"
)

// Router shards spans over a ring of instances by trace id, so that all
// the spans of a trace meet in one instance's edge store (pkg/cluster).
type Router interface {
	// Owner returns the forwarding address of the instance that owns the
	// trace, and whether that is this instance.
	Owner(tenant string, traceID [16]byte) (addr string, self bool, err error)
	// IsMember reports whether host, a peer's IP, belongs to the ring.
	IsMember(host string) bool
	// Forward sends an encoded ExportTraceServiceRequest to addr with md
	// as gRPC metadata and returns the owner's partial_success.
	Forward(ctx context.Context, addr string, md map[string]string, body []byte) (rejected int64, msg string, err error)
	// InstanceID names this instance.
	InstanceID() string
}

// ForwardedKey is the gRPC metadata key that marks a request forwarded by
// another instance of the ring, with that instance's id as its value. A
// forwarded request is processed where it arrives, never forwarded again.
// The mark is honoured only from ring members: from anyone else it is
// ignored, so that a sender cannot skip routing.
const ForwardedKey = "x-spangraph-forwarded"

// ReasonForwardFailed counts spans that could not be handed to the
// instance owning their trace; ReasonJoining, requests refused while the
// instance joins the ring.
const (
	ReasonForwardFailed = "forward_failed"
	ReasonJoining       = "joining_ring"
	protocolForwarded   = "forwarded"
)

var spansForwarded = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "spangraph_receiver_spans_forwarded_total",
	Help: "Spans handed to the ring instance that owns their trace; the owner counts them as received with protocol=\"forwarded\".",
}, []string{"tenant"})

var errJoining = errors.New("this instance is joining the ring and cannot route spans yet; retry")

// origin is where a request came from, for routing.
type origin struct {
	ctx context.Context
	// forwarded: a ring member sent it; it is processed here.
	forwarded bool
	// auth and orgID are the sender's credentials, passed on with the
	// parts forwarded, so that the owner finds the same tenant.
	auth, orgID string
}

// routerBox lets SetRouter swap a Router atomically.
type routerBox struct{ Router }

// SetRouter gives the receiver the ring to shard spans with. Until
// StartRouting it refuses spans from senders, retryably, and processes
// those the ring's members forward to it: an instance that is joining
// cannot know yet which traces are its own, but what others forward is.
func (r *Receiver) SetRouter(rt Router) { r.router.Store(&routerBox{rt}) }

// StartRouting makes the receiver shard spans with the router from now
// on: call it once the instance is in the ring.
func (r *Receiver) StartRouting() { r.routing.Store(true) }

// Drain makes the receiver refuse senders' spans with a retryable answer
// while it still takes what the ring's members forward: a member leaving
// the ring could forward its senders' spans no more, and the others keep
// forwarding to it until they see it leave.
func (r *Receiver) Drain() { r.draining.Store(true) }

// AwaitRouter makes the receiver refuse spans, with a retryable answer,
// until it routes them: an instance that will be in a ring must not
// process spans it does not own while it joins. Call it before Start.
func (r *Receiver) AwaitRouter() { r.awaitRouter = true }

// grpcOrigin reads the origin of a gRPC request: the forwarded mark counts
// only from an address of a ring member.
func (r *Receiver) grpcOrigin(ctx context.Context) origin {
	o := origin{ctx: ctx}
	md, _ := metadata.FromIncomingContext(ctx)
	o.auth = firstMD(md, "authorization")
	o.orgID = firstMD(md, "x-scope-orgid")
	if firstMD(md, ForwardedKey) == "" {
		return o
	}
	box := r.router.Load()
	p, ok := peer.FromContext(ctx)
	if box == nil || !ok || p.Addr == nil {
		return o
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	o.forwarded = err == nil && box.IsMember(host)
	return o
}

func firstMD(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// part is the spans of a request that one other instance owns.
type part struct {
	addr  string
	spans int
	body  []byte
	// results of Forward
	rejected int64
	msg      string
	err      error
}

// plan is a request's parts for other instances, encoded; the rest stays
// here. Its bodies hold memory of their own, charged to max_queue_bytes
// like the request, until release.
type plan struct {
	rt    Router
	parts []part
	size  int64
	// bufs are the pooled buffers: [0] the local part of a raw request,
	// [i] part i's body.
	bufs *[][]byte
	// The last trace id looked up and its part: the spans of a trace
	// mostly come one after another, and the ring lookup was a third of
	// the cost of splitting a request.
	lastID   [16]byte
	lastPart int
	looked   bool
}

// partsPool keeps the per-span part numbers between requests, splitPool
// SplitRequest's scratch, bodyPool the encoded parts: allocating them
// afresh was a third of the cost of routing a request.
var (
	partsPool = sync.Pool{New: func() any { return new([]uint16) }}
	splitPool = sync.Pool{New: func() any { return new([]otlp.SplitSpan) }}
	bodyPool  = sync.Pool{New: func() any { return &[][]byte{nil} }}
)

func newPlan(rt Router) *plan {
	bufs := bodyPool.Get().(*[][]byte)
	*bufs = (*bufs)[:1] // never empty: [0] is the local part's
	(*bufs)[0] = (*bufs)[0][:0]
	return &plan{rt: rt, bufs: bufs}
}

// body returns the buffer of part i (0: the local part), empty.
func (pl *plan) body(i int) []byte {
	b := *pl.bufs
	for len(b) <= i {
		if len(b) < cap(b) {
			b = b[:len(b)+1]
		} else {
			b = append(b, nil)
		}
	}
	*pl.bufs = b
	return b[i][:0]
}

// partFor returns the number of addr's part in pl, 0 for this instance,
// adding a part the first time.
func (pl *plan) partFor(tenant string, id [16]byte) int {
	if pl.looked && id == pl.lastID {
		if pl.lastPart > 0 {
			pl.parts[pl.lastPart-1].spans++
		}
		return pl.lastPart
	}
	pl.looked, pl.lastID = true, id
	pl.lastPart = pl.owner(tenant, id)
	return pl.lastPart
}

func (pl *plan) owner(tenant string, id [16]byte) int {
	addr, self, err := pl.rt.Owner(tenant, id)
	if err != nil || self {
		// With no healthy owner in view this instance is the best place
		// left for the span.
		return 0
	}
	for i := range pl.parts {
		if pl.parts[i].addr == addr {
			pl.parts[i].spans++
			return i + 1
		}
	}
	pl.parts = append(pl.parts, part{addr: addr, spans: 1})
	return len(pl.parts)
}

// charge reserves the bodies' memory; false when max_queue_bytes has no
// room.
func (r *Receiver) charge(pl *plan, holding int64) bool {
	for _, p := range pl.parts {
		pl.size += int64(len(p.body))
	}
	if !r.gate.Reserve(pl.size, holding+pl.size) {
		pl.size = 0
		return false
	}
	return true
}

// release gives the bodies' memory back.
func (r *Receiver) release(pl *plan) {
	for i := range pl.parts {
		(*pl.bufs)[i+1] = pl.parts[i].body[:0]
	}
	bodyPool.Put(pl.bufs)
	if pl.size > 0 {
		r.gate.Free(pl.size)
	}
}

// planBatch splits a decoded batch by the owner of each span's trace:
// the parts of other instances are encoded (AppendPart) into the plan and
// removed from b. It returns nil when b is all this instance's.
func (r *Receiver) planBatch(rt Router, tenant, protocol string, b *otlp.Batch) (*plan, error) {
	pp := partsPool.Get().(*[]uint16)
	defer partsPool.Put(pp)
	owner := (*pp)[:0]
	pl := newPlan(rt)
	for ri := range b.Resources {
		for si := range b.Resources[ri].Spans {
			owner = append(owner, uint16(pl.partFor(tenant, b.Resources[ri].Spans[si].TraceID)))
		}
	}
	*pp = owner
	if len(pl.parts) == 0 {
		r.release(pl)
		return nil, nil
	}
	for i := range pl.parts {
		pl.parts[i].body = b.AppendPart(pl.body(i+1), owner, uint16(i+1))
	}
	if !r.charge(pl, b.Reserved()) {
		r.release(pl)
		return nil, r.refuseFull(protocol, b.SpanCount)
	}
	k := 0
	b.Filter(func(*otlp.ResourceSpans, *otlp.Span) bool { k++; return owner[k-1] == 0 })
	return pl, nil
}

// planRaw splits a protobuf request by the owner of each span's trace
// before anything is decoded (otlp.SplitRequest): the parts of other
// instances are forwarded as they are, and only this instance's part is
// decoded, into the batch it returns in place of b, which it releases.
// Decoding is the larger part of what a span costs, so a ring member no
// longer decodes the spans it forwards. On a framing error, or when the
// request is all this instance's, it returns b and no plan, and b is
// decoded whole as without a ring.
func (r *Receiver) planRaw(rt Router, o origin, tenant, protocol string, b *otlp.Batch, body []byte) (*otlp.Batch, *plan, error) {
	if rt == nil || o.forwarded {
		return b, nil, nil
	}
	pl := newPlan(rt)
	scratch := splitPool.Get().(*[]otlp.SplitSpan)
	defer splitPool.Put(scratch)
	var id [16]byte
	dst, err := otlp.SplitRequest(body, func(raw []byte) int {
		copy(id[:], raw)
		clear(id[min(len(raw), 16):])
		return pl.partFor(tenant, id)
	}, *pl.bufs, scratch)
	*pl.bufs = dst
	if err != nil || len(pl.parts) == 0 {
		// A framing error can come after owners were found for spans
		// whose parts were never written: there are no bodies to keep.
		pl.parts = nil
		r.release(pl)
		return b, nil, nil
	}
	local := dst[0]
	for i := range pl.parts {
		pl.parts[i].body = dst[i+1]
	}
	if !r.charge(pl, b.Reserved()) {
		r.release(pl)
		return b, nil, r.refuseFull(protocol, 0)
	}
	lb := otlp.GetBatch()
	lb.Charge(r.gate)
	buf, err := lb.BufferFor(len(local))
	if err == nil {
		err = lb.DecodeProto(append(buf, local...))
	}
	if err != nil {
		lb.Release()
		r.release(pl)
		return b, nil, err
	}
	b.Release()
	return lb, pl, nil
}

// deliver queues local (when it holds spans) and forwards the plan's
// parts, each to its owner at once. It takes ownership of local unless it
// returns an error, and releases pl.
//
// The sender's answer covers the whole request. The local part is queued
// before anything is forwarded: a refusal there leaves nothing accepted,
// so the sender may retry all. A part that cannot be delivered is refused
// alone with partial_success (and counted as forward_failed), since
// retrying the request would count the delivered parts twice; when
// nothing at all was delivered, the refusal is the owners' (retryable,
// unless the request is malformed).
func (r *Receiver) deliver(pl *plan, o origin, tenant, protocol string, local *otlp.Batch) (rejected int, reason string, err error) {
	defer r.release(pl)
	queued := local.SpanCount
	if queued > 0 {
		if err := r.enqueue(tenant, protocol, local); err != nil {
			return 0, "", err
		}
	}
	md := map[string]string{ForwardedKey: pl.rt.InstanceID()}
	if o.auth != "" {
		md["authorization"] = o.auth
	}
	if o.orgID != "" {
		md["x-scope-orgid"] = o.orgID
	}
	var wg sync.WaitGroup
	for i := range pl.parts {
		wg.Add(1)
		go func(p *part) {
			defer wg.Done()
			p.rejected, p.msg, p.err = pl.rt.Forward(o.ctx, p.addr, md, p.body)
		}(&pl.parts[i])
	}
	wg.Wait()

	failed := 0
	var firstErr error
	for _, p := range pl.parts {
		if p.err != nil {
			failed += p.spans
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", p.addr, p.err)
			}
			continue
		}
		spansForwarded.WithLabelValues(tenant).Add(float64(int64(p.spans) - p.rejected))
		if p.rejected > 0 {
			rejected += int(p.rejected)
			reason = limits.JoinReasons(reason, p.msg)
		}
	}
	if failed > 0 {
		r.refuse(tenant, protocol, ReasonForwardFailed, failed)
		r.warnForwardFailed(tenant, failed, firstErr)
		if queued == 0 && allFailed(pl.parts) {
			// Nothing was accepted anywhere: the sender may retry it all.
			return 0, "", &forwardError{err: firstErr}
		}
		rejected += failed
		reason = limits.JoinReasons(reason, fmt.Sprintf("%d spans could not be forwarded to the instance that owns their trace (%v); they were not counted", failed, firstErr))
	}
	if queued == 0 {
		local.Release()
	}
	return rejected, reason, nil
}

// warnForwardFailed logs failed forwards at most once a second: while a
// killed member's heartbeat times out every request fails alike.
func (r *Receiver) warnForwardFailed(tenant string, spans int, err error) {
	r.forwardFails.Add(int64(spans))
	now := time.Now().UnixNano()
	last := r.forwardLogged.Load()
	if now-last < int64(time.Second) || !r.forwardLogged.CompareAndSwap(last, now) {
		return
	}
	r.logger.Warn("spans could not be forwarded to the ring instance that owns their trace; the senders were told they were refused (spangraph_receiver_spans_rejected_total{reason=\"forward_failed\"}); a member that died is skipped once its heartbeat is cluster.heartbeat_timeout old",
		"tenant", tenant, "spans_since_last_message", r.forwardFails.Swap(0), "err", err)
}

func allFailed(parts []part) bool {
	for _, p := range parts {
		if p.err == nil {
			return false
		}
	}
	return true
}

// forwardError refuses a request none of whose spans could be delivered,
// with the owner's answer when it refused them for what they are (a
// malformed request: 400 / InvalidArgument; a limit: 429 /
// ResourceExhausted), else as unreachable: 503 / Unavailable. Only the
// last is worth a retry elsewhere, and all but the first are retryable.
type forwardError struct{ err error }

func (e *forwardError) code() codes.Code {
	switch c := status.Code(e.err); c {
	case codes.InvalidArgument, codes.ResourceExhausted:
		return c
	}
	return codes.Unavailable
}

func (e *forwardError) Error() string {
	if e.code() == codes.InvalidArgument {
		return fmt.Sprintf("the instance that owns the spans' traces refused them: %v", e.err)
	}
	return fmt.Sprintf("the spans could not be forwarded to the instance that owns their trace (%v); retry", e.err)
}
func (e *forwardError) Unwrap() error { return e.err }
func (e *forwardError) HTTPStatus() int {
	switch e.code() {
	case codes.InvalidArgument:
		return 400
	case codes.ResourceExhausted:
		return 429
	}
	return 503
}
func (e *forwardError) RetryAfterHeader() string {
	if e.code() == codes.InvalidArgument {
		return ""
	}
	return "1"
}
func (e *forwardError) GRPCStatus() *status.Status { return status.New(e.code(), e.Error()) }

// routerOf returns the router to shard with, nil when spans are processed
// here, or errJoining while the instance waits for its ring.
func (r *Receiver) routerOf(o origin) (Router, error) {
	box := r.router.Load()
	switch {
	case o.forwarded:
		return nil, nil
	case r.draining.Load():
		return nil, errShuttingDown
	case box != nil && r.routing.Load():
		return box.Router, nil
	case r.awaitRouter || box != nil:
		return nil, errJoining
	}
	return nil, nil
}
