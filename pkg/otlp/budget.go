package otlp

import (
	"errors"
	"fmt"
	"io"
	"unsafe"
)

// Budget is the memory that batches being read, decoded or queued may hold
// together. A Batch charges it before it grows, so that a request that
// does not fit is stopped before its memory is allocated, not after.
type Budget interface {
	// Reserve takes n bytes for a batch that will then hold holding bytes
	// in all, or takes nothing and reports false when they do not fit.
	Reserve(n, holding int64) bool
	// Free gives back n bytes taken by Reserve.
	Free(n int64)
}

// ErrOverBudget is what an *OverBudgetError wraps: the request is not
// malformed, there was no room for it.
var ErrOverBudget = errors.New("not enough memory for the request")

// OverBudgetError reports a batch that needed more memory than its Budget
// had free; reading or decoding stopped there.
type OverBudgetError struct {
	// Charged is what the batch held when it stopped, Wanted what it asked
	// for on top: a request whose Charged+Wanted exceeds the whole budget
	// can never fit.
	Charged, Wanted int64
	// Spans is how many spans were decoded before the stop: a lower bound
	// of the request's spans.
	Spans int
}

func (e *OverBudgetError) Error() string {
	return fmt.Sprintf("%v: %d bytes more were needed on top of %d", ErrOverBudget, e.Wanted, e.Charged)
}

// Unwrap returns ErrOverBudget.
func (e *OverBudgetError) Unwrap() error { return ErrOverBudget }

// ErrTooLarge reports a body longer than the limit ReadBody was given.
var ErrTooLarge = errors.New("request body too large")

// Sizes of the decoded elements, for charging a budget.
const (
	spanSize     = int64(unsafe.Sizeof(Span{}))
	kvSize       = int64(unsafe.Sizeof(KeyValue{}))
	resourceSize = int64(unsafe.Sizeof(ResourceSpans{}))
	faultSize    = int64(unsafe.Sizeof(jsonFault{}))
)

// Charge makes b account to budget, until Release, for the memory it holds
// and for everything it grows by. The capacity a pooled batch kept from
// earlier requests is memory in use too, so it is charged now; when it
// does not fit, the batch lets it go and starts empty, so that a small
// request can still get in.
func (b *Batch) Charge(budget Budget) {
	held := int64(cap(b.raw)) + int64(cap(b.spare)) + int64(cap(b.spans))*spanSize +
		int64(cap(b.attrs))*kvSize + int64(cap(b.Resources))*resourceSize + int64(cap(b.jsonFaults))*faultSize
	if held > 0 && !budget.Reserve(held, held) {
		b.Resources, b.spans, b.attrs, b.raw, b.spare, b.jsonFaults = nil, nil, nil, nil, nil, nil
		held = 0
	}
	b.budget, b.reserved = budget, held
}

// Reserved returns the bytes b has charged to its budget.
func (b *Batch) Reserved() int64 { return b.reserved }

func (b *Batch) reserve(n int64) error {
	if b.budget == nil || n <= 0 {
		return nil
	}
	if !b.budget.Reserve(n, b.reserved+n) {
		b.refused = true
		return &OverBudgetError{Charged: b.reserved, Wanted: n}
	}
	b.reserved += n
	return nil
}

func (b *Batch) free(n int64) {
	if b.budget != nil {
		b.budget.Free(n)
		b.reserved -= n
	}
}

// grow returns s with twice its capacity (at least 16), charged before it
// is allocated. Doubling keeps reservations rare: a warm pooled batch
// needs none.
func grow[E any](b *Batch, s []E) ([]E, error) {
	n := max(2*cap(s), 16)
	var zero E
	if err := b.reserve(int64(n-cap(s)) * int64(unsafe.Sizeof(zero))); err != nil {
		return s, err
	}
	out := make([]E, len(s), n)
	copy(out, s)
	return out, nil
}

// growBytes returns buf with room for n more bytes, charged before it is
// allocated.
func (b *Batch) growBytes(buf []byte, n int) ([]byte, error) {
	if cap(buf)-len(buf) >= n {
		return buf, nil
	}
	c := len(buf) + n
	if err := b.reserve(int64(c - cap(buf))); err != nil {
		return buf, err
	}
	out := make([]byte, len(buf), c)
	copy(out, buf)
	return out, nil
}

// BufferFor returns the batch's buffer, empty, with room for n bytes, for
// copying a request of known size into before DecodeProto.
func (b *Batch) BufferFor(n int) ([]byte, error) {
	buf, err := b.growBytes(b.raw[:0], n)
	if err != nil {
		return nil, err
	}
	b.raw = buf
	return buf, nil
}

// ReadBody reads a request body of at most limit bytes from r into the
// batch's buffer and returns it, for DecodeProto or DecodeJSON. A positive
// size (Content-Length) sizes the buffer at once; otherwise it doubles as
// it fills. It fails with ErrTooLarge past limit, and with an
// *OverBudgetError, before reading further, when the buffer cannot grow.
func (b *Batch) ReadBody(r io.Reader, size, limit int) ([]byte, error) {
	buf := b.raw[:0]
	var err error
	if size > 0 {
		// One byte more than announced, to see EOF without growing.
		if buf, err = b.growBytes(buf, min(size, limit)+1); err != nil {
			return nil, err
		}
		b.raw = buf
	}
	for {
		if len(buf) == cap(buf) {
			if buf, err = b.growBytes(buf, min(max(cap(buf), 4096), limit+1-len(buf))); err != nil {
				return nil, err
			}
			b.raw = buf
		}
		n, rerr := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > limit {
			return nil, ErrTooLarge
		}
		if rerr == io.EOF {
			return buf, nil
		}
		if rerr != nil {
			return nil, rerr
		}
	}
}
