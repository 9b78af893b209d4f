package processor

import (
	"strings"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/registry"
)

func TestHistogramsValidate(t *testing.T) {
	mod := func(f func(*Histograms)) Histograms {
		h := DefaultHistograms()
		f(&h)
		return h
	}
	for _, tc := range []struct {
		h    Histograms
		want string // "" for valid, else the start of the error
	}{
		{DefaultHistograms(), ""},
		{mod(func(h *Histograms) { h.GenerateNativeHistograms = "both" }), ""},
		{mod(func(h *Histograms) { h.GenerateNativeHistograms = "" }), ""},
		{mod(func(h *Histograms) { h.GenerateNativeHistograms = "sparse" }), `p.generate_native_histograms: "sparse" is not a histogram mode`},
		{mod(func(h *Histograms) { h.NativeHistogramBucketFactor = 1 }), "p.native_histogram_bucket_factor: must be greater than 1"},
		{mod(func(h *Histograms) { h.NativeHistogramMinResetDuration = -time.Minute }), "p.native_histogram_min_reset_duration: must not be negative"},
	} {
		err := tc.h.Validate("p")
		if (err == nil) != (tc.want == "") || (err != nil && !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("%+v: Validate() = %v, want %q", tc.h, err, tc.want)
		}
	}
}

func TestHistogramsOptions(t *testing.T) {
	h := Histograms{GenerateNativeHistograms: "native", NativeHistogramBucketFactor: 1.5, NativeHistogramMaxBucketNumber: 7, NativeHistogramMinResetDuration: time.Hour}
	want := registry.HistogramOptions{Mode: registry.Native, Native: registry.NativeOptions{BucketFactor: 1.5, MaxBucketNumber: 7, MinResetDuration: time.Hour}}
	if got := h.Options(); got != want {
		t.Errorf("Options() = %+v, want %+v", got, want)
	}
	def := DefaultHistograms()
	if got := def.Options(); got.Mode != registry.Classic || got.Native != registry.DefaultNativeOptions() {
		t.Errorf("defaults: %+v", got)
	}
}
