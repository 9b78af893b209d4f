package config

import (
	"fmt"
	"sort"

	"github.com/spangraph/spangraph/pkg/processor"
	"github.com/spangraph/spangraph/pkg/servicegraph"
	"github.com/spangraph/spangraph/pkg/spanmetrics"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// Overrides holds each tenant's overrides under its id.
type Overrides struct {
	Tenants map[string]TenantOverrides `yaml:",inline"`
}

// TenantOverrides are one tenant's settings over the processors' own, as
// Tempo's per-tenant overrides of its metrics-generator: today the
// latency histograms' kind and shape, for both processors.
type TenantOverrides struct {
	processor.HistogramOverrides `yaml:",inline"`
}

// Processors returns the span-metrics and service-graph config of tenant:
// the processors', with the tenant's overrides applied.
func (c *Config) Processors(id string) (spanmetrics.Config, servicegraph.Config) {
	sm, sg := c.SpanMetrics, c.ServiceGraph
	if o, ok := c.Overrides.Tenants[id]; ok {
		sm.Histograms = o.Apply(sm.Histograms)
		sg.Histograms = o.Apply(sg.Histograms)
	}
	return sm, sg
}

// validateOverrides checks each tenant's overrides as they apply; errors
// name the key under overrides.<tenant>.
func (c *Config) validateOverrides() error {
	ids := make([]string, 0, len(c.Overrides.Tenants))
	for id := range c.Overrides.Tenants {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if err := tenant.Validate(id); err != nil {
			return fmt.Errorf("overrides: tenant %q: %w", id, err)
		}
		o := c.Overrides.Tenants[id]
		for _, h := range []processor.Histograms{c.SpanMetrics.Histograms, c.ServiceGraph.Histograms} {
			applied := o.Apply(h)
			if err := applied.Validate("overrides." + id); err != nil {
				return err
			}
		}
	}
	return nil
}
