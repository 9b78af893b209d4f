package spanmetrics

import (
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/registry/registrytest"
	"github.com/spangraph/spangraph/pkg/spanfilter"
)

var end = time.Unix(1_700_000_000, 0)

// span makes a span of duration d ending at end, whose status is code
// with the message "boom".
func span(name string, kind tracepb.Span_SpanKind, d time.Duration, code tracepb.Status_StatusCode, attrs ...*commonpb.KeyValue) *tracepb.Span {
	s := otlptest.Span(1, name, kind, end, d, attrs...)
	s.Status = &tracepb.Status{Code: code, Message: "boom"}
	return s
}

// run pushes the resources through a processor built from cfg and returns
// the collected series.
func run(t *testing.T, cfg Config, rss ...*tracepb.ResourceSpans) map[string]float64 {
	t.Helper()
	reg := registry.New(registry.DefaultConfig())
	p, err := New(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	b := otlptest.Batch(t, otlptest.Request(rss...))
	defer b.Release()
	p.Push(b)
	series, _ := registrytest.Collect(reg, time.Now())
	return series
}

const (
	server = tracepb.Span_SPAN_KIND_SERVER
	client = tracepb.Span_SPAN_KIND_CLIENT
	unset  = tracepb.Status_STATUS_CODE_UNSET
	failed = tracepb.Status_STATUS_CODE_ERROR
)

func TestSpanMetrics(t *testing.T) {
	svc := []*commonpb.KeyValue{otlptest.Str("service.name", "checkout"), otlptest.Str("deployment.environment", "prod")}
	tests := []struct {
		name string
		cfg  func(*Config)
		rss  []*tracepb.ResourceSpans
		want map[string]float64 // subset of the collected series
		none []string           // label sets that must not appear
	}{{
		name: "intrinsic labels and values",
		rss: []*tracepb.ResourceSpans{otlptest.Resource(svc,
			span("GET /", server, 3*time.Millisecond, unset),
			span("GET /", server, 10*time.Millisecond, unset),
			span("GET /", server, time.Second, failed),
			span("SELECT", client, time.Millisecond, unset))},
		want: map[string]float64{
			`{__name__="traces_spanmetrics_calls_total", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}`:  2,
			`{__name__="traces_spanmetrics_calls_total", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_ERROR"}`:  1,
			`{__name__="traces_spanmetrics_calls_total", service="checkout", span_kind="SPAN_KIND_CLIENT", span_name="SELECT", status_code="STATUS_CODE_UNSET"}`: 1,
			// Default buckets are 0.002 × 2^k: 3 ms is in le=0.004, 10 ms in le=0.016.
			`{__name__="traces_spanmetrics_latency_bucket", le="0.002", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}`:  0,
			`{__name__="traces_spanmetrics_latency_bucket", le="0.004", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}`:  1,
			`{__name__="traces_spanmetrics_latency_bucket", le="0.016", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}`:  2,
			`{__name__="traces_spanmetrics_latency_bucket", le="16.384", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}`: 2,
			`{__name__="traces_spanmetrics_latency_bucket", le="+Inf", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}`:   2,
			`{__name__="traces_spanmetrics_latency_sum", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}`:                 0.013,
			`{__name__="traces_spanmetrics_latency_count", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}`:               2,
		},
		none: []string{"status_message", "deployment_environment"},
	}, {
		name: "dimensions: resource first, sanitised, collisions prefixed, non-strings formatted",
		cfg: func(c *Config) {
			c.Dimensions = []string{"deployment.environment", "http.status_code", "service", "ratio"}
		},
		rss: []*tracepb.ResourceSpans{otlptest.Resource(svc,
			span("GET /", server, time.Millisecond, unset,
				otlptest.Str("deployment.environment", "ignored: the resource wins"), otlptest.Int("http.status_code", 200), otlptest.Str("service", "x"), otlptest.Float("ratio", 0.5)))},
		want: map[string]float64{
			`{__name__="traces_spanmetrics_calls_total", __service="x", deployment_environment="prod", http_status_code="200", ratio="0.5", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}`: 1,
		},
	}, {
		name: "missing dimension drops the label",
		cfg:  func(c *Config) { c.Dimensions = []string{"http.route"} },
		rss:  []*tracepb.ResourceSpans{otlptest.Resource(svc, span("GET /", server, time.Millisecond, unset))},
		want: map[string]float64{
			`{__name__="traces_spanmetrics_calls_total", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}`: 1,
		},
	}, {
		name: "dimension mappings join what is present",
		cfg: func(c *Config) {
			c.DimensionMappings = []DimensionMapping{{Name: "route", SourceLabel: []string{"http.method", "http.missing", "http.route"}, Join: " "}}
		},
		rss: []*tracepb.ResourceSpans{otlptest.Resource(svc, span("x", server, time.Millisecond, unset, otlptest.Str("http.method", "GET"), otlptest.Str("http.route", "/cart")))},
		want: map[string]float64{
			`{__name__="traces_spanmetrics_calls_total", route="GET /cart", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="x", status_code="STATUS_CODE_UNSET"}`: 1,
		},
	}, {
		name: "intrinsics switched off and status_message on",
		cfg: func(c *Config) {
			c.IntrinsicDimensions = IntrinsicDimensions{Service: true, StatusMessage: true}
		},
		rss: []*tracepb.ResourceSpans{otlptest.Resource(svc, span("a", server, time.Millisecond, failed), span("b", client, time.Millisecond, failed))},
		want: map[string]float64{
			`{__name__="traces_spanmetrics_calls_total", service="checkout", status_message="boom"}`: 2,
		},
	}, {
		name: "filter policies",
		cfg: func(c *Config) {
			c.FilterPolicies = []spanfilter.Policy{{
				Include: &spanfilter.Match{MatchType: "strict", Attributes: []spanfilter.Attribute{{Key: "kind", Value: "SPAN_KIND_SERVER"}}},
				Exclude: &spanfilter.Match{MatchType: "regex", Attributes: []spanfilter.Attribute{{Key: "name", Value: "/health.*"}}},
			}}
		},
		rss: []*tracepb.ResourceSpans{otlptest.Resource(svc,
			span("GET /", server, time.Millisecond, unset), span("/healthz", server, time.Millisecond, unset), span("SELECT", client, time.Millisecond, unset))},
		want: map[string]float64{
			`{__name__="traces_spanmetrics_calls_total", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}`: 1,
		},
		none: []string{"/healthz", "SELECT"},
	}, {
		// Tempo's rule (processor.SpanMultiplier): a double ratio on the
		// span, else on the resource, counts 1/ratio; an integer does
		// not; tracestate only when enabled; sizes never multiplied.
		name: "span multiplier: a sampling ratio, sizes not multiplied",
		cfg:  func(c *Config) { c.SpanMultiplierKey = "sampling.ratio" },
		rss: []*tracepb.ResourceSpans{
			otlptest.Resource(append(svc, otlptest.Float("sampling.ratio", 0.5)),
				span("span ratio", server, time.Millisecond, unset, otlptest.Float("sampling.ratio", 0.1)),
				span("resource ratio", server, time.Millisecond, unset, otlptest.Int("sampling.ratio", 7)),
				func() *tracepb.Span {
					s := span("tracestate off", server, time.Millisecond, unset, otlptest.Float("sampling.ratio", 0.25))
					s.TraceState = "vendor=x,ot=th:8"
					return s
				}()),
			otlptest.Resource(svc, span("integer ratio", server, time.Millisecond, unset, otlptest.Int("sampling.ratio", 2))),
		},
		want: map[string]float64{
			`{__name__="traces_spanmetrics_calls_total", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="span ratio", status_code="STATUS_CODE_UNSET"}`:                   10,
			`{__name__="traces_spanmetrics_latency_count", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="span ratio", status_code="STATUS_CODE_UNSET"}`:                 10,
			`{__name__="traces_spanmetrics_latency_sum", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="span ratio", status_code="STATUS_CODE_UNSET"}`:                   0.01,
			`{__name__="traces_spanmetrics_size_total", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="span ratio", status_code="STATUS_CODE_UNSET"}`:                    float64(proto.Size(span("span ratio", server, time.Millisecond, unset, otlptest.Float("sampling.ratio", 0.1)))),
			`{__name__="traces_spanmetrics_calls_total", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="resource ratio", status_code="STATUS_CODE_UNSET"}`:               2,
			`{__name__="traces_spanmetrics_calls_total", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="tracestate off", status_code="STATUS_CODE_UNSET"}`:               4,
			`{__name__="traces_spanmetrics_calls_total", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="integer ratio", status_code="STATUS_CODE_UNSET"}`:                1,
			`{__name__="traces_spanmetrics_latency_bucket", le="0.002", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="integer ratio", status_code="STATUS_CODE_UNSET"}`: 1,
		},
	}, {
		name: "span multiplier from tracestate when enabled",
		cfg: func(c *Config) {
			c.SpanMultiplierKey = "sampling.ratio"
			c.EnableTraceStateSpanMultiplier = true
		},
		rss: []*tracepb.ResourceSpans{otlptest.Resource(svc,
			func() *tracepb.Span {
				s := span("sampled", server, time.Millisecond, unset, otlptest.Float("sampling.ratio", 0.5))
				s.TraceState = "vendor=x,ot=th:c" // kept with probability 1/4: wins over the ratio
				return s
			}(),
			func() *tracepb.Span {
				s := span("bad tracestate", server, time.Millisecond, unset, otlptest.Float("sampling.ratio", 0.5))
				s.TraceState = "ot=th:zz" // invalid: the ratio counts
				return s
			}())},
		want: map[string]float64{
			`{__name__="traces_spanmetrics_calls_total", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="sampled", status_code="STATUS_CODE_UNSET"}`:                4,
			`{__name__="traces_spanmetrics_latency_sum", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="sampled", status_code="STATUS_CODE_UNSET"}`:                0.004,
			`{__name__="traces_spanmetrics_latency_bucket", le="0.002", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="sampled", status_code="STATUS_CODE_UNSET"}`: 4,
			`{__name__="traces_spanmetrics_calls_total", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="bad tracestate", status_code="STATUS_CODE_UNSET"}`:         2,
		},
	}, {
		name: "target info with job and instance",
		cfg: func(c *Config) {
			c.EnableTargetInfo = true
			c.TargetInfoExcludedDimensions = []string{"host.name"}
		},
		rss: []*tracepb.ResourceSpans{otlptest.Resource(append(svc, otlptest.Str("service.namespace", "shop"), otlptest.Str("service.instance.id", "pod-1"), otlptest.Str("host.name", "n1"), otlptest.Str("k8s.pod.name", "pod-1")),
			span("GET /", server, time.Millisecond, unset))},
		want: map[string]float64{
			`{__name__="traces_target_info", deployment_environment="prod", instance="pod-1", job="shop/checkout", k8s_pod_name="pod-1"}`:                                                              1,
			`{__name__="traces_spanmetrics_calls_total", instance="pod-1", job="shop/checkout", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}`: 1,
		},
		none: []string{"host_name"},
	}, {
		name: "span size is counted",
		rss:  []*tracepb.ResourceSpans{otlptest.Resource(svc, span("s", server, time.Millisecond, unset))},
		want: map[string]float64{
			`{__name__="traces_spanmetrics_size_total", service="checkout", span_kind="SPAN_KIND_SERVER", span_name="s", status_code="STATUS_CODE_UNSET"}`: float64(proto.Size(span("s", server, time.Millisecond, unset))),
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			got := run(t, cfg, tc.rss...)
			for k, v := range tc.want {
				g, ok := got[k]
				if !ok || g < v-1e-9 || g > v+1e-9 {
					t.Errorf("%s = %v (present %v), want %v\nseries:\n%s", k, g, ok, v,
						strings.Join(registrytest.Filter(got, "{__name__=\"traces_"), "\n"))
				}
			}
			for k := range got {
				for _, bad := range tc.none {
					if strings.Contains(k, bad) {
						t.Errorf("unexpected series %s", k)
					}
				}
			}
		})
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.HistogramBuckets = []float64{1, 0.5} }, "spanmetrics.histogram_buckets[1]"},
		{func(c *Config) { c.HistogramBuckets = nil }, "spanmetrics.histogram_buckets"},
		{func(c *Config) { c.Dimensions = []string{""} }, "spanmetrics.dimensions[0]"},
		{func(c *Config) { c.DimensionMappings = []DimensionMapping{{Name: "x"}} }, "spanmetrics.dimension_mappings[0].source_labels"},
		{func(c *Config) {
			c.FilterPolicies = []spanfilter.Policy{{Include: &spanfilter.Match{MatchType: "fuzzy", Attributes: []spanfilter.Attribute{{Key: "name", Value: "x"}}}}}
		}, "spanmetrics.filter_policies[0].include.match_type"},
		{func(c *Config) {
			c.FilterPolicies = []spanfilter.Policy{{Exclude: &spanfilter.Match{MatchType: "regex", Attributes: []spanfilter.Attribute{{Key: "span.x", Value: "("}}}}}
		}, "spanmetrics.filter_policies[0].exclude.attributes[0].value"},
	}
	for _, tc := range tests {
		cfg := DefaultConfig()
		tc.mutate(&cfg)
		_, err := New(cfg, registry.New(registry.DefaultConfig()))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want it to name %s", err, tc.want)
		}
	}
}

func TestDefaultBuckets(t *testing.T) {
	b := DefaultBuckets()
	if len(b) != 14 || b[0] != 0.002 || b[13] != 16.384 {
		t.Errorf("default buckets %v, want 0.002 … 16.384 (14 bounds)", b)
	}
}
