package config

import (
	"testing"

	"github.com/spangraph/spangraph/pkg/registry"
)

// TestProcessorsPerTenant: a tenant's overrides change its processors'
// histograms, and only its own; unset fields keep the processors'.
func TestProcessorsPerTenant(t *testing.T) {
	c := Default()
	if err := c.LoadYAML([]byte(`
spanmetrics:
  native_histogram_max_bucket_number: 50
overrides:
  team-a:
    generate_native_histograms: both
`)); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	sm, sg := c.Processors("team-a")
	if sm.Histograms.Options().Mode != registry.Both || sg.Histograms.Options().Mode != registry.Both {
		t.Errorf("team-a: modes %v, %v; want both", sm.Histograms.Options().Mode, sg.Histograms.Options().Mode)
	}
	if sm.NativeHistogramMaxBucketNumber != 50 {
		t.Errorf("team-a: max bucket number %d, want the processor's 50", sm.NativeHistogramMaxBucketNumber)
	}
	sm, sg = c.Processors("team-b")
	if sm.Histograms.Options().Mode != registry.Classic || sg.Histograms.Options().Mode != registry.Classic {
		t.Errorf("team-b: modes %v, %v; want classic", sm.Histograms.Options().Mode, sg.Histograms.Options().Mode)
	}
}
