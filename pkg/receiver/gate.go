package receiver

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/spangraph/spangraph/pkg/otlp"
)

// gate is the receiver's memory budget (max_queue_bytes): requests being
// read, decoded or waiting in the queue all hold a share of it, charged
// by their batch before it grows and given back by Batch.Release.
type gate struct {
	limit int64
	used  atomic.Int64
}

// Reserve implements otlp.Budget. It never lets used pass limit, so that
// a refusal is decided before memory is allocated, not after. A request
// that holds more than smallRequest may fill the gate only up to
// bigShare: the rest is kept for ordinary requests, so that a flood of
// huge ones (hostile, or one exporter's oversized batches) cannot shut
// every other exporter out.
func (g *gate) Reserve(n, holding int64) bool {
	limit := g.limit
	if holding > smallRequest {
		limit = g.limit * bigShare / 4
	}
	for {
		u := g.used.Load()
		if u+n > limit {
			return false
		}
		if g.used.CompareAndSwap(u, u+n) {
			queueBytes.Add(float64(n))
			return true
		}
	}
}

// smallRequest and bigShare: requests holding more than 1 MiB decoded
// (an SDK's default batch of 512 spans is well under) may use three
// quarters of max_queue_bytes together.
const (
	smallRequest = 1 << 20
	bigShare     = 3
)

// Free implements otlp.Budget.
func (g *gate) Free(n int64) {
	g.used.Add(-n)
	queueBytes.Sub(float64(n))
}

// full reports that no request can get in now: gRPC checks it before
// reading a message, since the transport buffers the whole message before
// the codec can charge it.
func (g *gate) full() bool { return g.used.Load() >= g.limit }

// retryMemory is the wait suggested to a sender refused for memory: the
// queue drains in well under a second when the consumer keeps up.
const retryMemory = time.Second

// memoryError refuses a request for which max_queue_bytes has no room; it
// is a Refusal.
type memoryError struct {
	// never: the request alone needs more than max_queue_bytes, so a
	// retry cannot succeed and the sender must send smaller batches.
	never bool
	msg   string
}

func (e *memoryError) Error() string { return e.msg }

// HTTPStatus is 429 (retryable, with Retry-After) or, for a request that
// can never fit, 413 as for max_request_bytes.
func (e *memoryError) HTTPStatus() int {
	if e.never {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusTooManyRequests
}

// RetryAfterHeader is "" for a request that can never fit.
func (e *memoryError) RetryAfterHeader() string {
	if e.never {
		return ""
	}
	return strconv.Itoa(int(retryMemory / time.Second))
}

// GRPCStatus is ResourceExhausted, with RetryInfo when a retry can
// succeed: OTLP exporters retry ResourceExhausted only with RetryInfo.
func (e *memoryError) GRPCStatus() *status.Status {
	st := status.New(codes.ResourceExhausted, e.msg)
	if e.never {
		return st
	}
	if withInfo, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retryMemory)}); err == nil {
		return withInfo
	}
	return st
}

// refuseMemory counts a request stopped by the gate and returns the answer
// for it, or nil when err is not the gate's. The tenant is not admitted
// yet, so the spans are counted under no tenant's name, as Admit's
// refusals are.
func (r *Receiver) refuseMemory(protocol string, err error) *memoryError {
	var over *otlp.OverBudgetError
	if !errors.As(err, &over) {
		return nil
	}
	// Only a request that would not fit in an empty gate is told never to
	// retry: what it held may include a pooled batch's spare capacity, so
	// one over the large requests' three quarters may still fit in a
	// fresh batch.
	if over.Charged+over.Wanted > r.gate.limit {
		r.refuse("", protocol, ReasonTooLarge, over.Spans)
		return &memoryError{never: true, msg: fmt.Sprintf(
			"the request needs more than receiver.max_queue_bytes (%d) of memory once decoded; send smaller batches or raise receiver.max_queue_bytes", r.gate.limit)}
	}
	return r.refuseFull(protocol, over.Spans)
}

// refuseFull counts a request refused because the gate is full and returns
// the retryable answer.
func (r *Receiver) refuseFull(protocol string, spans int) *memoryError {
	r.refuse("", protocol, ReasonMemory, spans)
	return &memoryError{msg: fmt.Sprintf(
		"requests being read, decoded and queued fill receiver.max_queue_bytes (%d); retry later", r.gate.limit)}
}
