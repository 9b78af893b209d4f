package servicegraph

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/spangraph/spangraph/pkg/otlp"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/registry/registrytest"
)

// TestLatencyModes: generate_native_histograms switches the client,
// server and messaging latency histograms between classic series, one
// native series each, and both; the request counters stay as they are,
// and the exemplars go on whichever histograms are written.
func TestLatencyModes(t *testing.T) {
	latency := []string{MetricRequestServerSeconds, MetricRequestClientSeconds, MetricRequestMessagingSeconds}
	for _, tc := range []struct {
		mode            string
		classic, native bool
		exemplars       int
	}{
		{"classic", true, false, 5},
		{"native", false, true, 5},
		{"both", true, true, 10},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.GenerateNativeHistograms = tc.mode
			cfg.EnableMessagingSystemLatencyHistogram = true
			reg := registry.New(registry.Config{})
			p, err := New(cfg, reg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			p.Push(makeBatch(t,
				res{service: "fe", spans: []sp{client(42), with(client(43), func(s *sp) { s.kind = otlp.SpanKindProducer })}},
				res{service: "be", spans: []sp{server(42), with(server(43), func(s *sp) {
					// Consumed 10 ms after the message was produced.
					s.kind, s.start, s.end = otlp.SpanKindConsumer, 110*time.Millisecond, 150*time.Millisecond
				})}}))
			app := &registrytest.Appender{}
			if _, err := reg.Collect(app, time.Now()); err != nil {
				t.Fatal(err)
			}
			names := map[string]bool{}
			for _, s := range app.Samples {
				names[s.Labels.Get(labels.MetricName)] = true
			}
			if !names[MetricRequestTotal] {
				t.Errorf("no %s: %v", MetricRequestTotal, names)
			}
			native := map[string]uint64{}
			for k, h := range app.Native() {
				for _, m := range latency {
					if strings.HasPrefix(k, `{__name__="`+m+`"`) {
						native[m] += h.Count
					}
				}
			}
			for _, m := range latency {
				if names[m+"_bucket"] != tc.classic || names[m+"_count"] != tc.classic {
					t.Errorf("%s: classic series %v, want %v", m, names[m+"_bucket"], tc.classic)
				}
				if want := map[bool]uint64{true: 2}[tc.native]; m != MetricRequestMessagingSeconds && native[m] != want {
					t.Errorf("%s: native count %d, want %d", m, native[m], want)
				}
			}
			if tc.native && native[MetricRequestMessagingSeconds] != 1 {
				t.Errorf("messaging latency: native count %d, want 1", native[MetricRequestMessagingSeconds])
			}
			if len(app.Exemplars) != tc.exemplars {
				t.Errorf("%d exemplars, want %d", len(app.Exemplars), tc.exemplars)
			}
		})
	}
}

func TestHistogramConfigErrorsNameTheKey(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NativeHistogramMinResetDuration = -time.Second
	_, err := New(cfg, registry.New(registry.Config{}), Options{})
	if want := "servicegraph.native_histogram_min_reset_duration: must not be negative"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("New: %v, want %q", err, want)
	}
}
