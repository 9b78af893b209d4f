package limits

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Reasons, as values of the reason label of
// spangraph_limits_rejected_spans_total.
const (
	ReasonTooManySpans      = "too_many_spans"
	ReasonRateLimited       = "rate_limited"
	ReasonTooManyAttributes = "too_many_attributes"
)

// Sentinels for errors.Is on the *Error of a refused request.
var (
	// ErrTooManySpans: the request has more than max_spans_per_request
	// spans. Retrying the same request cannot succeed; the sender must
	// send smaller batches (the collector's send_batch_max_size).
	ErrTooManySpans = errors.New("too many spans in one request")
	// ErrRateLimited: the tenant is over spans_per_second; retrying after
	// RetryAfter can succeed.
	ErrRateLimited = errors.New("rate limited")
)

// Error refuses a whole request.
//
// Status codes, chosen from the OTLP specification's retry rules:
//   - too many spans → HTTP 413 / gRPC ResourceExhausted without RetryInfo.
//     Both are non-retryable for OTLP exporters, which is right since the
//     same request would be refused again, and it is what the receiver
//     already answers for max_request_bytes, so one "request too big"
//     answer covers both limits. 400/InvalidArgument would also stop
//     retries but says "malformed", which this request is not. A
//     partial_success that keeps the first N spans is not used either: it
//     would cut traces at an arbitrary point, and the sender would see
//     success and never learn to send smaller batches.
//   - rate limited → HTTP 429 with Retry-After / gRPC ResourceExhausted
//     with RetryInfo: the retryable answers, with the wait the bucket
//     computed.
type Error struct {
	kind error
	// Reason is the self-metric label value.
	Reason string
	// RetryAfter is set when a retry after this long can succeed.
	RetryAfter time.Duration
	msg        string
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns ErrTooManySpans or ErrRateLimited.
func (e *Error) Unwrap() error { return e.kind }

// HTTPStatus is the OTLP/HTTP status code to answer.
func (e *Error) HTTPStatus() int {
	if errors.Is(e.kind, ErrRateLimited) {
		return http.StatusTooManyRequests
	}
	return http.StatusRequestEntityTooLarge
}

// RetryAfterHeader is the Retry-After value in whole seconds (at least 1),
// or "" when retrying cannot help.
func (e *Error) RetryAfterHeader() string {
	if e.RetryAfter <= 0 {
		return ""
	}
	secs := int64((e.RetryAfter + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(secs, 1), 10)
}

// GRPCStatus makes a handler that returns the error answer the right code:
// grpc-go calls it through status.FromError.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(codes.ResourceExhausted, e.msg)
	if e.RetryAfter <= 0 {
		return st
	}
	// OTLP exporters retry ResourceExhausted only when RetryInfo is there.
	if withInfo, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)}); err == nil {
		return withInfo
	}
	return st
}

// ceilMillis rounds d up to a millisecond for messages, so that a wait of
// 0.3 ms does not read "retry in 0s".
func ceilMillis(d time.Duration) time.Duration {
	return (d + time.Millisecond - 1).Truncate(time.Millisecond)
}
