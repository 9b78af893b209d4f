// Package limits enforces per-tenant ingestion limits on decoded OTLP
// batches: a span rate (token bucket), a cap on spans per request, on
// attributes per span and on attribute value length, and a cap on the
// distinct span names of a tenant, with optional clustering of id-like path
// segments, so that one noisy or badly instrumented tenant cannot exhaust
// the process's memory or series budget.
//
// Every limit is 0 = unlimited, set for all tenants under `limits:` and
// overridable per tenant under `limits.overrides.<tenant>`. A Limits value
// is safe for concurrent use.
//
// Order of application, as Apply does it: the whole-request checks first
// (spans per request, then the rate), so that a refused request has changed
// nothing — no tokens spent on a request that is then refused for its size,
// no span names registered, no attribute truncated; then the per-span
// checks; then span-name normalisation on what is left.
package limits

import (
	"fmt"
	"math"
	"sort"
	"sync/atomic"
	"time"

	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// TenantLimits are the limits of one tenant; 0 means unlimited.
type TenantLimits struct {
	// SpansPerSecond is the sustained rate of a token bucket, in spans.
	SpansPerSecond float64 `yaml:"spans_per_second"`
	// Burst is the bucket size; 0 means one second's worth of
	// SpansPerSecond (rounded up).
	Burst int `yaml:"burst"`
	// MaxSpansPerRequest refuses a whole request with more spans.
	MaxSpansPerRequest int `yaml:"max_spans_per_request"`
	// MaxAttributesPerSpan refuses (partial success) spans with more
	// attributes.
	MaxAttributesPerSpan int `yaml:"max_attributes_per_span"`
	// MaxAttributeValueLength truncates longer string values of span and
	// resource attributes, in bytes (cut back to a UTF-8 boundary).
	MaxAttributeValueLength int `yaml:"max_attribute_value_length"`
	// MaxSpanNames caps the distinct span names of the tenant; further new
	// names become OverflowSpanName.
	MaxSpanNames int `yaml:"max_span_names"`
	// SpanNameClustering replaces id-like path segments of span names
	// with ClusterPlaceholder (see AppendClustered).
	SpanNameClustering bool `yaml:"span_name_clustering"`
}

// Override is a per-tenant override: keys that are set replace the
// defaults, keys that are absent inherit them. Pointers tell "absent" from
// an explicit 0 (unlimited for this tenant).
type Override struct {
	SpansPerSecond          *float64 `yaml:"spans_per_second"`
	Burst                   *int     `yaml:"burst"`
	MaxSpansPerRequest      *int     `yaml:"max_spans_per_request"`
	MaxAttributesPerSpan    *int     `yaml:"max_attributes_per_span"`
	MaxAttributeValueLength *int     `yaml:"max_attribute_value_length"`
	MaxSpanNames            *int     `yaml:"max_span_names"`
	SpanNameClustering      *bool    `yaml:"span_name_clustering"`
}

// Config is the `limits:` section: defaults for every tenant, inline, and
// per-tenant overrides.
type Config struct {
	TenantLimits `yaml:",inline"`
	Overrides    map[string]Override `yaml:"overrides"`
}

// DefaultConfig returns the defaults. Two limits are on because their
// absence is an attack surface, not a feature: 10 000 span names per tenant
// (ids in span names would otherwise make new series with every request)
// and 1 024 attributes per span (eight times the OpenTelemetry SDKs' own
// default cap of 128). Rates and sizes are left to the operator.
func DefaultConfig() Config {
	return Config{TenantLimits: TenantLimits{MaxSpanNames: 10_000, MaxAttributesPerSpan: 1024}}
}

// Validate checks the config; errors name the key under prefix.
func (c *Config) Validate(prefix string) error {
	if err := c.TenantLimits.validate(prefix); err != nil {
		return err
	}
	// Sorted, so that the error reported for a bad config is always the
	// same one.
	tenants := make([]string, 0, len(c.Overrides))
	for t := range c.Overrides {
		tenants = append(tenants, t)
	}
	sort.Strings(tenants)
	for _, t := range tenants {
		key := prefix + ".overrides." + t
		if err := tenant.Validate(t); err != nil {
			return fmt.Errorf("%s: invalid tenant id: %w", key, err)
		}
		o := c.Overrides[t]
		l := o.apply(c.TenantLimits)
		if err := l.validate(key); err != nil {
			return err
		}
	}
	return nil
}

func (l *TenantLimits) validate(prefix string) error {
	switch {
	case math.IsNaN(l.SpansPerSecond) || math.IsInf(l.SpansPerSecond, 0) || l.SpansPerSecond < 0:
		return fmt.Errorf("%s.spans_per_second: must be a non-negative number, got %v", prefix, l.SpansPerSecond)
	case l.Burst < 0:
		return fmt.Errorf("%s.burst: must not be negative, got %d", prefix, l.Burst)
	case l.MaxSpansPerRequest < 0:
		return fmt.Errorf("%s.max_spans_per_request: must not be negative, got %d", prefix, l.MaxSpansPerRequest)
	case l.MaxAttributesPerSpan < 0:
		return fmt.Errorf("%s.max_attributes_per_span: must not be negative, got %d", prefix, l.MaxAttributesPerSpan)
	case l.MaxAttributeValueLength < 0:
		return fmt.Errorf("%s.max_attribute_value_length: must not be negative, got %d", prefix, l.MaxAttributeValueLength)
	case l.MaxSpanNames < 0:
		return fmt.Errorf("%s.max_span_names: must not be negative, got %d", prefix, l.MaxSpanNames)
	}
	return nil
}

// apply returns base with the keys set in o replaced.
func (o *Override) apply(base TenantLimits) TenantLimits {
	if o.SpansPerSecond != nil {
		base.SpansPerSecond = *o.SpansPerSecond
	}
	if o.Burst != nil {
		base.Burst = *o.Burst
	}
	if o.MaxSpansPerRequest != nil {
		base.MaxSpansPerRequest = *o.MaxSpansPerRequest
	}
	if o.MaxAttributesPerSpan != nil {
		base.MaxAttributesPerSpan = *o.MaxAttributesPerSpan
	}
	if o.MaxAttributeValueLength != nil {
		base.MaxAttributeValueLength = *o.MaxAttributeValueLength
	}
	if o.MaxSpanNames != nil {
		base.MaxSpanNames = *o.MaxSpanNames
	}
	if o.SpanNameClustering != nil {
		base.SpanNameClustering = *o.SpanNameClustering
	}
	return base
}

// effective fills in derived defaults (the burst).
func (l TenantLimits) effective() TenantLimits {
	if l.SpansPerSecond > 0 && l.Burst == 0 {
		l.Burst = int(math.Min(math.Ceil(l.SpansPerSecond), math.MaxInt32))
	}
	return l
}

// Limits applies the limits of every tenant. Build it with New; Update
// replaces them (a config reload).
type Limits struct {
	table atomic.Pointer[table]

	rate  *RateLimiter
	names *SpanNames
}

// table is a config's limits resolved per tenant, read-only once built.
type table struct {
	defaults  TenantLimits
	overrides map[string]TenantLimits
}

func newTable(cfg Config) *table {
	t := &table{
		defaults:  cfg.TenantLimits.effective(),
		overrides: make(map[string]TenantLimits, len(cfg.Overrides)),
	}
	for id, o := range cfg.Overrides {
		t.overrides[id] = o.apply(cfg.TenantLimits).effective()
	}
	return t
}

// New validates cfg and returns the limits it describes. Span names not
// seen for spanNameTTL (the registry's stale_duration: their series are
// gone by then) make room for new ones; 0 keeps them for good.
func New(cfg Config, spanNameTTL time.Duration) (*Limits, error) {
	if err := cfg.Validate("limits"); err != nil {
		return nil, err
	}
	l := &Limits{}
	l.table.Store(newTable(cfg))
	l.rate = NewRateLimiter(func(tenant string) (float64, int) {
		tl := l.For(tenant)
		return tl.SpansPerSecond, tl.Burst
	})
	l.names = NewSpanNames(func(tenant string) (int, bool) {
		tl := l.For(tenant)
		return tl.MaxSpanNames, tl.SpanNameClustering
	}, spanNameTTL)
	return l, nil
}

// Update validates cfg and makes its limits apply from the next request.
// Rate buckets start again full at the new rates.
func (l *Limits) Update(cfg Config) error {
	if err := cfg.Validate("limits"); err != nil {
		return err
	}
	l.table.Store(newTable(cfg))
	l.rate.Reset()
	return nil
}

// For returns the effective limits of tenant (burst filled in).
func (l *Limits) For(tenant string) TenantLimits {
	t := l.table.Load()
	if o, ok := t.overrides[tenant]; ok {
		return o
	}
	return t.defaults
}

// RateLimiter returns the tenants' token buckets.
func (l *Limits) RateLimiter() *RateLimiter { return l.rate }

// SpanNames returns the tenants' span-name sets.
func (l *Limits) SpanNames() *SpanNames { return l.names }

// Apply runs every limit on b in order (see the package comment). A
// non-nil err is an *Error refusing the whole request (b is unchanged and
// still owned by the caller); otherwise rejected spans were removed from b
// and reason describes them for the OTLP partial_success answer.
func (l *Limits) Apply(tenant string, b *otlp.Batch) (rejected int, reason string, err error) {
	if err := l.CheckRequest(tenant, b.SpanCount); err != nil {
		return 0, "", err
	}
	if err := l.Allow(tenant, b.SpanCount); err != nil {
		return 0, "", err
	}
	rejected, reason = l.Check(tenant, b)
	if b.SpanCount > 0 {
		l.names.Apply(tenant, b)
	}
	return rejected, reason, nil
}

// Allow takes n spans from the tenant's bucket, or returns an *Error
// (ErrRateLimited) saying when to retry.
func (l *Limits) Allow(tenant string, n int) error {
	ok, wait := l.rate.Allow(tenant, n)
	if ok {
		return nil
	}
	rejectedSpans.WithLabelValues(tenant, ReasonRateLimited).Add(float64(n))
	return &Error{
		kind:       ErrRateLimited,
		Reason:     ReasonRateLimited,
		RetryAfter: wait,
		msg: fmt.Sprintf("tenant %q is over its rate of %g spans/s (burst %d, limits.spans_per_second); retry in %s",
			tenant, l.For(tenant).SpansPerSecond, l.For(tenant).Burst, ceilMillis(wait)),
	}
}
