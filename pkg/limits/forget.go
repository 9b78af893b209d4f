package limits

import "github.com/prometheus/client_golang/prometheus"

// Forget drops what the limits keep for tenant (its token bucket, its span
// names) and its self-metric series, when the engine closes the tenant
// for being idle: without this, every tenant ever served would keep its
// state and series for the life of the process. A tenant that comes back
// starts with a full bucket, as a new one does.
func (l *Limits) Forget(tenant string) {
	if l == nil {
		return
	}
	l.rate.mu.Lock()
	delete(l.rate.buckets, tenant)
	l.rate.mu.Unlock()
	l.names.mu.Lock()
	delete(l.names.tenants, tenant)
	l.names.mu.Unlock()
	match := prometheus.Labels{"tenant": tenant}
	rejectedSpans.DeletePartialMatch(match)
	spanNamesOverflowed.DeletePartialMatch(match)
	truncatedValues.DeletePartialMatch(match)
}
