package spanmetrics

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spangraph/spangraph/pkg/otlptest"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/registry/registrytest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestLatencyModesGolden: the series of each generate_native_histograms
// mode for the same spans, as the registry writes them (leading zeros,
// native histograms in Prometheus' notation), against
// testdata/latency_<mode>.golden. A span sampled at 0.25 counts four
// times in every mode; a 1/0.3 multiplier counts 3.33 times in the classic
// series and 4 (ceil) in the native one, as Tempo observes it.
func TestLatencyModesGolden(t *testing.T) {
	for _, mode := range []string{"classic", "native", "both"} {
		t.Run(mode, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.GenerateNativeHistograms = mode
			cfg.SpanMultiplierKey = "sampling.ratio"
			reg := registry.New(registry.DefaultConfig())
			p, err := New(cfg, reg)
			if err != nil {
				t.Fatal(err)
			}
			b := otlptest.Batch(t, otlptest.Request(otlptest.Service("checkout",
				span("GET /", server, time.Millisecond, unset),
				span("GET /", server, time.Millisecond, unset),
				span("GET /", server, 3*time.Millisecond, unset),
				span("GET /", server, 250*time.Millisecond, unset, otlptest.Float("sampling.ratio", 0.25)),
				span("GET /", server, 0, unset),
				span("charge", client, 40*time.Millisecond, failed, otlptest.Float("sampling.ratio", 0.3)),
			)))
			defer b.Release()
			p.Push(b)
			_, app := registrytest.Collect(reg, end)
			got := strings.Join(app.Lines(), "\n") + "\n"
			path := filepath.Join("testdata", "latency_"+mode+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("series differ from %s (go test ./pkg/spanmetrics -run TestLatencyModesGolden -update rewrites it):\ngot\n%s", path, got)
			}
		})
	}
}

func TestHistogramConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		set  func(*Config)
		want string
	}{
		{func(c *Config) { c.GenerateNativeHistograms = "exponential" }, `spanmetrics.generate_native_histograms: "exponential" is not a histogram mode`},
		{func(c *Config) { c.NativeHistogramBucketFactor = 0.5 }, "spanmetrics.native_histogram_bucket_factor: must be greater than 1"},
	} {
		cfg := DefaultConfig()
		tc.set(&cfg)
		if _, err := New(cfg, registry.New(registry.DefaultConfig())); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("New: %v, want %q", err, tc.want)
		}
	}
}
