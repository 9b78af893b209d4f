package limits

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Self-metrics, on the default registry like the receiver's. Label values
// are the tenant ids the caller passes, which are validated and bounded by
// max_tenants when the receiver calls Limits after Admit.
var (
	rejectedSpans = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spangraph_limits_rejected_spans_total",
		Help: "Spans refused by a per-tenant limit, by reason (too_many_spans, rate_limited, too_many_attributes).",
	}, []string{"tenant", "reason"})
	spanNamesOverflowed = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spangraph_limits_span_names_overflowed_total",
		Help: "Spans whose name was replaced by " + OverflowSpanName + " because the tenant reached max_span_names.",
	}, []string{"tenant"})
	truncatedValues = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spangraph_limits_truncated_attribute_values_total",
		Help: "Attribute string values cut to max_attribute_value_length.",
	}, []string{"tenant"})
)
