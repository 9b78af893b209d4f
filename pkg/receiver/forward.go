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
// forwarded request is never forwarded again, and the per-tenant limits,
// applied where the request came in, are not applied twice. The mark is
// honoured only from ring members: from anyone else it is ignored.
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

// part is the spans of a batch that one other instance owns.
type part struct {
	addr  string
	spans int
	body  []byte
	// results of Forward
	rejected int64
	msg      string
	err      error
}

// partsPool keeps the per-span part numbers between requests.
var partsPool = sync.Pool{New: func() any { return new([]uint16) }}

// route splits b by the owner of each span's trace, queues the spans this
// instance owns and forwards the others, each part to its owner at once.
// It takes ownership of b unless it returns an error.
//
// The sender's answer covers the whole request. Parts are encoded before
// anything is queued, and the local part is queued before anything is
// forwarded: a refusal there leaves nothing accepted, so the sender may
// retry all. A part that cannot be delivered is refused alone with
// partial_success (and counted as forward_failed), since retrying the
// request would count the delivered parts twice; when nothing at all was
// delivered the refusal is retryable.
func (r *Receiver) route(rt Router, o origin, tenant, protocol string, b *otlp.Batch) (rejected int, reason string, err error) {
	pp := partsPool.Get().(*[]uint16)
	defer partsPool.Put(pp)
	owner := (*pp)[:0]
	var parts []part
	for ri := range b.Resources {
		for si := range b.Resources[ri].Spans {
			addr, self, err := rt.Owner(tenant, b.Resources[ri].Spans[si].TraceID)
			if err != nil || self {
				// With no healthy owner in view this instance is the
				// best place left for the span.
				owner = append(owner, 0)
				continue
			}
			i := 0
			for i < len(parts) && parts[i].addr != addr {
				i++
			}
			if i == len(parts) {
				parts = append(parts, part{addr: addr})
			}
			parts[i].spans++
			owner = append(owner, uint16(i+1))
		}
	}
	*pp = owner
	if len(parts) == 0 {
		return 0, "", r.enqueue(tenant, protocol, b)
	}

	// The bodies outlive b, which a worker may release as soon as the
	// local part is queued: they hold memory of their own, charged to
	// max_queue_bytes like the request.
	size := 0
	for i := range parts {
		parts[i].body = b.AppendPart(nil, owner, uint16(i+1))
		size += len(parts[i].body)
	}
	if !r.gate.Reserve(int64(size), b.Reserved()+int64(size)) {
		return 0, "", r.refuseFull(protocol, b.SpanCount)
	}
	defer r.gate.Free(int64(size))

	local := b.SpanCount
	for i := range parts {
		local -= parts[i].spans
	}
	if local > 0 {
		k := 0
		b.Filter(func(*otlp.ResourceSpans, *otlp.Span) bool { k++; return owner[k-1] == 0 })
		if err := r.enqueue(tenant, protocol, b); err != nil {
			return 0, "", err
		}
	}

	md := map[string]string{ForwardedKey: rt.InstanceID()}
	if o.auth != "" {
		md["authorization"] = o.auth
	}
	if o.orgID != "" {
		md["x-scope-orgid"] = o.orgID
	}
	var wg sync.WaitGroup
	for i := range parts {
		wg.Add(1)
		go func(p *part) {
			defer wg.Done()
			p.rejected, p.msg, p.err = rt.Forward(o.ctx, p.addr, md, p.body)
		}(&parts[i])
	}
	wg.Wait()

	failed := 0
	var firstErr error
	for _, p := range parts {
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
		if local == 0 && allFailed(parts) {
			// Nothing was accepted anywhere: the sender may retry it all.
			return 0, "", &forwardError{err: firstErr}
		}
		rejected += failed
		reason = limits.JoinReasons(reason, fmt.Sprintf("%d spans could not be forwarded to the instance that owns their trace (%v); they were not counted", failed, firstErr))
	}
	if local == 0 {
		b.Release()
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

// forwardError refuses a request none of whose spans could be delivered;
// it is a retryable Refusal: 503 / Unavailable.
type forwardError struct{ err error }

func (e *forwardError) Error() string {
	return fmt.Sprintf("the spans could not be forwarded to the instance that owns their trace (%v); retry", e.err)
}
func (e *forwardError) Unwrap() error              { return e.err }
func (e *forwardError) HTTPStatus() int            { return 503 }
func (e *forwardError) RetryAfterHeader() string   { return "1" }
func (e *forwardError) GRPCStatus() *status.Status { return status.New(codes.Unavailable, e.Error()) }

// routerOf returns the router to shard with, nil when spans are processed
// here, or errJoining while the instance waits for its ring.
func (r *Receiver) routerOf(o origin) (Router, error) {
	box := r.router.Load()
	switch {
	case o.forwarded:
		return nil, nil
	case box != nil && r.routing.Load():
		return box.Router, nil
	case r.awaitRouter || box != nil:
		return nil, errJoining
	}
	return nil, nil
}
