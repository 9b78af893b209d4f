package limits

import (
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/spangraph/spangraph/pkg/otlp"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for none
	}{
		{"defaults", DefaultConfig(), ""},
		{"all set", Config{TenantLimits: TenantLimits{SpansPerSecond: 100, Burst: 10, MaxSpansPerRequest: 5, MaxAttributesPerSpan: 3, MaxAttributeValueLength: 8, MaxSpanNames: 2, SpanNameClustering: true}}, ""},
		{"negative rate", Config{TenantLimits: TenantLimits{SpansPerSecond: -1}}, "limits.spans_per_second: must be a non-negative number"},
		{"NaN rate", Config{TenantLimits: TenantLimits{SpansPerSecond: math.NaN()}}, "limits.spans_per_second"},
		{"infinite rate", Config{TenantLimits: TenantLimits{SpansPerSecond: math.Inf(1)}}, "limits.spans_per_second"},
		{"negative burst", Config{TenantLimits: TenantLimits{Burst: -1}}, "limits.burst: must not be negative, got -1"},
		{"negative spans per request", Config{TenantLimits: TenantLimits{MaxSpansPerRequest: -2}}, "limits.max_spans_per_request"},
		{"negative attributes", Config{TenantLimits: TenantLimits{MaxAttributesPerSpan: -1}}, "limits.max_attributes_per_span"},
		{"negative value length", Config{TenantLimits: TenantLimits{MaxAttributeValueLength: -1}}, "limits.max_attribute_value_length"},
		{"negative span names", Config{TenantLimits: TenantLimits{MaxSpanNames: -1}}, "limits.max_span_names"},
		{"bad override tenant", Config{Overrides: map[string]Override{"a/b": {}}}, "limits.overrides.a/b: invalid tenant id"},
		{"empty override tenant", Config{Overrides: map[string]Override{"": {}}}, "limits.overrides.: invalid tenant id"},
		{"bad override value", Config{Overrides: map[string]Override{"team-a": {MaxSpanNames: ptr(-5)}}}, "limits.overrides.team-a.max_span_names: must not be negative, got -5"},
		{"first bad override in order", Config{Overrides: map[string]Override{
			"team-b": {Burst: ptr(-1)}, "team-a": {Burst: ptr(-2)},
		}}, "limits.overrides.team-a.burst"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate("limits")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if _, err := New(tc.cfg, 0); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

// TestConfigYAML decodes the documented shape strictly, as pkg/config
// does, and checks that overrides inherit the keys they do not set.
func TestConfigYAML(t *testing.T) {
	const doc = `
spans_per_second: 1000
max_spans_per_request: 500
max_attributes_per_span: 64
max_attribute_value_length: 2048
max_span_names: 1000
overrides:
  team-a:
    spans_per_second: 50
    burst: 200
    span_name_clustering: true
  team-b:
    max_span_names: 0
`
	var cfg Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	l := mustNew(t, cfg)
	for _, tc := range []struct {
		tenant string
		want   TenantLimits
	}{
		{"other", TenantLimits{SpansPerSecond: 1000, Burst: 1000, MaxSpansPerRequest: 500, MaxAttributesPerSpan: 64, MaxAttributeValueLength: 2048, MaxSpanNames: 1000}},
		{"team-a", TenantLimits{SpansPerSecond: 50, Burst: 200, MaxSpansPerRequest: 500, MaxAttributesPerSpan: 64, MaxAttributeValueLength: 2048, MaxSpanNames: 1000, SpanNameClustering: true}},
		// An explicit 0 is "unlimited for this tenant", not "inherit".
		{"team-b", TenantLimits{SpansPerSecond: 1000, Burst: 1000, MaxSpansPerRequest: 500, MaxAttributesPerSpan: 64, MaxAttributeValueLength: 2048, MaxSpanNames: 0}},
	} {
		if got := l.For(tc.tenant); got != tc.want {
			t.Errorf("For(%q) = %+v, want %+v", tc.tenant, got, tc.want)
		}
	}

	dec = yaml.NewDecoder(strings.NewReader("overrides: {team-a: {max_span_name: 3}}"))
	dec.KnownFields(true)
	if err := dec.Decode(&Config{}); err == nil || !strings.Contains(err.Error(), "max_span_name") {
		t.Fatalf("misspelt override key: err = %v, want it refused", err)
	}
}

func TestBurstDefault(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		burst int
		want  int
	}{
		{0, 0, 0}, {100, 0, 100}, {2.5, 0, 3}, {100, 7, 7}, {0.1, 0, 1},
	} {
		got := TenantLimits{SpansPerSecond: tc.rate, Burst: tc.burst}.effective().Burst
		if got != tc.want {
			t.Errorf("rate %v burst %d: effective burst %d, want %d", tc.rate, tc.burst, got, tc.want)
		}
	}
}

func TestCheckRequest(t *testing.T) {
	l := mustNew(t, Config{
		TenantLimits: TenantLimits{MaxSpansPerRequest: 10},
		Overrides:    map[string]Override{"big": {MaxSpansPerRequest: ptr(0)}, "small": {MaxSpansPerRequest: ptr(2)}},
	})
	for _, tc := range []struct {
		tenant string
		spans  int
		refuse bool
	}{
		{"t-req", 0, false}, {"t-req", 10, false}, {"t-req", 11, true},
		{"big", 1_000_000, false},
		{"small", 2, false}, {"small", 3, true},
	} {
		before := testutil.ToFloat64(rejectedSpans.WithLabelValues(tc.tenant, ReasonTooManySpans))
		err := l.CheckRequest(tc.tenant, tc.spans)
		if (err != nil) != tc.refuse {
			t.Fatalf("%s with %d spans: err = %v, want refused %v", tc.tenant, tc.spans, err, tc.refuse)
		}
		after := testutil.ToFloat64(rejectedSpans.WithLabelValues(tc.tenant, ReasonTooManySpans))
		if !tc.refuse {
			if after != before {
				t.Errorf("%s: counted %v rejected spans for an accepted request", tc.tenant, after-before)
			}
			continue
		}
		if !errors.Is(err, ErrTooManySpans) || errors.Is(err, ErrRateLimited) {
			t.Errorf("err %v is not ErrTooManySpans", err)
		}
		if !strings.Contains(err.Error(), "limits.max_spans_per_request") {
			t.Errorf("error %q does not name the key", err)
		}
		if after-before != float64(tc.spans) {
			t.Errorf("rejected spans counter +%v, want +%d", after-before, tc.spans)
		}
	}
}

func TestCheckAttributes(t *testing.T) {
	l := mustNew(t, Config{
		TenantLimits: TenantLimits{MaxAttributesPerSpan: 3},
		Overrides:    map[string]Override{"lenient": {MaxAttributesPerSpan: ptr(0)}},
	})
	res := func() testResource {
		return testResource{attrs: map[string]string{"service.name": "svc"}, spans: []testSpan{
			{name: "ok-0"}, {name: "ok-3", ints: 3}, {name: "bad-4", ints: 4}, {name: "ok-1", ints: 1}, {name: "bad-9", ints: 9},
		}}
	}
	b := batchOf(t, res(), res())
	defer b.Release()
	rejected, reason := l.Check("t-attrs", b)
	if rejected != 4 || b.SpanCount != 6 {
		t.Fatalf("rejected %d, left %d spans; want 4 and 6", rejected, b.SpanCount)
	}
	if want := "4 spans with more than 3 attributes (limits.max_attributes_per_span)"; reason != want {
		t.Errorf("reason %q, want %q", reason, want)
	}
	for _, n := range spanNames(b) {
		if !strings.HasPrefix(n, "ok-") {
			t.Errorf("span %q kept", n)
		}
	}
	if got := testutil.ToFloat64(rejectedSpans.WithLabelValues("t-attrs", ReasonTooManyAttributes)); got != 4 {
		t.Errorf("rejected_spans_total{reason=too_many_attributes} = %v, want 4", got)
	}

	b2 := batchOf(t, res())
	defer b2.Release()
	if rejected, reason := l.Check("lenient", b2); rejected != 0 || reason != "" || b2.SpanCount != 5 {
		t.Errorf("override 0 (unlimited): rejected %d %q, %d spans left", rejected, reason, b2.SpanCount)
	}
}

func TestCheckTruncatesValues(t *testing.T) {
	l := mustNew(t, Config{TenantLimits: TenantLimits{MaxAttributeValueLength: 5}})
	b := batchOf(t, testResource{
		attrs: map[string]string{"service.name": "checkout", "host": "abc"},
		spans: []testSpan{{
			name:  "a-long-span-name-is-not-an-attribute",
			attrs: map[string]string{"short": "12345", "long": "123456789", "utf8": "ééé", "cjk": "日本語"},
			ints:  1,
		}},
	})
	defer b.Release()
	before := testutil.ToFloat64(truncatedValues.WithLabelValues("t-trunc"))
	if rejected, _ := l.Check("t-trunc", b); rejected != 0 || b.SpanCount != 1 {
		t.Fatalf("truncation rejected %d spans", rejected)
	}
	value := func(attrs []otlp.KeyValue, k string) otlp.Value {
		v, _ := otlp.Lookup(attrs, k)
		return v
	}
	rs := b.Resources[0]
	s := rs.Spans[0]
	for _, tc := range []struct {
		attrs []otlp.KeyValue
		key   string
		want  string
	}{
		{rs.Attributes, "service.name", "check"},
		{rs.Attributes, "host", "abc"},
		{s.Attributes, "short", "12345"},
		{s.Attributes, "long", "12345"},
		{s.Attributes, "utf8", "éé"}, // 6 bytes: cut back to the rune boundary at 4
		{s.Attributes, "cjk", "日"},   // 9 bytes: 3-byte runes, boundary at 3
	} {
		if got := value(tc.attrs, tc.key).Str; got != tc.want {
			t.Errorf("%s = %q, want %q", tc.key, got, tc.want)
		}
	}
	if v := value(s.Attributes, "i0"); v.Type != otlp.ValueInt || v.Int != 0 {
		t.Errorf("int attribute changed: %+v", v)
	}
	if s.Name != "a-long-span-name-is-not-an-attribute" {
		t.Errorf("span name changed to %q", s.Name)
	}
	if got := testutil.ToFloat64(truncatedValues.WithLabelValues("t-trunc")) - before; got != 4 {
		t.Errorf("truncated counter +%v, want +4 (service.name, long, utf8, cjk)", got)
	}
}

func TestTruncateUTF8(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"", 3, ""}, {"abc", 3, "abc"}, {"abcd", 3, "abc"}, {"abcd", 0, ""},
		{"aé", 2, "a"}, {"aé", 3, "aé"}, {"😀x", 3, ""}, {"😀x", 4, "😀"}, {"x😀", 4, "x"},
	} {
		got := truncateUTF8(tc.in, tc.max)
		if got != tc.want {
			t.Errorf("truncateUTF8(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestCheckNoLimitsIsNoOp(t *testing.T) {
	l := mustNew(t, DefaultConfig())
	b := batchOf(t, testResource{spans: []testSpan{{name: "x", ints: 1000, attrs: map[string]string{"v": strings.Repeat("x", 1<<16)}}}})
	defer b.Release()
	if rejected, reason, err := l.Apply("t-none", b); rejected != 0 || reason != "" || err != nil || b.SpanCount != 1 {
		t.Fatalf("no limits: rejected %d %q %v", rejected, reason, err)
	}
	if v, _ := otlp.Lookup(b.Resources[0].Spans[0].Attributes, "v"); len(v.Str) != 1<<16 {
		t.Errorf("value truncated to %d without a limit", len(v.Str))
	}
}

// TestApplyRefusedRequestUnchanged: a request refused as a whole must be
// left as it came, with no span name registered and no token spent.
func TestApplyRefusedRequestUnchanged(t *testing.T) {
	l := mustNew(t, Config{TenantLimits: TenantLimits{
		SpansPerSecond: 1, Burst: 3, MaxSpansPerRequest: 4, MaxSpanNames: 10, MaxAttributeValueLength: 1,
	}})
	now := time.Unix(1000, 0)
	l.rate.now = func() time.Time { return now }

	big := batchOf(t, namedSpans("a", "b", "c", "d", "e"))
	defer big.Release()
	_, _, err := l.Apply("t-apply", big)
	if !errors.Is(err, ErrTooManySpans) {
		t.Fatalf("5 spans over max 4: err = %v", err)
	}
	if l.names.Len("t-apply") != 0 || big.Resources[0].Attributes[0].Value.Str != "svc" {
		t.Fatal("a request refused for its size was modified")
	}

	ok := batchOf(t, namedSpans("a", "b", "c"))
	defer ok.Release()
	if _, _, err := l.Apply("t-apply", ok); err != nil {
		t.Fatalf("3 spans with a full bucket of 3: %v", err)
	}
	if l.names.Len("t-apply") != 3 || ok.Resources[0].Attributes[0].Value.Str != "s" {
		t.Fatalf("accepted request: %d names, service.name %q", l.names.Len("t-apply"), ok.Resources[0].Attributes[0].Value.Str)
	}

	limited := batchOf(t, namedSpans("x"))
	defer limited.Release()
	_, _, err = l.Apply("t-apply", limited)
	var le *Error
	if !errors.As(err, &le) || !errors.Is(err, ErrRateLimited) || le.RetryAfter != time.Second {
		t.Fatalf("empty bucket: err = %#v, want ErrRateLimited retrying after 1s", err)
	}
	if l.names.Len("t-apply") != 3 || limited.Resources[0].Attributes[0].Value.Str != "svc" {
		t.Fatal("a rate-limited request was modified")
	}
}

func TestErrorStatus(t *testing.T) {
	tooMany := &Error{kind: ErrTooManySpans, Reason: ReasonTooManySpans, msg: "too many"}
	limited := &Error{kind: ErrRateLimited, Reason: ReasonRateLimited, RetryAfter: 1500 * time.Millisecond, msg: "slow down"}

	if tooMany.HTTPStatus() != http.StatusRequestEntityTooLarge || tooMany.RetryAfterHeader() != "" {
		t.Errorf("too many spans: HTTP %d, Retry-After %q", tooMany.HTTPStatus(), tooMany.RetryAfterHeader())
	}
	if limited.HTTPStatus() != http.StatusTooManyRequests || limited.RetryAfterHeader() != "2" {
		t.Errorf("rate limited: HTTP %d, Retry-After %q; want 429 and 2 (rounded up)", limited.HTTPStatus(), limited.RetryAfterHeader())
	}
	if h := (&Error{kind: ErrRateLimited, RetryAfter: time.Microsecond}).RetryAfterHeader(); h != "1" {
		t.Errorf("Retry-After of 1µs = %q, want 1", h)
	}

	// grpc-go answers with GRPCStatus when a handler returns the error.
	st, ok := status.FromError(tooMany)
	if !ok || st.Code() != codes.ResourceExhausted || len(st.Details()) != 0 {
		t.Errorf("too many spans: gRPC %v %v, want ResourceExhausted without RetryInfo (not retryable)", st.Code(), st.Details())
	}
	st, ok = status.FromError(limited)
	if !ok || st.Code() != codes.ResourceExhausted || st.Message() != "slow down" {
		t.Fatalf("rate limited: gRPC %v %q", st.Code(), st.Message())
	}
	var delay time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			delay = ri.RetryDelay.AsDuration()
		}
	}
	if delay != 1500*time.Millisecond {
		t.Errorf("RetryInfo delay %s, want 1.5s (exporters retry ResourceExhausted only with it)", delay)
	}
}

func TestJoinReasons(t *testing.T) {
	if got := JoinReasons("", "a", "", "b"); got != "a; b" {
		t.Errorf("JoinReasons = %q", got)
	}
	if got := JoinReasons("", ""); got != "" {
		t.Errorf("JoinReasons of nothing = %q", got)
	}
}

// --- rate limiter ---

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newTestLimiter(rates map[string][2]float64) (*RateLimiter, *clock) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	r := NewRateLimiter(func(tenant string) (float64, int) {
		v := rates[tenant]
		return v[0], int(v[1])
	})
	r.now = c.now
	return r, c
}

func TestRateLimiterRefill(t *testing.T) {
	r, c := newTestLimiter(map[string][2]float64{"a": {100, 50}, "b": {10, 0}})
	type step struct {
		advance time.Duration
		tenant  string
		n       int
		ok      bool
		retry   time.Duration
	}
	for i, s := range []step{
		{0, "a", 50, true, 0},                     // a starts full: the whole burst
		{0, "a", 1, false, 10 * time.Millisecond}, // empty: one span takes 1/100 s
		{5 * time.Millisecond, "a", 1, false, 5 * time.Millisecond},
		{5 * time.Millisecond, "a", 1, true, 0},
		{0, "a", 20, false, 200 * time.Millisecond},
		{time.Hour, "a", 50, true, 0}, // refill is capped at the burst…
		{0, "a", 1, false, 10 * time.Millisecond},
		{time.Second, "a", 51, true, 0},           // …but a request over the burst passes on a full bucket
		{0, "a", 1, false, 20 * time.Millisecond}, // and leaves a debt of 1 span
		{20 * time.Millisecond, "a", 1, true, 0},
		{0, "b", 10, true, 0}, // b: burst defaults to one second of rate; independent of a
		{0, "b", 5, false, 500 * time.Millisecond},
		{0, "unlimited", 1 << 30, true, 0},
		{0, "a", 0, true, 0}, // nothing to take
	} {
		c.add(s.advance)
		ok, retry := r.Allow(s.tenant, s.n)
		if ok != s.ok || retry != s.retry {
			t.Fatalf("step %d (%s, %d): Allow = %v, %s; want %v, %s", i, s.tenant, s.n, ok, retry, s.ok, s.retry)
		}
	}
}

// TestRateLimiterRetryAfterSuffices: waiting exactly the returned time is
// always enough, whatever float rounding does.
func TestRateLimiterRetryAfterSuffices(t *testing.T) {
	r, c := newTestLimiter(map[string][2]float64{"x": {7.3, 3}})
	for i := 0; i < 1000; i++ {
		n := i%5 + 1
		ok, wait := r.Allow("x", n)
		if ok {
			continue
		}
		c.add(wait)
		if ok, again := r.Allow("x", n); !ok {
			t.Fatalf("iteration %d: still refused after waiting %s (then %s more)", i, wait, again)
		}
	}
}

func TestRateLimiterLongRunRate(t *testing.T) {
	// 100 spans/s for 10 simulated seconds, offered 1000 spans/s in
	// requests of 250 (over the burst of 50): about 1000 + 50 accepted.
	r, c := newTestLimiter(map[string][2]float64{"x": {100, 50}})
	accepted := 0
	for i := 0; i < 40; i++ {
		if ok, _ := r.Allow("x", 250); ok {
			accepted += 250
		}
		c.add(250 * time.Millisecond)
	}
	if accepted < 750 || accepted > 1300 {
		t.Fatalf("accepted %d spans in 10 s at 100/s", accepted)
	}
}

func TestRateLimiterConcurrent(t *testing.T) {
	r, c := newTestLimiter(map[string][2]float64{"a": {1000, 500}, "b": {1000, 300}})
	var allowed [2]atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				for ti, tenant := range []string{"a", "b"} {
					if ok, _ := r.Allow(tenant, 1); ok {
						allowed[ti].Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	// The clock stood still: exactly the bursts were granted.
	if allowed[0].Load() != 500 || allowed[1].Load() != 300 {
		t.Fatalf("allowed %d and %d, want exactly 500 and 300", allowed[0].Load(), allowed[1].Load())
	}
	c.add(100 * time.Millisecond)
	if ok, _ := r.Allow("a", 100); !ok {
		t.Fatal("no refill after 100ms")
	}
}

func TestLimitsAllowUsesOverrides(t *testing.T) {
	l := mustNew(t, Config{
		TenantLimits: TenantLimits{SpansPerSecond: 10},
		Overrides:    map[string]Override{"vip": {SpansPerSecond: ptr(0.0)}, "slow": {SpansPerSecond: ptr(1.0), Burst: ptr(2)}},
	})
	if err := l.Allow("vip", 1_000_000); err != nil {
		t.Errorf("unlimited override refused: %v", err)
	}
	if err := l.Allow("slow", 2); err != nil {
		t.Fatal(err)
	}
	before := testutil.ToFloat64(rejectedSpans.WithLabelValues("slow", ReasonRateLimited))
	err := l.Allow("slow", 1)
	if !errors.Is(err, ErrRateLimited) || !strings.Contains(err.Error(), "limits.spans_per_second") {
		t.Fatalf("err = %v", err)
	}
	if got := testutil.ToFloat64(rejectedSpans.WithLabelValues("slow", ReasonRateLimited)) - before; got != 1 {
		t.Errorf("rate_limited counter +%v, want +1", got)
	}
	if err := l.Allow("default-tenant", 10); err != nil {
		t.Errorf("default burst of 10: %v", err)
	}
}

// TestUpdate: reloaded limits apply from the next request, rates
// included; an invalid config is refused whole and changes nothing.
func TestUpdate(t *testing.T) {
	l := mustNew(t, Config{TenantLimits: TenantLimits{MaxSpansPerRequest: 10, SpansPerSecond: 1, Burst: 5}})
	if err := l.Allow("t-upd", 5); err != nil {
		t.Fatal(err)
	}
	if err := l.Allow("t-upd", 5); err == nil {
		t.Fatal("the bucket of 5 let 10 spans through")
	}
	if err := l.Update(Config{
		TenantLimits: TenantLimits{MaxSpansPerRequest: 100, SpansPerSecond: 1000},
		Overrides:    map[string]Override{"small": {MaxSpansPerRequest: ptr(2)}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := l.CheckRequest("t-upd", 50); err != nil {
		t.Errorf("the new max_spans_per_request does not apply: %v", err)
	}
	if err := l.CheckRequest("small", 3); err == nil {
		t.Error("the new override does not apply")
	}
	if err := l.Allow("t-upd", 500); err != nil {
		t.Errorf("the new rate does not apply: %v", err)
	}
	if err := l.Update(Config{TenantLimits: TenantLimits{MaxSpansPerRequest: -1}}); err == nil || !strings.Contains(err.Error(), "limits.max_spans_per_request") {
		t.Errorf("invalid update: %v, want an error naming the key", err)
	}
	if err := l.CheckRequest("t-upd", 50); err != nil {
		t.Errorf("a refused update changed the limits: %v", err)
	}
}
