package limits

import (
	"math"
	"sync"
	"time"
)

// RateLimiter is a token bucket per tenant, counted in spans.
//
// It is written here rather than taken from golang.org/x/time/rate (which
// is in the module graph) for one semantic: a request larger than the
// burst. x/time/rate refuses AllowN(n > burst) forever, which would wedge a
// tenant whose exporter batches more spans than the burst (when
// max_spans_per_request is unlimited or above the burst). Here a request is
// let through when the bucket holds min(n, burst) tokens and then costs all
// n, driving the bucket into debt that refills at the rate — so big
// requests are never refused for good, and the long-run rate is still
// exact.
type RateLimiter struct {
	// limit returns the rate and burst of a tenant; rate <= 0 is unlimited.
	limit func(tenant string) (perSecond float64, burst int)
	// now is the clock; tests replace it.
	now func() time.Time

	mu      sync.RWMutex
	buckets map[string]*bucket
}

type bucket struct {
	mu     sync.Mutex
	rate   float64 // tokens per second
	burst  float64
	tokens float64 // may be negative: debt of a request larger than the burst
	last   time.Time
}

// NewRateLimiter returns a limiter whose per-tenant rate and burst come
// from limit, asked once per tenant until Reset.
func NewRateLimiter(limit func(tenant string) (perSecond float64, burst int)) *RateLimiter {
	return &RateLimiter{limit: limit, now: time.Now, buckets: map[string]*bucket{}}
}

// Reset forgets every bucket, so that limit is asked again (the limits
// were reloaded); each tenant starts again with a full burst.
func (r *RateLimiter) Reset() {
	r.mu.Lock()
	r.buckets = map[string]*bucket{}
	r.mu.Unlock()
}

// Allow takes n tokens from the tenant's bucket. When it cannot, it takes
// nothing and returns how long until the same request would pass (with no
// other traffic meanwhile).
func (r *RateLimiter) Allow(tenant string, n int) (ok bool, retryAfter time.Duration) {
	if n <= 0 {
		return true, 0
	}
	b := r.bucket(tenant)
	if b == nil {
		return true, 0
	}
	return b.allow(r.now(), float64(n))
}

// bucket returns the tenant's bucket, creating it full on first use; nil
// when the tenant is unlimited.
func (r *RateLimiter) bucket(tenant string) *bucket {
	r.mu.RLock()
	b, ok := r.buckets[tenant]
	r.mu.RUnlock()
	if ok {
		return b
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if b, ok := r.buckets[tenant]; ok {
		return b
	}
	perSecond, burst := r.limit(tenant)
	if perSecond > 0 {
		if burst <= 0 {
			burst = int(math.Ceil(perSecond))
		}
		b = &bucket{rate: perSecond, burst: float64(burst), tokens: float64(burst), last: r.now()}
	}
	// An unlimited tenant is remembered as nil, so that it costs one map
	// read per request like the others.
	r.buckets[tenant] = b
	return b
}

func (b *bucket) allow(now time.Time, n float64) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// A clock that goes backwards (it cannot with time.Now's monotonic
	// reading, but a caller's clock might) refills nothing.
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = math.Min(b.burst, b.tokens+elapsed.Seconds()*b.rate)
		b.last = now
	}
	need := math.Min(n, b.burst)
	// The tolerance absorbs float rounding, so that waiting exactly the
	// returned retryAfter is always enough.
	if b.tokens >= need-1e-6 {
		b.tokens -= n
		return true, 0
	}
	wait := time.Duration(math.Ceil((need - b.tokens) / b.rate * float64(time.Second)))
	return false, wait
}
