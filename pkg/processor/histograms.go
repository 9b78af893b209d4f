package processor

import (
	"fmt"
	"time"

	"github.com/spangraph/spangraph/pkg/registry"
)

// Histograms are Tempo's native-histogram settings, with Tempo's key
// names, inline in each processor's config: which latency histograms the
// processor writes and how native ones are shaped.
type Histograms struct {
	// GenerateNativeHistograms is classic, native or both.
	GenerateNativeHistograms string `yaml:"generate_native_histograms"`
	// NativeHistogramBucketFactor is the largest ratio between the bounds
	// of a native bucket (> 1); 1.1 gives schema 3.
	NativeHistogramBucketFactor float64 `yaml:"native_histogram_bucket_factor"`
	// NativeHistogramMaxBucketNumber caps the populated buckets of a
	// series; beyond it the resolution halves. 0 means no cap.
	NativeHistogramMaxBucketNumber uint32 `yaml:"native_histogram_max_bucket_number"`
	// NativeHistogramMinResetDuration is how long after its last reset a
	// series whose resolution was lowered starts again at full
	// resolution; 0 never.
	NativeHistogramMinResetDuration time.Duration `yaml:"native_histogram_min_reset_duration"`
}

// DefaultHistograms are Tempo's defaults: classic histograms, and native
// ones, when on, with a factor of 1.1, 100 buckets and a 15-minute reset.
func DefaultHistograms() Histograms {
	n := registry.DefaultNativeOptions()
	return Histograms{
		GenerateNativeHistograms:        registry.Classic.String(),
		NativeHistogramBucketFactor:     n.BucketFactor,
		NativeHistogramMaxBucketNumber:  n.MaxBucketNumber,
		NativeHistogramMinResetDuration: n.MinResetDuration,
	}
}

// Validate checks the settings; errors name the key under prefix. The
// native shape is checked whatever the mode, so that a typo shows before
// native histograms are switched on.
func (h *Histograms) Validate(prefix string) error {
	if _, err := registry.ParseHistogramMode(h.GenerateNativeHistograms); err != nil {
		return fmt.Errorf("%s.generate_native_histograms: %w", prefix, err)
	}
	o := h.Options().Native
	return o.Validate(prefix)
}

// Options are the registry's options for a latency histogram; call it on
// a validated config.
func (h *Histograms) Options() registry.HistogramOptions {
	mode, _ := registry.ParseHistogramMode(h.GenerateNativeHistograms)
	return registry.HistogramOptions{Mode: mode, Native: registry.NativeOptions{
		BucketFactor:     h.NativeHistogramBucketFactor,
		MaxBucketNumber:  h.NativeHistogramMaxBucketNumber,
		MinResetDuration: h.NativeHistogramMinResetDuration,
	}}
}

// HistogramOverrides are a tenant's own histogram settings over a
// processor's, as Tempo's per-tenant overrides; an unset field keeps the
// processor's.
type HistogramOverrides struct {
	GenerateNativeHistograms        *string        `yaml:"generate_native_histograms"`
	NativeHistogramBucketFactor     *float64       `yaml:"native_histogram_bucket_factor"`
	NativeHistogramMaxBucketNumber  *uint32        `yaml:"native_histogram_max_bucket_number"`
	NativeHistogramMinResetDuration *time.Duration `yaml:"native_histogram_min_reset_duration"`
}

// Apply returns h with the overrides set in o.
func (o HistogramOverrides) Apply(h Histograms) Histograms {
	if o.GenerateNativeHistograms != nil {
		h.GenerateNativeHistograms = *o.GenerateNativeHistograms
	}
	if o.NativeHistogramBucketFactor != nil {
		h.NativeHistogramBucketFactor = *o.NativeHistogramBucketFactor
	}
	if o.NativeHistogramMaxBucketNumber != nil {
		h.NativeHistogramMaxBucketNumber = *o.NativeHistogramMaxBucketNumber
	}
	if o.NativeHistogramMinResetDuration != nil {
		h.NativeHistogramMinResetDuration = *o.NativeHistogramMinResetDuration
	}
	return h
}
