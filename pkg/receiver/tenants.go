package receiver

import "github.com/prometheus/client_golang/prometheus"

// ForgetTenant deletes the tenant's self-metric series, when the engine
// closes the tenant for being idle, so that series do not pile up for
// every tenant ever served; they start again from zero if it comes back.
func ForgetTenant(tenant string) {
	match := prometheus.Labels{"tenant": tenant}
	spansReceived.DeletePartialMatch(match)
	spansRejected.DeletePartialMatch(match)
}
